//! An open loop the system under test cannot sustain, end to end through the binary: an
//! in-process server that takes about a millisecond or two per call (`--server-delay 1ms`,
//! one caller) against 5000 requests/s offered. Every request due must be accounted for —
//! sent, or counted as never sent — and the run must say the rate was not sustained instead
//! of calling itself valid.

mod common;

use std::time::Duration;

use common::{bin, run, stdout, temp_dir};

#[test]
fn an_unsustained_open_loop_says_so_and_counts_what_it_never_sent() {
    let dir = temp_dir("unsustained");
    let json = dir.join("o.json");
    let mut c = bin();
    c.args([
        "load",
        "--transport",
        "inproc",
        "--rate",
        "5000",
        "--schedule",
        "constant",
        "--max-in-flight",
        "1",
        "--server-delay",
        "1ms",
        "--warmup",
        "0s",
        "--duration",
        "2s",
        "--plain",
        "--json",
    ])
    .arg(&json);
    let out = run(c, Duration::from_secs(60));
    let stdout = stdout(&out);
    assert!(out.status.success(), "{out:?}");

    // The terminal summary names the rate it could not sustain and the requests never sent.
    assert!(
        stdout.contains("UNSUSTAINED: offered 5000/s, achieved "),
        "{stdout}"
    );
    assert!(stdout.contains("NEVER SENT"), "{stdout}");
    assert!(!stdout.contains("\n  valid\n"), "{stdout}");

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("results written"))
            .expect("results are JSON");
    let run = &v["runs"][0];
    assert_eq!(run["validity"]["valid"], false);
    let why = run["validity"]["unsustained"]
        .as_str()
        .expect("unsustained");
    assert!(why.contains("could not keep up"), "{why}");
    let o = &run["summary"]["offered"];
    let (due, sent, unsent) = (
        o["due"].as_u64().expect("due"),
        o["sent"].as_u64().expect("sent"),
        o["unsent"].as_u64().expect("unsent"),
    );
    // A constant schedule at 5000/s makes 10,000 requests due in 2 s.
    assert_eq!(due, 10_000, "{o}");
    assert_eq!(sent + unsent, due, "{o}");
    // Each call takes at least the 1 ms asked for: at most ~2000 could be sent.
    assert!(unsent >= 7_000, "{o}");
    let calls = run["summary"]["calls"].as_u64().expect("calls");
    let incomplete = run["summary"]["incomplete"].as_u64().expect("incomplete");
    assert_eq!(calls + incomplete, sent, "{run}");
    let achieved = o["achieved_per_s"].as_f64().expect("achieved");
    assert!(achieved < 0.95 * 5000.0, "{o}");
    // The unsent requests' latency is bounded below by their wait: up to the whole run.
    let worst_wait = o["unsent_wait"]["max_ns"].as_u64().expect("waits");
    assert!(worst_wait >= 1_000_000_000, "{o}");
    assert!(
        o["latency_with_unsent"]["count"].as_u64() == Some(calls + unsent),
        "{o}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
