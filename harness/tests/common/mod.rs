//! What the binary's end-to-end tests share: the binary, a time limit on every run of it, and
//! a scratch directory per test.

#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The `wirebench` binary, with no input.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wirebench"));
    c.stdin(Stdio::null());
    c
}

/// `wirebench load` of `transport` in a closed loop of one call, no warm-up, measured for
/// `duration`, no progress: the shortest real run, for tests about what surrounds it.
pub fn short_load(transport: &str, duration: &str) -> Command {
    let mut c = bin();
    c.args(["load", "--transport", transport, "--concurrency", "1"])
        .args(["--warmup", "0s", "--duration", duration, "--quiet"]);
    c
}

/// Runs a command with a time limit (no test may hang).
pub fn run(mut c: Command, limit: Duration) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("binary starts");
    let id = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("command did not finish within {limit:?}");
        }
    }
}

/// A fresh scratch directory for test `name` of this process.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wb-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test setup");
    d
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
