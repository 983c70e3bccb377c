//! Shards of one run: three `load` processes told their index the way engines tell it (here
//! Slurm's `SLURM_PROCID`), each running its exact share. Their rates, connections and calls
//! in flight add up to the whole, each records which shard it was, and a bad shard is refused
//! before anything runs.

mod common;

use std::time::Duration;

use common::{bin, read_json, run, stderr, temp_dir};

#[test]
fn three_shards_take_shares_that_add_up_to_the_whole() {
    let dir = temp_dir("shards");
    let mut rates = 0.0;
    let mut connections = 0;
    let mut due = 0;
    for i in 0..3 {
        let path = dir.join(format!("shard-{i}.json"));
        let mut c = bin();
        c.env("SLURM_PROCID", i.to_string())
            .args(["load", "--transport", "inproc", "--shard-count", "3"])
            .args([
                "--rate",
                "900",
                "--schedule",
                "constant",
                "--connections",
                "4",
            ])
            .args(["--duration", "1s", "--warmup", "100ms", "--quiet", "--json"])
            .arg(&path);
        let out = run(c, Duration::from_secs(60));
        assert!(out.status.success(), "shard {i}: {}", stderr(&out));
        let v: serde_json::Value = read_json(&path);
        let p = &v["runs"][0]["params"];
        assert_eq!(p["shard"]["source"], "SLURM_PROCID", "{p}");
        assert_eq!(p["shard"]["index"], i, "{p}");
        assert_eq!(
            p["shard"]["segment"],
            format!("{i}/3:{}/3", i + 1)
                .replace("0/3", "0")
                .replace("3/3", "1")
        );
        rates += p["rate"].as_f64().expect("rate");
        connections += p["connections"].as_u64().expect("connections");
        due += v["runs"][0]["summary"]["offered"]["due"]
            .as_u64()
            .expect("due");
    }
    assert!((rates - 900.0).abs() < 1e-9, "{rates}");
    assert_eq!(connections, 4);
    // A constant schedule of 300/s for 1 s on each shard: 900 due in all.
    assert!((due as i64 - 900).abs() <= 3, "{due}");

    // Merged: the sum of the shards' calls, the whole rate, one run.
    let merge = |files: &[usize], extra: &[&str], out: &str| {
        let mut c = bin();
        c.args(["merge", "--expect-shards", "3", "--out"])
            .arg(dir.join(out))
            .args(extra);
        for i in files {
            c.arg(dir.join(format!("shard-{i}.json")));
        }
        run(c, Duration::from_secs(60))
    };
    let out = merge(&[0, 1, 2], &[], "all");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = read_json(&dir.join("all/results.json"));
    let m = &v["runs"][0];
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);
    assert_eq!(m["params"]["rate"].as_f64(), Some(900.0));
    assert_eq!(m["params"]["connections"], 4);
    assert!(m["params"]["shard"].is_null());
    assert_eq!(m["summary"]["offered"]["due"].as_u64(), Some(due));
    assert!(dir.join("all/report.html").exists());
    // One shard lost: named, exit 3; merged anyway only when asked, and marked degraded.
    let out = merge(&[0, 2], &[], "part");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("inproc/load: shard 1 of 3"),
        "{}",
        stderr(&out)
    );
    let out = merge(&[0, 2], &["--allow-partial"], "partial");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = read_json(&dir.join("partial/results.json"));
    let why = v["runs"][0]["validity"]["reasons"][0]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("degraded: shard(s) [1] of 3 missing"), "{why}");
}

#[test]
fn a_shard_that_cannot_be_is_refused_with_why() {
    for (env, args, says) in [
        (
            None,
            vec!["--shard-count", "3"],
            "none of JOB_COMPLETION_INDEX",
        ),
        (
            Some(("JOB_COMPLETION_INDEX", "7")),
            vec!["--shard-count", "3"],
            "shard index 7 (from JOB_COMPLETION_INDEX) is not below --shard-count 3",
        ),
        (None, vec!["--shard-index", "1"], "needs --shard-count"),
        (
            None,
            vec![
                "--shard-index",
                "0",
                "--shard-count",
                "3",
                "--rate",
                "1k",
                "--connections",
                "2",
            ],
            "connections 2 cannot be split to shard 0 of 3",
        ),
        (
            None,
            vec!["--execution-segment", "2/3:1/3"],
            "the segment must be non-empty",
        ),
    ] {
        let mut c = bin();
        for v in ["JOB_COMPLETION_INDEX", "SLURM_PROCID", "NOMAD_ALLOC_INDEX"] {
            c.env_remove(v);
        }
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.args(["load", "--transport", "inproc", "--duration", "100ms"])
            .args(&args);
        let out = run(c, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

/// Shards start together at a wall-clock time: on time, the run waits for it and records a
/// skew of zero; missed by more than the grace, the shard exits 75 without running.
#[test]
fn a_coordinated_start_is_kept_or_refused() {
    let dir = temp_dir("start-at");
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    // A short open loop starting at `at` (unix ms).
    let at_start = |at: u64| {
        let mut c = bin();
        c.args(["load", "--transport", "inproc", "--rate", "200"])
            .args([
                "--duration",
                "300ms",
                "--quiet",
                "--start-at",
                &at.to_string(),
            ]);
        c
    };
    let path = dir.join("on-time.json");
    let at = now_ms() + 1500;
    let started = std::time::Instant::now();
    let mut c = at_start(at);
    c.args(["--warmup", "0s", "--json"]).arg(&path);
    let out = run(c, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    // It waited for the start (the process itself starts in far less than 1.5 s).
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    let v: serde_json::Value = read_json(&path);
    assert_eq!(v["runs"][0]["summary"]["start_skew_ms"].as_f64(), Some(0.0));

    let c = at_start(now_ms() - 10_000);
    let out = run(c, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("beyond the grace of 1000 ms"),
        "{}",
        stderr(&out)
    );
}
