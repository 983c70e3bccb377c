//! Whose CPU a point ran on. Between the edges of a measured phase the host's CPU time
//! (`/proc/stat`) is split into ours — the load generator and every process it started (server
//! children, brokers) or the `--target-pid` given, with their descendants — and everyone
//! else's, and the steal time a hypervisor took is counted. So a late schedule can be blamed
//! on a busy host ("other processes used 0.9 of 2 CPUs") rather than on the generator.
//!
//! Interrupt and softirq time is left out of both sides: loopback traffic is processed there
//! on behalf of whichever task is running, and counting it as "other processes" would blame
//! the host for our own packets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wirebench_reports::results::HostLoad;

/// Other processes using this much of the host's CPUs (in CPUs) are named as the cause of a
/// schedule that slipped (and noted when it held): the client and server shared their CPUs
/// with someone else's work.
pub const BUSY_CPUS: f64 = 0.5;
/// Steal beyond this share of the window (summed over CPUs) is treated the same way.
pub const STOLEN_SHARE: f64 = 0.05;
/// Other processes using this much are worth a note.
pub const NOTE_CPUS: f64 = 0.1;

/// The host's CPU time at one moment, and ours.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    at: Instant,
    /// user + nice + system over all CPUs, in ticks.
    busy: u64,
    /// steal over all CPUs, in ticks.
    steal: u64,
    /// utime + stime of our processes, in ticks.
    ours: u64,
}

/// The aggregate `cpu` line of `/proc/stat`: (user + nice + system, steal) in ticks.
pub fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    Some((
        v.first()? + v.get(1)? + v.get(2)?,
        v.get(7).copied().unwrap_or(0),
    ))
}

/// (pid, ppid, utime + stime in ticks) of a `/proc/PID/stat` line.
pub fn parse_task(stat: &str) -> Option<(u32, u32, u64)> {
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After `(comm)`, field N is at index N - 3: ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((pid, ppid, utime + stime))
}

/// CPU ticks of `roots` and all their descendants, given every task's (pid, ppid, ticks).
pub fn tree_ticks(tasks: &[(u32, u32, u64)], roots: &[u32]) -> u64 {
    let parent: HashMap<u32, u32> = tasks.iter().map(|&(p, pp, _)| (p, pp)).collect();
    let ours = |mut pid: u32| {
        // Walk up to init; a depth bound guards against a cycle read mid-change.
        for _ in 0..64 {
            if roots.contains(&pid) {
                return true;
            }
            match parent.get(&pid) {
                Some(&pp) if pp != 0 && pp != pid => pid = pp,
                _ => return false,
            }
        }
        false
    };
    tasks
        .iter()
        .filter(|&&(p, _, _)| ours(p))
        .map(|&(_, _, t)| t)
        .sum()
}

fn tasks() -> Vec<(u32, u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        e.file_name().to_str()?.parse::<u32>().ok()?;
        // A process may exit between the listing and the read: it is simply not counted.
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        parse_task(&stat)
    })
    .collect()
}

/// Samples the host now, counting `roots` and their descendants as ours. `None` where
/// `/proc/stat` cannot be read (not Linux).
pub fn sample(roots: &[u32]) -> Option<Sample> {
    let (busy, steal) = parse_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(Sample {
        at: Instant::now(),
        busy,
        steal,
        ours: tree_ticks(&tasks(), roots),
    })
}

/// What the host did between two samples.
pub fn between(start: Sample, end: Sample, ticks_per_s: f64, cpus: u32) -> HostLoad {
    let window = end
        .at
        .saturating_duration_since(start.at)
        .max(Duration::from_millis(1));
    let busy = end.busy.saturating_sub(start.busy) as f64 / ticks_per_s;
    let ours = end.ours.saturating_sub(start.ours) as f64 / ticks_per_s;
    let steal = end.steal.saturating_sub(start.steal) as f64 / ticks_per_s;
    HostLoad {
        window_s: window.as_secs_f64(),
        cpus,
        other_cpus: ((busy - ours) / window.as_secs_f64()).max(0.0),
        steal_ms: steal * 1e3,
    }
}

/// What the host did to a point, when it was busy enough to be the cause of a late schedule.
pub fn busy_reason(h: &HostLoad) -> Option<String> {
    let stolen = h.steal_ms / 1e3 / h.window_s.max(1e-9);
    if h.other_cpus >= BUSY_CPUS {
        Some(format!(
            "host busy: other processes used {:.2} of {} CPUs during this point, so the \
             generator and the server shared them; re-run on a quiet machine",
            h.other_cpus, h.cpus
        ))
    } else if stolen >= STOLEN_SHARE {
        Some(format!(
            "the host took the vCPUs away for {:.0} ms (steal time) during this {:.1} s point; \
             re-run on a quieter host",
            h.steal_ms, h.window_s
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_counts_user_nice_system_and_steal_apart() {
        let stat = "cpu  100 5 50 1000 7 3 9 11 0 0\ncpu0 50 2 25 500 3 1 4 6 0 0\nintr 1\n";
        assert_eq!(parse_stat(stat), Some((155, 11)));
        assert_eq!(parse_stat("cpu  1 2 3 4\n"), Some((6, 0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_task_line_with_spaces_and_parentheses_in_its_name_parses() {
        let stat = "4242 (tokio (rt) 1) S 4200 4242 4242 0 -1 4194304 100 0 0 0 30 12 0 0 20 0 \
                    4 0 100 0 0";
        assert_eq!(parse_task(stat), Some((4242, 4200, 42)));
    }

    #[test]
    fn ours_are_the_roots_and_every_descendant() {
        // 1 init; 10 us, 11 our server child, 12 its broker; 20 someone else, 21 its child.
        let tasks = [
            (1, 0, 1000),
            (10, 1, 5),
            (11, 10, 7),
            (12, 11, 3),
            (20, 1, 100),
            (21, 20, 50),
        ];
        assert_eq!(tree_ticks(&tasks, &[10]), 15);
        assert_eq!(tree_ticks(&tasks, &[10, 20]), 165);
        assert_eq!(tree_ticks(&tasks, &[99]), 0);
    }

    #[test]
    fn a_busy_host_and_stolen_time_are_named() {
        let h = |other_cpus, steal_ms| HostLoad {
            window_s: 2.0,
            cpus: 2,
            other_cpus,
            steal_ms,
        };
        let why = busy_reason(&h(0.93, 0.0)).expect("busy");
        assert!(why.contains("0.93 of 2 CPUs"), "{why}");
        let why = busy_reason(&h(0.0, 300.0)).expect("stolen");
        assert!(why.contains("300 ms"), "{why}");
        assert!(busy_reason(&h(0.05, 10.0)).is_none());
    }

    #[test]
    fn a_sample_of_this_process_sees_its_own_work() {
        let me = std::process::id();
        let Some(a) = sample(&[me]) else {
            return; // not Linux
        };
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = sample(&[me]).expect("still Linux");
        assert!(b.ours > a.ours, "our spinning is ours");
    }
}
