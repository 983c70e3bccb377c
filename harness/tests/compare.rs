//! `wirebench compare` as a CI gate, end to end: it cannot pass by judging nothing. No run in
//! common fails; runs whose parameters differ fail unless `--allow-partial`; files from
//! different machines get a warning, and `--require-same-machine` refuses them (exit 2).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{bin, run, short_load, stderr, stdout, temp_dir};

const LIMIT: Duration = Duration::from_secs(60);

/// A results file of one short in-process closed-loop run named `point` lasting `duration`.
fn results(dir: &Path, file: &str, duration: &str) -> PathBuf {
    let path = dir.join(file);
    let mut c = short_load("inproc", duration);
    c.arg("--json").arg(&path);
    let out = run(c, LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    path
}

fn compare(base: &Path, new: &Path, flags: &[&str]) -> std::process::Output {
    let mut c = bin();
    c.arg("compare").arg(base).arg(new).args(flags);
    run(c, LIMIT)
}

/// Rewrites a results file's JSON with `edit`.
fn edited(from: &Path, to: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from).expect("written")).expect("JSON");
    edit(&mut v);
    std::fs::write(to, serde_json::to_string(&v).expect("JSON")).expect("test setup");
    to.to_owned()
}

#[test]
fn the_gate_cannot_pass_by_judging_nothing() {
    let dir = temp_dir("compare");
    let a = results(&dir, "a.json", "300ms");

    // The same file: one run judged, no regression.
    let out = compare(&a, &a, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("no regression (1 runs judged)"));

    // No run in common (the point renamed): exit 1, whatever --allow-partial says.
    let renamed = edited(&a, &dir.join("renamed.json"), |v| {
        v["runs"][0]["point"] = "elsewhere".into();
    });
    for flags in [&[][..], &["--allow-partial"][..]] {
        let out = compare(&a, &renamed, flags);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", stdout(&out));
        assert!(
            stdout(&out).contains("no run is in both files"),
            "{}",
            stdout(&out)
        );
    }

    // Parameters differ (300 ms against 400 ms): not comparable, so the gate fails unless
    // partial comparisons are allowed.
    let b = results(&dir, "b.json", "400ms");
    let out = compare(&a, &b, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("duration_s 0.3 → 0.4"), "{text}");
    assert!(text.contains("NOT JUDGED: 1 run(s) not judged"), "{text}");
    let out = compare(&a, &b, &["--allow-partial"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("partial comparison allowed"));

    // Another machine: a loud warning, and exit 2 when the same machine is required.
    let other = edited(&a, &dir.join("other.json"), |v| {
        v["environment"]["cpu_model"] = "Intel(R) Xeon(R) Processor".into();
    });
    let out = compare(&a, &other, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("WARNING: the files come from different machines"));
    assert!(stderr(&out).contains("Intel(R) Xeon(R) Processor"));
    let out = compare(&a, &other, &["--require-same-machine"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("different machines"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
