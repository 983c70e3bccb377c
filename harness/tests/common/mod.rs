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

/// A JSON file the binary wrote (a results file), which must exist and parse.
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("written")).expect("JSON")
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Screenshots `page` in headless Chromium into `png` and returns its bytes; `None` when no
/// Chromium is installed, which under `CI` is a failure (`.ci/run` installs it).
pub fn screenshot(page: &std::path::Path, png: &std::path::Path) -> Option<Vec<u8>> {
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing: .ci/run installs it (apt-get install chromium)"
        );
        eprintln!("chromium not installed: no screenshot taken");
        return None;
    };
    let mut c = Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1100,1600",
    ])
    .arg(format!("--screenshot={}", png.display()))
    .arg(format!("file://{}", page.display()));
    let out = run(c, Duration::from_secs(120));
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(png).expect("a screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "{}: not a PNG",
        png.display()
    );
    Some(bytes)
}

/// Text labels of an SVG chart whose boxes overlap: each label's box is estimated from its
/// position, anchor, baseline shift and font size (a sans-serif character averages 0.55 em).
/// Rotated labels (axis names) are left out, and so is a label drawn twice at one place.
pub fn overlapping_labels(svg: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[at..].split('"').next()?.to_owned())
    };
    let mut boxes: Vec<(f64, f64, f64, f64, String)> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find("<text") {
        let tag_end = open + rest[open..].find('>').expect("a tag end");
        let tag = &rest[open..tag_end];
        let close = tag_end + rest[tag_end..].find("</text>").expect("a text end");
        let text = rest[tag_end + 1..close].trim().to_owned();
        rest = &rest[close..];
        if text.is_empty() || tag.contains("rotate") {
            continue;
        }
        let num = |n: &str| attr(tag, n).and_then(|v| v.parse::<f64>().ok());
        let (Some(x), Some(y), Some(fs)) = (num("x"), num("y"), num("font-size")) else {
            continue;
        };
        let w = 0.55 * fs * text.chars().count() as f64;
        let x0 = match attr(tag, "text-anchor").as_deref() {
            Some("middle") => x - w / 2.0,
            Some("end") => x - w,
            _ => x,
        };
        let y0 = match attr(tag, "dy").as_deref() {
            Some("0.76em") => y,
            Some("-0.5ex") => y - 0.75 * fs,
            Some("0.5ex") => y - 0.25 * fs,
            _ => y - 0.8 * fs,
        };
        boxes.push((x0, y0, x0 + w, y0 + fs, text));
    }
    let mut out = Vec::new();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let same = a.4 == b.4 && (a.0 - b.0).abs() < 0.5 && (a.1 - b.1).abs() < 0.5;
            let apart =
                a.2 - 1.0 <= b.0 || b.2 - 1.0 <= a.0 || a.3 - 1.0 <= b.1 || b.3 - 1.0 <= a.1;
            if !same && !apart {
                out.push((a.4.clone(), b.4.clone()));
            }
        }
    }
    out
}
