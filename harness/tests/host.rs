//! Whose fault a late schedule is: an open-loop point run while CPU hogs take every CPU is
//! INVALID with the host named as the cause and the other processes' share given; the same
//! point on the quiet machine is valid, and says how little the rest of the host used.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{bin, run, stderr, temp_dir};

/// One busy loop per CPU, in processes that are not ours, killed when dropped.
struct Hogs(Vec<Child>);

impl Hogs {
    fn start() -> Hogs {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Hogs(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("sh starts")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn point(json: &std::path::Path) -> serde_json::Value {
    let mut c = bin();
    c.args([
        "load",
        "--transport",
        "tcp",
        "--rate",
        "2k",
        "--duration",
        "2s",
    ])
    .args(["--warmup", "300ms", "--quiet", "--json"])
    .arg(json);
    let out = run(c, Duration::from_secs(120));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json).expect("written")).expect("JSON");
    v["runs"][0].clone()
}

#[test]
fn a_busy_host_is_named_as_the_cause_and_a_quiet_one_is_not() {
    let dir = temp_dir("host");
    let busy = {
        let _hogs = Hogs::start();
        point(&dir.join("busy.json"))
    };
    let share = busy["summary"]["host"]["other_cpus"]
        .as_f64()
        .expect("the host's load is recorded");
    assert!(share >= 0.5, "hogs on every CPU, yet others used {share}");
    assert_eq!(busy["validity"]["valid"], false, "{}", busy["validity"]);
    let reasons = busy["validity"]["reasons"].to_string();
    assert!(reasons.contains("host busy"), "{reasons}");
    assert!(reasons.contains(&format!("{share:.2} of")), "{reasons}");

    let quiet = point(&dir.join("quiet.json"));
    let share = quiet["summary"]["host"]["other_cpus"]
        .as_f64()
        .expect("recorded");
    assert!(share < 0.5, "nothing else runs, yet others used {share}");
    assert_eq!(quiet["validity"]["valid"], true, "{}", quiet["validity"]);
}
