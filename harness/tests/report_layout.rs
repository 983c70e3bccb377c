//! Every chart of a report is drawn with its labels apart: a report rendered from real runs,
//! planted latency ranges and recorded runs whose log axes used to stack labels into each
//! other (800 µs, 900 µs and 1 ms) has no overlapping label in any chart, and renders in
//! headless Chromium.

mod common;

use std::time::Duration;

use wirebench_reports::histogram::{encode, latency_histogram, summarize};
use wirebench_reports::results::{IntervalRecord, Results, RunHistograms};

use common::{bin, run, short_load, stderr, temp_dir};

/// Gives a run one interval per `(lo, hi)` range (µs), its latencies spread evenly over it,
/// and the whole histogram of them all.
fn plant(r: &mut wirebench_reports::results::RunRecord, ranges: &[(u64, u64)]) {
    let mut all = latency_histogram();
    r.intervals = (0u32..)
        .zip(ranges)
        .map(|(i, &(lo_us, hi_us))| {
            let mut h = latency_histogram();
            for k in 0..1000 {
                h.saturating_record((lo_us + (hi_us - lo_us) * k / 1000) * 1000);
            }
            all.add(&h).expect("same bounds");
            IntervalRecord {
                start_s: f64::from(i),
                calls: h.len(),
                errors: 0,
                latency: summarize(&h),
                histogram: encode(&h).expect("encodes"),
            }
        })
        .collect();
    r.summary.elapsed_s = ranges.len() as f64;
    r.summary.latency = summarize(&all);
    r.histograms = RunHistograms {
        latency: encode(&all).expect("encodes"),
        ..RunHistograms::default()
    };
}

#[test]
fn no_chart_has_a_label_on_another() {
    let dir = temp_dir("report-layout");
    let json = dir.join("results.json");
    let mut c = short_load("tcp,inproc", "1500ms");
    c.arg("--json").arg(&json);
    let out = run(c, Duration::from_secs(120));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut results = Results::load(&json).expect("written");
    // Planted runs beside the real ones: a narrow range, and one spanning two decades (where
    // a log axis used to label 800 µs, 900 µs and 1 ms on top of each other).
    for (point, ranges) in [
        ("narrow", vec![(800, 1000), (820, 990), (810, 1000)]),
        (
            "wide",
            vec![(250, 400), (3000, 9000), (30_000, 55_000), (300, 900)],
        ),
    ] {
        let mut planted = results.runs[0].clone();
        planted.point = point.into();
        plant(&mut planted, &ranges);
        results.runs.push(planted);
    }
    // Recorded runs whose log axes used to stack their labels (a quick run's server stream,
    // over time; grpc under a 2 mbit/s bandwidth fault).
    let recorded: Vec<wirebench_reports::results::RunRecord> =
        serde_json::from_str(include_str!("data/runs-server-stream-1k.json"))
            .expect("the fixture parses");
    results.runs.extend(recorded);
    results.fault_runs.push(
        serde_json::from_str(include_str!("data/fault-run-bandwidth-2mbit-grpc.json"))
            .expect("the fixture parses"),
    );
    results.save(&json).expect("saved");

    let mut c = bin();
    c.arg("report").arg(&json);
    let out = run(c, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    let page = dir.join("report.html");
    let html = std::fs::read_to_string(&page).expect("report written");
    let charts: Vec<&str> = html.split("<svg").skip(1).collect();
    assert!(charts.len() >= 4, "{} charts", charts.len());
    for (i, svg) in charts.iter().enumerate() {
        let clash = common::overlapping_labels(svg);
        assert!(clash.is_empty(), "chart {i}: {clash:?}");
    }
    if let Some(png) = common::screenshot(&page, &dir.join("report.png")) {
        assert!(png.len() > 40_000, "{} bytes, nearly blank", png.len());
    }
}

#[test]
fn the_checker_sees_an_overlap_when_there_is_one() {
    // Two labels 5 px apart vertically at 15 px: what the narrow log axis used to draw.
    let svg = "<text x=\"74\" y=\"160\" dy=\"0.5ex\" text-anchor=\"end\" font-size=\"15\">\
               \n900µs\n</text><text x=\"74\" y=\"155\" dy=\"0.5ex\" text-anchor=\"end\" \
               font-size=\"15\">\n1ms\n</text>";
    assert_eq!(common::overlapping_labels(svg).len(), 1);
    // Far apart, and the same label drawn twice at one place, are fine.
    let svg = "<text x=\"74\" y=\"160\" font-size=\"15\">a</text>\
               <text x=\"74\" y=\"100\" font-size=\"15\">b</text>\
               <text x=\"74\" y=\"100\" font-size=\"15\">b</text>";
    assert!(common::overlapping_labels(svg).is_empty());
}
