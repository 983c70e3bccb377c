//! Fault plans end to end on `tcp`, through the real binary (the server is a `wirebench
//! serve` child, as in every fault run): 50 ms added server→client raises the median by
//! 50 ms (±10%) over the clean phase, and a reset phase shows errors, accounts for every
//! request and recovers. The latency bound derives from the injected fault, not from the
//! machine's speed.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const SUITE: &str = r#"
name = "fault-test"
[conformance]
enabled = false
[floor]
enabled = false

[[fault]]
name = "latency"
load = { rate = 200, schedule = "constant", payload = 64 }
phases = [ { name = "clean", for = "1.5s" },
           { name = "fault", for = "2s", faults = ["latency:50ms,dir=down"] },
           { name = "healed", for = "1.5s" } ]

[[fault]]
name = "reset"
load = { rate = 300, payload = 64, connections = 2 }
phases = [ { name = "clean", for = "1s" },
           { name = "fault", for = "1.5s", faults = ["reset"] },
           { name = "healed", for = "1.5s" } ]
"#;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wb-faults-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test setup");
    d
}

/// Runs `wirebench run` with a deadline; returns results.json parsed.
fn run_suite(dir: &std::path::Path) -> serde_json::Value {
    let suite = dir.join("suite.toml");
    std::fs::write(&suite, SUITE).expect("test setup");
    let out = dir.join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_wirebench"))
        .args(["run", "--plain", "--transport", "tcp", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wirebench");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(o) => o.expect("wait for wirebench"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("wirebench run did not finish within 180 s");
        }
    };
    assert!(
        output.status.success(),
        "wirebench run failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    serde_json::from_str(&text).expect("results.json is JSON")
}

fn plan<'a>(results: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    results["fault_runs"]
        .as_array()
        .expect("fault_runs")
        .iter()
        .find(|f| f["plan"] == name && f["transport"] == "tcp")
        .unwrap_or_else(|| panic!("no tcp run of plan {name}: {results:#}"))
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().expect("an unsigned number")
}

#[test]
fn tcp_latency_rise_and_reset_accounting() {
    let dir = scratch("tcp");
    let results = run_suite(&dir);

    // 50 ms one-way on server→client: the fault phase's median is 50 ms (±10%) above clean.
    let lat = plan(&results, "latency");
    let clean = &lat["phases"][0];
    let fault = &lat["phases"][1];
    assert_eq!(fault["name"], "fault");
    let rise_ms =
        (u(&fault["latency"]["p50_ns"]) as f64 - u(&clean["latency"]["p50_ns"]) as f64) / 1e6;
    assert!(
        (45.0..=55.0).contains(&rise_ms),
        "median rise {rise_ms:.2} ms, expected 50 ms ± 10%: {lat:#}"
    );
    assert_eq!(
        lat["accounting"]["balanced"], true,
        "{:#}",
        lat["accounting"]
    );

    // Reset: errors during the fault, every request accounted for, and a recovery time.
    let reset = plan(&results, "reset");
    let a = &reset["accounting"];
    assert_eq!(a["balanced"], true, "{a:#}");
    assert_eq!(u(&a["unanswered"]), 0, "{a:#}");
    assert_eq!(
        u(&a["sent"]),
        u(&a["ok"]) + u(&a["failed"]) + u(&a["timed_out"]),
        "{a:#}"
    );
    let phases = reset["phases"].as_array().expect("phases");
    let sent: u64 = phases.iter().map(|p| u(&p["sent"])).sum();
    assert_eq!(sent, u(&a["sent"]), "phases add up to the run");
    let fault = &phases[1];
    assert!(
        u(&fault["failed"]) + u(&fault["timed_out"]) > 0,
        "errors during the reset phase: {fault:#}"
    );
    assert!(u(&phases[2]["ok"]) > 0, "calls succeed once healed");
    let rec = &reset["recovery"][0];
    assert_eq!(rec["phase"], "fault");
    assert!(rec["detected_ms"].is_number(), "{rec:#}");
    assert!(rec["first_success_ms"].is_number(), "{rec:#}");
    assert!(rec["p99_recovered_ms"].is_number(), "{rec:#}");
    assert_eq!(reset["validity"]["valid"], true, "{:#}", reset["validity"]);

    // The reports carry the fault section.
    let html = std::fs::read_to_string(dir.join("out/report.html")).expect("report.html");
    assert!(html.contains("Fault runs"));
    let md = std::fs::read_to_string(dir.join("out/summary.md")).expect("summary.md");
    assert!(
        md.contains("## Fault runs") && md.contains("| reset | tcp | fault |"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
