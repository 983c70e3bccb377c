//! `wirebench history` on a fixture of twelve runs with a planted 30 % regression at run 7
//! and its fix at run 10: the site marks both where they happened and nowhere else, a
//! thirteenth run is appended without the twelve files, unreadable inputs are named and
//! skipped (exit 2), and the site renders in headless Chromium with every chart drawn.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wirebench_reports::histogram::{encode, latency_histogram, summarize};
use wirebench_reports::history::History;
use wirebench_reports::results::{
    Environment, IntervalRecord, ProcessUsage, Results, RunParams, RunRecord, RunSummary,
    SuiteRecord, Validity,
};

use common::{bin, run, stderr, stdout, temp_dir};

const LIMIT: Duration = Duration::from_secs(120);

/// Run `n` (1-based) of the fixture: five one-second intervals of 2000 calls around `p50_us`,
/// with the between-second noise a shared machine has.
fn results(n: u64, p50_us: f64) -> Results {
    let mut rng = SmallRng::seed_from_u64(n);
    let mut all = latency_histogram();
    let mut intervals = Vec::new();
    for i in 0..5 {
        let mut h = latency_histogram();
        let level = p50_us * 1e3 * (1.0 + 0.1 * (rng.random::<f64>() - 0.5));
        for _ in 0..2000 {
            h.saturating_record((level * (1.0 + 0.2 * rng.random::<f64>())) as u64);
        }
        all.add(&h).expect("same bounds");
        intervals.push(IntervalRecord {
            start_s: f64::from(i),
            calls: h.len(),
            errors: 0,
            latency: summarize(&h),
            histogram: encode(&h).expect("encodes"),
        });
    }
    let mut r = Results::new(
        "wirebench test".into(),
        format!("2026-12-01T10:{n:02}:00Z"),
        Environment {
            git_sha: Some(format!("{n:07x}{}", "0".repeat(33))),
            git_dirty: Some(false),
            cpu_model: "Fixture CPU".into(),
            cores: 2,
            kernel: "6.1.0".into(),
            build_profile: "release".into(),
            ..Environment::default()
        },
        SuiteRecord {
            name: "ci".into(),
            ..SuiteRecord::default()
        },
    );
    r.transports = vec!["tcp".into()];
    r.complete = true;
    r.runs.push(RunRecord {
        transport: "tcp".into(),
        point: "unary-1".into(),
        params: RunParams {
            method: "Unary".into(),
            mode: "closed".into(),
            concurrency: Some(1),
            ..RunParams::default()
        },
        summary: RunSummary {
            elapsed_s: 5.0,
            calls: all.len(),
            ok: all.len(),
            throughput_per_s: all.len() as f64 / 5.0,
            latency: summarize(&all),
            client: ProcessUsage {
                cpu_us_per_call: 20.0,
                ..ProcessUsage::default()
            },
            ..RunSummary::default()
        },
        validity: Validity {
            valid: true,
            ..Validity::default()
        },
        intervals,
        ..RunRecord::default()
    });
    r
}

/// The planted story: 50 µs, 30 % worse from run 7, fixed at run 10.
fn p50_of(n: u64) -> f64 {
    if (7..10).contains(&n) { 65.0 } else { 50.0 }
}

fn fixture(dir: &Path, runs: std::ops::RangeInclusive<u64>) -> Vec<PathBuf> {
    runs.map(|n| {
        let path = dir.join(format!("run-{n:02}.json"));
        results(n, p50_of(n)).save(&path).expect("fixture written");
        path
    })
    .collect()
}

fn history(args: &[&Path], out: &Path, append: bool) -> std::process::Output {
    let mut c = bin();
    c.arg("history").args(args).arg("--out").arg(out);
    if append {
        c.arg("--append");
    }
    run(c, LIMIT)
}

/// The runs (1-based) with a change, and whether each regressed.
fn marked(site: &Path) -> Vec<(usize, bool)> {
    let h = History::load(&site.join("history.json")).expect("history written");
    h.runs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.changes.is_empty())
        .map(|(i, r)| {
            let regressed = r.changes.iter().all(|c| c.regressed);
            let improved = r.changes.iter().all(|c| !c.regressed);
            assert!(
                regressed || improved,
                "run {} goes both ways: {:?}",
                i + 1,
                r.changes
            );
            assert!(
                r.changes.iter().any(|c| c.metric.name() == "p50"),
                "run {}: {:?}",
                i + 1,
                r.changes
            );
            (i + 1, regressed)
        })
        .collect()
}

#[test]
fn a_planted_regression_and_its_fix_are_marked_where_they_happened_and_nowhere_else() {
    let dir = temp_dir("history-twelve");
    let inputs = fixture(&dir, 1..=12);
    let site = dir.join("site");
    // Named out of order: runs go in by when they ran.
    let mut args: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    args.reverse();
    let out = history(&args, &site, false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(marked(&site), [(7, true), (10, false)]);

    let index = std::fs::read_to_string(site.join("index.html")).expect("index written");
    assert_eq!(index.matches("regressed at").count(), 1, "{index}");
    assert_eq!(index.matches("improved at").count(), 1, "{index}");
    // Every run's report is linked and exists.
    let h = History::load(&site.join("history.json")).expect("history");
    for r in &h.runs {
        let report = format!("runs/{}/report.html", r.id);
        assert!(index.contains(&report), "{report} not linked");
        assert!(site.join(&report).is_file(), "{report} missing");
    }
    let page = std::fs::read_to_string(site.join("p/tcp--unary-1.html")).expect("point page");
    assert!(page.contains("p50 +"), "the regression's row says so");
    assert!(page.contains("p50 -"), "the fix's row says so");

    // Without --append, a site is never rebuilt over an existing history.
    let again = history(&args, &site, false);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("--append"));

    // Run 13, 30 % worse again, appended with none of the twelve files at hand: it is compared
    // with run 12 from the site's own data.
    let later = temp_dir("history-thirteenth");
    let thirteen = later.join("run-13.json");
    results(13, 65.0).save(&thirteen).expect("written");
    for f in &inputs {
        std::fs::remove_file(f).expect("fixture removed");
    }
    let out = history(&[&thirteen], &site, true);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("regressed"), "{}", stdout(&out));
    assert_eq!(marked(&site), [(7, true), (10, false), (13, true)]);
    // The same file again is recognised, not added twice.
    let out = history(&[&thirteen], &site, true);
    assert!(out.status.success());
    assert!(stderr(&out).contains("already in the site"));
    assert_eq!(
        History::load(&site.join("history.json"))
            .expect("history")
            .runs
            .len(),
        13
    );
}

#[test]
fn unreadable_inputs_are_named_and_skipped_and_the_exit_code_says_so() {
    let dir = temp_dir("history-bad");
    fixture(&dir, 1..=3);
    std::fs::write(dir.join("garbage.json"), "{not json").expect("written");
    std::fs::write(dir.join("foreign.json"), "{\"schema\": \"k6-summary\"}").expect("written");
    let site = dir.join("site");
    let out = history(&[&dir], &site, false);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("garbage.json") && err.contains("foreign.json"),
        "{err}"
    );
    assert!(err.contains("not a wirebench results file"), "{err}");
    assert_eq!(
        History::load(&site.join("history.json"))
            .expect("built from the rest")
            .runs
            .len(),
        3
    );
}

/// The x positions of the labels in an SVG chart that read as one of `labels`.
fn label_positions(svg: &str, labels: &[String]) -> Vec<f64> {
    let mut xs = Vec::new();
    for label in labels {
        // plotters writes a text's content on its own line.
        let needle = format!(">\n{label}\n</text>");
        let mut from = 0;
        while let Some(at) = svg[from..].find(&needle) {
            let end = from + at;
            let start = svg[..end].rfind("<text").expect("a text element");
            let tag = &svg[start..end];
            let x = tag
                .split("x=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .and_then(|s| s.parse::<f64>().ok())
                .expect("a text x");
            xs.push(x);
            from = end + needle.len();
        }
    }
    xs.sort_by(f64::total_cmp);
    xs
}

#[test]
fn the_site_renders_with_every_chart_drawn_and_no_label_on_another() {
    let dir = temp_dir("history-render");
    let inputs = fixture(&dir, 1..=12);
    let site = dir.join("site");
    let args: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    assert!(history(&args, &site, false).status.success());
    let h = History::load(&site.join("history.json")).expect("history");
    let labels: Vec<String> = h
        .runs
        .iter()
        .map(|r| r.git_sha.as_deref().expect("a commit")[..7].to_owned())
        .collect();
    for page in ["index.html", "p/tcp--unary-1.html"] {
        let html = std::fs::read_to_string(site.join(page)).expect("page written");
        let charts: Vec<&str> = html.split("<svg").skip(1).collect();
        assert!(!charts.is_empty(), "{page} has no chart");
        for svg in charts {
            assert!(!svg.contains(": no data"), "{page}: an empty chart");
            assert!(
                svg.matches("<circle").count() >= 12,
                "{page}: a chart without its points"
            );
            let xs = label_positions(svg, &labels);
            assert!(!xs.is_empty(), "{page}: no commit labels");
            for pair in xs.windows(2) {
                assert!(pair[1] - pair[0] >= 60.0, "{page}: labels {xs:?} overlap");
            }
        }
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{page}"
        );
    }
    // No label on another, by the same estimate the report's test uses.
    for page in ["index.html", "p/tcp--unary-1.html"] {
        let html = std::fs::read_to_string(site.join(page)).expect("page written");
        for svg in html.split("<svg").skip(1) {
            let clash = common::overlapping_labels(svg);
            assert!(clash.is_empty(), "{page}: {clash:?}");
        }
    }
    // And the picture itself, as a person would see it.
    for page in ["index.html", "p/tcp--unary-1.html"] {
        let png = dir.join(format!("{}.png", page.replace('/', "_")));
        let Some(bytes) = common::screenshot(&site.join(page), &png) else {
            return;
        };
        // A blank page compresses to a few KB; charts, tables and text do not.
        assert!(
            bytes.len() > 40_000,
            "{page}: {} bytes, nearly blank",
            bytes.len()
        );
    }
}
