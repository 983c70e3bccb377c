//! Several transports without a suite: `load --transport a,b` runs the same point on each
//! and prints one table, and `report a.json b.json` renders several results files as one.

mod common;

use std::time::Duration;

use common::{bin, run, short_load, stderr, stdout, temp_dir};

const LIMIT: Duration = Duration::from_secs(120);

fn load(transports: &str, json: &std::path::Path) -> std::process::Output {
    let mut c = short_load(transports, "300ms");
    c.arg("--json").arg(json);
    run(c, LIMIT)
}

fn runs(json: &std::path::Path) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json).expect("results written")).expect("JSON");
    v["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["transport"].as_str().expect("transport").to_owned(),
                r["point"].as_str().expect("point").to_owned(),
            )
        })
        .collect()
}

#[test]
fn one_point_on_several_transports_is_one_table_and_one_file() {
    let dir = temp_dir("side-by-side");
    let json = dir.join("both.json");
    let out = load("TCP, inproc", &json);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let header = text
        .lines()
        .find(|l| l.starts_with("transport"))
        .unwrap_or_else(|| panic!("no table in\n{text}"));
    assert!(
        header.contains("p50/best") && header.contains("verdict"),
        "{text}"
    );
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tcp ") || l.starts_with("inproc "))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows.iter().any(|r| r.contains("1.00x")), "{text}");
    assert_eq!(
        runs(&json),
        [
            ("tcp".to_owned(), "load".to_owned()),
            ("inproc".to_owned(), "load".to_owned())
        ]
    );
    // A missing figure carries the transport's declared reason; a measured one none.
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("written")).expect("JSON");
    let tcp = &v["runs"][0]["summary"];
    assert!(tcp["bytes"]["sent_per_call"].as_f64().is_some(), "{tcp}");
    assert!(tcp.get("bytes_not_measured").is_none(), "{tcp}");
    let inproc = &v["runs"][1]["summary"];
    assert!(inproc["bytes"].is_null(), "{inproc}");
    assert!(
        inproc["bytes_not_measured"]
            .as_str()
            .is_some_and(|w| w.contains("no wire")),
        "{inproc}"
    );
}

#[test]
fn a_list_that_cannot_run_is_refused_before_anything_runs() {
    let dir = temp_dir("side-by-side-bad");
    for (args, needle) in [
        (vec!["--transport", "tcp,tcp"], "named twice"),
        (vec!["--transport", "tcp,qiuc"], "did you mean \"quic\""),
        (
            vec!["--transport", "tcp,inproc", "--option", "x=1"],
            "take one transport",
        ),
        (
            vec!["--transport", "tcp,grpc", "--target", "127.0.0.1:9"],
            "take one transport",
        ),
        (vec!["--transport", ","], "no transport named"),
    ] {
        let mut c = bin();
        c.arg("load")
            .args(&args)
            .arg("--json")
            .arg(dir.join("x.json"));
        let out = run(c, LIMIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(!dir.join("x.json").exists(), "{args:?} ran something");
    }
}

#[test]
fn several_results_files_make_one_report() {
    let dir = temp_dir("report-many");
    let (a, b) = (dir.join("before.json"), dir.join("after.json"));
    assert!(load("tcp", &a).status.success());
    assert!(load("tcp,inproc", &b).status.success());
    let out_dir = dir.join("merged");
    let mut c = bin();
    c.arg("report").arg(&a).arg(&b).arg("--out").arg(&out_dir);
    let out = run(c, LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    // The same transport and point from both files stays two runs, told apart by file, and
    // each file's point keeps its runs together.
    assert_eq!(
        runs(&out_dir.join("results.json")),
        [
            ("tcp".to_owned(), "load (before)".to_owned()),
            ("tcp".to_owned(), "load (after)".to_owned()),
            ("inproc".to_owned(), "load (after)".to_owned())
        ]
    );
    let html = std::fs::read_to_string(out_dir.join("report.html")).expect("report written");
    assert!(html.contains("load (before)") && html.contains("load (after)"));
    assert!(html.contains("2 results files merged"));
    // The inputs' own reports are untouched: none was written beside them.
    assert!(!dir.join("report.html").exists());

    // A corrupt second file is named, and nothing is written.
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        "{\"schema\": \"wirebench-results\", \"version\": 1, \"runs\": [",
    )
    .unwrap();
    let mut c = bin();
    c.arg("report")
        .arg(&a)
        .arg(&bad)
        .arg("--out")
        .arg(dir.join("never"));
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.json"), "{}", stderr(&out));
    assert!(!dir.join("never").exists());
}
