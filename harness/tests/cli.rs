//! The `wirebench` binary end to end: a short `run` and a `load --json` produce results that
//! validate against the checked-in schema and render; bad input of every kind gives a clear
//! one-line error, exit code 2, and loses nothing already written.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{bin, run, stderr, temp_dir};

/// Asserts exit code 2 and one clear `error:` line naming `what`.
fn assert_bad_input(o: &Output, what: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "exit code for {what:?}; stderr: {err}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        // Progress (the run's header and its steps) may precede an error met mid-run.
        .filter(|l| !l.contains(" ...") && !l.starts_with("wirebench: "))
        .collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("error:")),
        "stderr: {err}"
    );
    assert!(err.contains(what), "expected {what:?} in: {err}");
    if !lines[0].contains("invalid value") {
        assert_eq!(lines.len(), 1, "one line expected: {err}");
    }
}

fn validate(path: &Path) {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../reports/schema/results.schema.json"))
            .expect("test setup");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("test setup"))
            .expect("test setup");
    let v = jsonschema::validator_for(&schema).expect("test setup");
    let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{} does not validate: {errors:?}",
        path.display()
    );
}

const TINY_SUITE: &str = r#"
name = "tiny"
description = "test suite"

[conformance]
cases = ["unary_empty"]

[floor]
duration = "200ms"
warmup = "50ms"

[defaults]
warmup = "50ms"
requests = 300

[[load]]
name = "unary-2"
concurrency = 2

[[load]]
name = "open"
rate = 2000
max_in_flight = 8

[[load]]
name = "bidi"
method = "bidi"
messages = 3
concurrency = 1
requests = 50
"#;

#[test]
fn run_writes_valid_results_and_reports() {
    let dir = temp_dir("run");
    let suite = dir.join("tiny.toml");
    std::fs::write(&suite, TINY_SUITE).expect("test setup");
    let out = dir.join("out");
    let mut c = bin();
    c.args(["run", "--plain", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out);
    let o = run(c, Duration::from_secs(180));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for f in ["results.json", "report.html", "summary.md"] {
        assert!(out.join(f).is_file(), "{f} written");
        assert!(stdout.contains(f), "{f} path printed: {stdout}");
    }
    validate(&out.join("results.json"));
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("test setup"),
    )
    .expect("test setup");
    assert_eq!(results["complete"], true);
    let runs = results["runs"].as_array().expect("test setup");
    // Every transport of this build ran every point.
    let transports = results["transports"].as_array().expect("test setup").len();
    assert_eq!(runs.len(), 3 * transports);
    for r in runs {
        assert_eq!(
            r["summary"]["calls"],
            300u64.min(r["params"]["requests"].as_u64().expect("test setup"))
        );
        let placement = r["server"]["placement"].as_str().expect("test setup");
        if r["transport"] == "inproc" {
            assert_eq!(placement, "in-process");
        } else {
            assert_eq!(placement, "child");
            assert!(r["summary"]["server"].is_object(), "server usage measured");
        }
    }
    let html = std::fs::read_to_string(out.join("report.html")).expect("test setup");
    assert!(!html.contains("http"), "no URL in the report");
    assert!(html.contains("unary-2") && html.contains("<svg"));

    // Re-rendering from the saved file works, into another folder.
    let again = dir.join("again");
    let mut c = bin();
    c.arg("report")
        .arg(out.join("results.json"))
        .arg("--out")
        .arg(&again);
    let o = run(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(again.join("report.html").is_file() && again.join("summary.md").is_file());

    // An --out that already holds results is refused and left as it was.
    let before = std::fs::read(out.join("results.json")).expect("test setup");
    let mut c = bin();
    c.args(["run", "--plain", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out);
    let o = run(c, Duration::from_secs(30));
    assert_bad_input(&o, "already holds a results.json");
    assert_eq!(
        std::fs::read(out.join("results.json")).expect("test setup"),
        before
    );
}

/// A point's repeats are spread over the run (round 1 runs every point, then round 2, ...),
/// so they sample the host's drift instead of a few seconds of it; each point still folds
/// its repeats into one record, in suite order.
#[test]
fn run_interleaves_repeats() {
    let dir = temp_dir("repeats");
    let suite = dir.join("repeats.toml");
    std::fs::write(
        &suite,
        "name = \"repeats\"\n[defaults]\nwarmup = \"10ms\"\nrequests = 50\nrepeat = 3\n\
         [[load]]\nname = \"first\"\nconcurrency = 1\n\
         [[load]]\nname = \"second\"\nconcurrency = 2\nrepeat = 2\n",
    )
    .expect("test setup");
    let out = dir.join("out");
    let mut c = bin();
    c.args([
        "run",
        "--plain",
        "--no-conformance",
        "--no-floor",
        "--no-faults",
        "--transport",
        "inproc",
        "--suite",
    ])
    .arg(&suite)
    .arg("--out")
    .arg(&out);
    let o = run(c, Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let err = stderr(&o);
    let order: Vec<&str> = err
        .lines()
        .filter_map(|l| {
            [
                "first (1/3)",
                "first (2/3)",
                "first (3/3)",
                "second (1/2)",
                "second (2/2)",
            ]
            .into_iter()
            .find(|p| l.contains(&format!("inproc {p}:")))
        })
        .collect();
    assert_eq!(
        order,
        [
            "first (1/3)",
            "second (1/2)",
            "first (2/3)",
            "second (2/2)",
            "first (3/3)"
        ],
        "stderr: {err}"
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("test setup"),
    )
    .expect("test setup");
    let runs = results["runs"].as_array().expect("test setup");
    let folded: Vec<(&str, usize)> = runs
        .iter()
        .map(|r| {
            (
                r["point"].as_str().unwrap_or("?"),
                r["repeats"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(folded, [("first", 3), ("second", 2)], "runs: {runs:?}");
}

#[test]
fn load_json_validates_and_serve_target_works() {
    let dir = temp_dir("load");
    // A server started separately, driven through --target.
    let ready = dir.join("ready.json");
    let mut serve = bin()
        .args([
            "serve",
            "--transport",
            "tcp",
            "--watch-stdin",
            "--ready-file",
        ])
        .arg(&ready)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("test setup");
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(serve.stdout.take().expect("test setup"));
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("test setup");
    let readyline: serde_json::Value = serde_json::from_str(&line).expect("test setup");
    assert_eq!(readyline["transport"], "tcp");
    let endpoint = readyline["endpoint"]
        .as_str()
        .expect("test setup")
        .to_owned();
    let pid = readyline["pid"].as_u64().expect("test setup");
    assert_eq!(pid, u64::from(serve.id()));
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).expect("test setup"))
            .expect("test setup");
    assert_eq!(file, readyline);

    let json = dir.join("run.json");
    let mut c = bin();
    c.args([
        "load",
        "--transport",
        "tcp",
        "--target",
        &endpoint,
        "--target-pid",
        &pid.to_string(),
        "--rate",
        "2000",
        "--requests",
        "500",
        "--warmup",
        "50ms",
        "--json",
    ])
    .arg(&json);
    let o = run(c, Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for k in [
        "p50",
        "p99.99",
        "service time",
        "generator lag",
        "CPU µs/call",
        "OK 500",
    ] {
        assert!(text.contains(k), "{k} in summary: {text}");
    }
    validate(&json);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("test setup"))
            .expect("test setup");
    assert_eq!(v["runs"][0]["server"]["placement"], "external");
    assert!(v["runs"][0]["summary"]["server"].is_object());

    // Closing its stdin stops the server.
    drop(serve.stdin.take());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(serve.wait());
    });
    let status = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server exits when its stdin closes")
        .expect("test setup");
    assert!(status.success());
}

#[test]
fn bad_input_is_a_one_line_error_with_exit_code_2() {
    let dir = temp_dir("bad");
    let t = Duration::from_secs(30);

    let mut c = bin();
    c.args(["load", "--transport", "carrier-pigeon", "--rate", "5"]);
    assert_bad_input(&run(c, t), "unknown transport \"carrier-pigeon\"");

    let mut c = bin();
    c.args(["run", "--transport", "tcp,carrier-pigeon"]);
    assert_bad_input(&run(c, t), "unknown transport");

    for rate in ["0", "-5", "NaN", "fast"] {
        let mut c = bin();
        c.args(["load", "--transport", "tcp", &format!("--rate={rate}")]);
        assert_bad_input(&run(c, t), "--rate");
    }
    let mut c = bin();
    c.args(["load", "--transport", "tcp", "--concurrency", "0"]);
    assert_bad_input(&run(c, t), "--concurrency");
    // A negative rate reaches the unit parser (not clap's "unexpected argument").
    let mut c = bin();
    c.args(["load", "--transport", "tcp", "--rate", "-5"]);
    assert_bad_input(&run(c, t), "a rate cannot be negative");
    // Names match whatever their case; a typo gets a suggestion.
    let mut c = bin();
    c.args(["load", "--transport", "TPC", "--rate", "5"]);
    assert_bad_input(&run(c, t), "did you mean \"tcp\"?");
    // Options the transport does not know are the user's input, client or server side, even
    // when a server child is involved.
    for flag in ["--option", "--server-option"] {
        let mut c = bin();
        c.args([
            "load",
            "--transport",
            "tcp",
            flag,
            "foo=1",
            "--duration",
            "1s",
        ]);
        let o = run(c, t);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("unknown option \"foo\""),
            "{}",
            stderr(&o)
        );
    }
    // An unknown transport in a suite is named at its line.
    let suite = dir.join("typo.toml");
    std::fs::write(
        &suite,
        "name = \"typo\"\n[[load]]\nname = \"a\"\ntransports = [\"tcp\", \"qiuc\"]\n",
    )
    .expect("test setup");
    let mut c = bin();
    c.args(["run", "--suite"]).arg(&suite);
    assert_bad_input(&run(c, t), "typo.toml:4:");
    let mut c = bin();
    c.args(["run", "--suite"]).arg(&suite);
    assert_bad_input(&run(c, t), "did you mean \"quic\"?");

    // Nothing listens on a port we just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("test setup")
        .local_addr()
        .expect("test setup")
        .port();
    let target = format!("127.0.0.1:{port}");
    let mut c = bin();
    c.args([
        "load",
        "--transport",
        "tcp",
        "--target",
        &target,
        "--rate",
        "10",
        "--duration",
        "1s",
    ]);
    assert_bad_input(&run(c, t), &target);

    // A server command that never prints its ready line.
    let mut c = bin();
    c.args([
        "load",
        "--transport",
        "tcp",
        "--server-cmd",
        "sleep 30",
        "--ready-timeout",
        "300ms",
        "--rate",
        "10",
        "--duration",
        "1s",
    ]);
    assert_bad_input(&run(c, t), "did not become ready within 300ms");

    // A server command that exits at once.
    let mut c = bin();
    c.args([
        "load",
        "--transport",
        "tcp",
        "--server-cmd",
        "echo nope >&2; exit 3",
        "--rate",
        "10",
    ]);
    assert_bad_input(&run(c, t), "exited before becoming ready");

    // A malformed suite names file, line and expectation.
    let suite = dir.join("bad.toml");
    std::fs::write(&suite, "name = \"bad\"\n\n[[load]]\nrate = 0\n").expect("test setup");
    let mut c = bin();
    c.args(["run", "--suite"]).arg(&suite);
    let o = run(c, t);
    assert_bad_input(&o, &format!("{}:4:", suite.display()));
    assert!(stderr(&o).contains("positive"));

    let mut c = bin();
    c.args(["run", "--suite", "no-such-suite"]);
    assert_bad_input(&run(c, t), "built-in: quick, ci");

    // Unreadable and malformed results files.
    let mut c = bin();
    c.args(["report", "/nonexistent/results.json"]);
    assert_bad_input(
        &run(c, t),
        "cannot read results file /nonexistent/results.json",
    );
    let garbage = dir.join("garbage.json");
    std::fs::write(
        &garbage,
        "{\"schema\": \"wirebench-results\",\n \"version\": ",
    )
    .expect("test setup");
    let mut c = bin();
    c.arg("report").arg(&garbage);
    assert_bad_input(&run(c, t), &format!("{}:2:", garbage.display()));
    let foreign = dir.join("foreign.json");
    std::fs::write(&foreign, "[1, 2, 3]").expect("test setup");
    let mut c = bin();
    c.arg("report").arg(&foreign);
    assert_bad_input(&run(c, t), "not a wirebench results file");
}
