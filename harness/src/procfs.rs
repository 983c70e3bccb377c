//! What `/proc` says about a process: CPU time (user, system), peak resident memory, and the
//! CPUs its threads run on. Read for the load generator itself and for server processes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::affinity::CpusSeen;

/// CPU time a process has used.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTimes {
    /// User time.
    pub user: Duration,
    /// System time.
    pub system: Duration,
}

impl CpuTimes {
    /// The time used since `earlier`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// User plus system.
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux): the unit of `/proc` times.
pub fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map_or(100.0, |t| t as f64)
}

/// The fields of a `stat` line after `(comm)`, which may itself hold spaces and parentheses.
fn stat_fields(line: &str) -> Option<Vec<&str>> {
    let after = &line[line.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// Parses utime and stime (fields 14 and 15 of `/proc/PID/stat`).
pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let f = stat_fields(stat)?;
    // After `(comm)`, index 0 is field 3 (state): field N is at index N - 3.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let tps = ticks_per_second();
    Some(CpuTimes {
        user: Duration::from_secs_f64(utime as f64 / tps),
        system: Duration::from_secs_f64(stime as f64 / tps),
    })
}

/// Parses the CPU a task last ran on (field 39 of a `stat` line).
pub fn parse_processor(stat: &str) -> Option<usize> {
    stat_fields(stat)?.get(36)?.parse().ok()
}

/// CPU time of process `pid` (every thread, including those that exited).
pub fn cpu_times(pid: u32) -> std::io::Result<CpuTimes> {
    let text = std::fs::read_to_string(proc_path(pid, "stat"))?;
    parse_cpu_times(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat format"),
        )
    })
}

/// Parses `VmHWM` (peak resident set) from `/proc/PID/status`, in bytes.
pub fn parse_peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Peak resident set size of `pid` in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    parse_peak_rss(&std::fs::read_to_string(proc_path(pid, "status")).ok()?)
}

/// Resets the peak resident set of `pid` to its current size (writes `5` to `clear_refs`), so
/// that the next reading is the peak of what follows. False when the kernel refused.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(proc_path(pid, "clear_refs"), "5").is_ok()
}

/// The CPUs the threads of `pid` are on now.
pub fn thread_cpus(pid: u32) -> Vec<usize> {
    let Ok(dir) = std::fs::read_dir(proc_path(pid, "task")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| parse_processor(&s))
        .collect()
}

/// Samples, every 50 ms on a thread of its own, the CPUs that some processes' threads are on.
#[derive(Debug)]
pub struct CpuWatcher {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<CpusSeen>>>,
}

impl CpuWatcher {
    /// Starts watching `pids`.
    pub fn start(pids: Vec<u32>) -> CpuWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("wb-cpu-watch".into())
            .spawn(move || {
                let mut seen = vec![CpusSeen::default(); pids.len()];
                while !flag.load(Ordering::Relaxed) {
                    for (pid, s) in pids.iter().zip(seen.iter_mut()) {
                        for c in thread_cpus(*pid) {
                            s.note(Some(c));
                        }
                    }
                    std::thread::park_timeout(Duration::from_millis(50));
                }
                seen
            })
            .ok();
        CpuWatcher { stop, handle }
    }

    /// Stops and returns what was seen, per pid in the order given.
    pub fn stop(mut self) -> Vec<CpusSeen> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => {
                h.thread().unpark();
                h.join().unwrap_or_default()
            }
            None => Vec::new(),
        }
    }
}

impl Drop for CpuWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 \
                    3 0 100 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 \
                    0 0 0";
        let t = parse_cpu_times(line).unwrap();
        let tps = ticks_per_second();
        assert_eq!(t.user, Duration::from_secs_f64(250.0 / tps));
        assert_eq!(t.system, Duration::from_secs_f64(75.0 / tps));
        assert_eq!(parse_processor(line), Some(1));
        assert_eq!(parse_cpu_times("garbage"), None);
        assert_eq!(parse_processor("1 (x) S"), None);
    }

    #[test]
    fn status_peak_rss_parses() {
        let s = "Name:\tx\nVmPeak:\t  10 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_peak_rss(s), Some(2048 * 1024));
        assert_eq!(parse_peak_rss("Name: x\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_times(me).is_ok());
        assert!(peak_rss(me).is_some_and(|b| b > 0));
        assert!(!thread_cpus(me).is_empty());
    }
}
