//! `wirebench capacity` against a server whose capacity is known: every call waits 2 ms at the
//! server and at most 8 calls are in flight, so it carries 8 / (2 ms + the timer's rounding)
//! calls a second and no more. A closed loop of 8 measures that rate first (the timer's
//! rounding is the machine's); the search must then find it within its tolerance, and
//! `--min-rate` above it must fail the command. A ramp's stages are judged one by one against
//! the same kind of server.

mod common;

use std::time::Duration;

use common::{bin, read_json, run, stderr, stdout, temp_dir};

const DELAY: &str = "2ms";
const IN_FLIGHT: &str = "8";

/// `wirebench load --transport inproc ARGS --quiet --json DIR/NAME`, which must succeed: its
/// results.
fn load_json(dir: &std::path::Path, name: &str, args: &[&str]) -> serde_json::Value {
    let path = dir.join(name);
    let mut c = bin();
    c.args(["load", "--transport", "inproc"])
        .args(args)
        .args(["--quiet", "--json"])
        .arg(&path);
    let out = run(c, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    read_json(&path)
}

/// The closed-loop throughput of 8 callers on the delaying server: its capacity.
fn calibrate(dir: &std::path::Path) -> f64 {
    let args = ["--concurrency", IN_FLIGHT, "--server-delay", DELAY];
    load_json(
        dir,
        "closed.json",
        &[&args[..], &["--duration", "2s", "--warmup", "300ms"]].concat(),
    )["runs"][0]["summary"]["throughput_per_s"]
        .as_f64()
        .expect("throughput")
}

#[test]
fn the_search_finds_a_known_capacity_and_min_rate_gates_on_it() {
    let dir = temp_dir("capacity-known");
    let capacity = calibrate(&dir);
    assert!(capacity > 500.0, "calibration: {capacity}/s");
    let out_dir = dir.join("search");
    let mut c = bin();
    c.args(["capacity", "--transport", "inproc", "--slo", "p99 < 20ms"])
        .args(["--server-delay", DELAY, "--max-in-flight", IN_FLIGHT])
        .args(["--connections", "1", "--schedule", "constant"])
        .args(["--start-rate", "500", "--step", "1s", "--warmup", "300ms"])
        .args(["--min-rate", "1M", "--out"])
        .arg(&out_dir);
    let out = run(c, Duration::from_secs(300));
    // The knee is far below 1M/s: the gate fails with exit 1 and names the transport.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("capacity below --min-rate: inproc capacity: knee")
            && stderr(&out).contains("below the minimum 1M/s"),
        "{}",
        stderr(&out)
    );
    let v = read_json(&out_dir.join("results.json"));
    let cap = &v["capacity"][0];
    assert_eq!(cap["outcome"], "found", "{cap}");
    let knee = cap["knee_per_s"].as_f64().expect("knee");
    let missed = cap["missed_per_s"].as_f64().expect("missed");
    eprintln!("calibrated capacity {capacity:.0}/s; knee {knee}/s, missed at {missed}/s");
    // Bracketed within the tolerance…
    assert!(
        missed > knee && (missed - knee) / knee <= 0.05 + 1e-9,
        "{cap}"
    );
    // …around the calibrated capacity: below it the server keeps up (a constant schedule
    // and a fixed service time queue little), above it the backlog grows by the excess
    // every second, and 3 % over for a second is already 30 ms of waiting.
    assert!(
        knee >= 0.8 * capacity && knee <= 1.05 * capacity,
        "knee {knee}/s against a capacity of {capacity}/s\n{}",
        stdout(&out)
    );
    // Every step is a run of its own, named after its rate, with its place in the series.
    let runs = v["runs"].as_array().expect("runs");
    let steps: u64 = cap["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["runs"].as_u64().unwrap())
        .sum();
    assert_eq!(runs.len() as u64, steps);
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r["step"]["series"], "capacity");
        assert_eq!(r["step"]["index"], i as u64);
        assert!(
            r["point"].as_str().unwrap().starts_with("capacity@"),
            "{}",
            r["point"]
        );
    }
    // The report draws the curve.
    let html = std::fs::read_to_string(out_dir.join("report.html")).expect("report");
    assert!(html.contains("Latency against throughput"), "no chart");
}

#[test]
fn bad_searches_are_refused_before_anything_runs() {
    for (args, says) in [
        (vec!["--slo", "throughput > 5k/s"], "the SLO limits latency"),
        (vec!["--slo", "p99 < fast"], "p99 < fast"),
        (vec!["--tolerance", "0.1%"], "between 1% and 50%"),
        (
            vec!["--start-rate", "5", "--min-probe", "10"],
            "--min-probe (10/s) <= --start-rate (5/s)",
        ),
    ] {
        let mut c = bin();
        c.args(["capacity", "--transport", "inproc"]).args(&args);
        let out = run(c, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

/// A suite's `[[capacity]]` entry runs under `wirebench run`: its steps and knee land in
/// results.json, the report draws them, and its `min_rate` gates the command.
#[test]
fn a_suite_runs_its_capacity_entries_and_gates_on_min_rate() {
    let dir = temp_dir("capacity-suite");
    let suite = |min_rate: &str| {
        format!(
            r#"
name = "cap"
transports = ["inproc"]
[conformance]
enabled = false
[floor]
enabled = false
[[capacity]]
name = "knee"
slo = ["p99 < 20ms"]
start_rate = "500"
max_rate = "4k"
tolerance = "10%"
every = "500ms"
warmup = "200ms"
schedule = "constant"
max_in_flight = 8
min_rate = "{min_rate}"
load = {{ server_delay = "2ms", connections = 1 }}
"#
        )
    };
    for (min_rate, code) in [("100", 0), ("1M", 1)] {
        let file = dir.join(format!("cap-{code}.toml"));
        std::fs::write(&file, suite(min_rate)).expect("test setup");
        let out_dir = dir.join(format!("out-{code}"));
        let mut c = bin();
        c.args(["run", "--suite"])
            .arg(&file)
            .arg("--out")
            .arg(&out_dir);
        let out = run(c, Duration::from_secs(300));
        assert_eq!(
            out.status.code(),
            Some(code),
            "min_rate {min_rate}: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        let v = read_json(&out_dir.join("results.json"));
        let cap = &v["capacity"][0];
        assert_eq!(
            (cap["series"].as_str(), cap["transport"].as_str()),
            (Some("knee"), Some("inproc"))
        );
        assert_eq!(cap["outcome"], "found", "{cap}");
        assert!(
            v["runs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["step"]["series"] == "knee")
        );
        if code == 1 {
            assert!(
                stderr(&out).contains("below the minimum 1M/s"),
                "{}",
                stderr(&out)
            );
        }
        let html = std::fs::read_to_string(out_dir.join("report.html")).expect("report");
        assert!(html.contains("Latency against throughput") && html.contains("knee"));
    }
}

/// A ramp of stages is one run whose stages are judged on their own: 400/s is within what a
/// server of 4 calls in flight and 2 ms a call carries (about 1.6k/s), 8k/s is far beyond it.
#[test]
fn each_stage_of_a_ramp_has_its_own_verdict() {
    let dir = temp_dir("ramp-stages");
    let v = load_json(
        &dir,
        "ramp.json",
        &[
            "--stages",
            "400:1s,8k:1s",
            "--ramp",
            "step",
            "--schedule",
            "constant",
            "--server-delay",
            "2ms",
            "--max-in-flight",
            "4",
            "--warmup",
            "200ms",
        ],
    );
    let stages = v["runs"][0]["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 2, "{stages:?}");
    let (a, b) = (&stages[0], &stages[1]);
    assert_eq!(
        (a["rate_from"].as_f64(), a["rate_to"].as_f64()),
        (Some(400.0), Some(400.0))
    );
    // The schedule made due what the stage's rate says, and all of the slow stage was sent.
    assert!((a["due"].as_u64().unwrap() as i64 - 400).abs() <= 2, "{a}");
    assert!((b["due"].as_u64().unwrap() as i64 - 8000).abs() <= 2, "{b}");
    assert_eq!(a["verdict"], "valid", "{a}");
    assert_eq!(a["unsent"], 0, "{a}");
    assert_eq!(b["verdict"], "UNSUSTAINED", "{b}");
    assert!(b["achieved_per_s"].as_f64().unwrap() < 4000.0, "{b}");
    // The run as a whole did not sustain its offered rate either.
    assert_eq!(v["runs"][0]["validity"]["valid"], false);
}
