//! `wirebench proxy` as a user meets it: its help lists every fault with its parameters, and
//! its counters come in one format — a JSON object per line on stdout — whether printed every
//! `--stats-every`, asked for on stdin, or at exit on SIGINT or SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::{bin, run, stdout};

#[test]
fn help_lists_every_fault_with_its_parameters() {
    let mut c = bin();
    c.args(["proxy", "--help"]);
    let help = stdout(&run(c, Duration::from_secs(30)));
    for fault in [
        "latency:DELAY[,jitter=J][,dist=uniform|normal|pareto]",
        "bandwidth:RATE",
        "blackhole",
        "slicer[:SIZE][,delay=D]",
        "limit:BYTES",
        "reset[:AFTER]",
        "slow-close:DELAY",
        "refuse",
        "loss:RATE",
        "loss:ge,p=P,r=R[,good=G][,bad=B]",
        "duplicate",
        "reorder[:DELAY]",
        "corrupt",
        "dir=up|down|both",
        "p=PROBABILITY",
    ] {
        assert!(help.contains(fault), "{fault} missing from:\n{help}");
    }
    // What surprised a user: a latency applies in each direction it covers.
    assert!(
        help.contains("adds\n                     40 ms to a request/response round trip"),
        "{help}"
    );
    assert!(!help.contains("see above"), "{help}");
}

#[test]
fn counters_are_json_lines_on_interval_on_request_and_at_exit() {
    for (signal, reason) in [("-TERM", "SIGTERM"), ("-INT", "SIGINT")] {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("test setup");
        let mut c = bin();
        c.args(["proxy", "--stats-every", "100ms", "--upstream"])
            .arg(upstream.local_addr().expect("test setup").to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("binary starts");
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let next = || {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a line within 10 s")
        };
        let ready: serde_json::Value = serde_json::from_str(&next()).expect("a JSON ready line");
        assert_eq!(ready["proxy"], "tcp");
        let interval: serde_json::Value = serde_json::from_str(&next()).expect("JSON");
        assert_eq!(interval["reason"], "interval", "{interval}");
        assert_eq!(interval["counters"]["connections"], 0, "{interval}");
        let mut stdin = child.stdin.take().expect("piped");
        writeln!(stdin, "stats").expect("stdin open");
        let asked = loop {
            let v: serde_json::Value = serde_json::from_str(&next()).expect("JSON");
            if v["reason"] != "interval" {
                break v;
            }
        };
        assert_eq!(asked["reason"], "stats", "{asked}");
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
        let last = loop {
            let v: serde_json::Value = serde_json::from_str(&next()).expect("JSON");
            if v["reason"] != "interval" {
                break v;
            }
        };
        assert_eq!(last["reason"], reason, "{last}");
        assert!(last["counters"].is_object(), "{last}");
        assert!(last["elapsed_s"].as_f64().is_some(), "{last}");
        let code = child.wait().expect("exits");
        assert!(code.success(), "{signal}: {code:?}");
    }
}

#[test]
fn a_fault_for_the_other_protocol_names_what_applies() {
    let mut c = bin();
    c.args(["proxy", "--upstream", "127.0.0.1:9", "--fault", "loss:5%"]);
    let out = run(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = common::stderr(&out);
    assert!(err.contains("does not apply to tcp"), "{err}");
    assert!(err.contains("need --udp"), "{err}");
    assert!(err.contains("slow-close"), "{err}");
}
