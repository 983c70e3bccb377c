//! Absolute thresholds end to end: a run that keeps them exits 0, a breach exits 1 (the
//! documented code for a failed check) and is named in the terminal summary, results.json and
//! JUnit — for `load --threshold` and for a suite's `thresholds` under `run`.

mod common;

use std::time::Duration;

use common::{bin, run, short_load, stderr, stdout, temp_dir};

const LIMIT: Duration = Duration::from_secs(120);

fn load(json: &std::path::Path, thresholds: &[&str]) -> std::process::Output {
    let mut c = short_load("inproc", "300ms");
    for t in thresholds {
        c.args(["--threshold", t]);
    }
    c.arg("--json").arg(json);
    run(c, LIMIT)
}

#[test]
fn load_exits_1_on_a_breach_and_0_when_every_threshold_holds() {
    let dir = temp_dir("thresholds-load");
    let kept = dir.join("kept.json");
    let out = load(&kept, &["p99 < 10s", "throughput > 1/s", "errors < 1%"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("threshold p99 < 10s: "),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("BREACHED"));

    let breached = dir.join("breached.json");
    let out = load(&breached, &["p99 < 10s", "p50 < 1ns"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("threshold p50 < 1ns: ") && stdout(&out).contains("BREACHED"),
        "{}",
        stdout(&out)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&breached).expect("saved")).expect("JSON");
    let t = &v["runs"][0]["thresholds"];
    assert_eq!(t[0]["passed"], true, "{t}");
    assert_eq!(t[1]["threshold"], "p50 < 1ns");
    assert_eq!(t[1]["passed"], false, "{t}");

    // A threshold that does not parse is bad input: exit 2, naming it.
    let out = load(&dir.join("bad.json"), &["p42 < 1ms"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown measure \"p42\""),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const SUITE: &str = r#"
name = "thresholds"
thresholds = ["p99 < 10s"]

[conformance]
enabled = false

[floor]
enabled = false

[defaults]
warmup = "0s"
requests = 200

[[load]]
name = "kept"
concurrency = 1

[[load]]
name = "breached"
concurrency = 1
thresholds = ["p50 < 1ns"]
"#;

#[test]
fn a_suites_thresholds_fail_run_and_show_in_junit() {
    let dir = temp_dir("thresholds-run");
    let suite = dir.join("suite.toml");
    std::fs::write(&suite, SUITE).expect("test setup");
    let out_dir = dir.join("out");
    let mut c = bin();
    c.args(["run", "--transport", "inproc", "--plain", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out_dir);
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("threshold breached: inproc/breached: p50 < 1ns"),
        "{}",
        stderr(&out)
    );
    let junit = std::fs::read_to_string(out_dir.join("junit.xml")).expect("junit written");
    assert!(
        junit.contains("<testcase classname=\"load.inproc\" name=\"breached\""),
        "{junit}"
    );
    assert!(
        junit.contains("type=\"threshold\"") && junit.contains("p50 &lt; 1ns"),
        "{junit}"
    );
    assert!(
        junit.contains("<testsuite name=\"load\" tests=\"2\" failures=\"1\""),
        "{junit}"
    );
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("results.json")).expect("saved"),
    )
    .expect("JSON");
    // The global threshold applies to both points, the point's own to its point only.
    let kept = &v["runs"][0]["thresholds"];
    assert_eq!(kept.as_array().map(Vec::len), Some(1), "{kept}");
    let breached = &v["runs"][1]["thresholds"];
    assert_eq!(breached.as_array().map(Vec::len), Some(2), "{breached}");
    let _ = std::fs::remove_dir_all(&dir);
}
