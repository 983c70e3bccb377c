//! CPU placement: pinning threads to CPUs and reading which CPU a thread runs on. On small
//! VMs placement changes a loopback round trip by 4x, so results record it.

use nix::sched::{CpuSet, sched_getcpu, sched_setaffinity};
use nix::unistd::Pid;

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| format!("CPU {cpu} cannot be pinned: {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("pinning to CPU {cpu}: {e}"))
}

/// The CPU the calling thread is running on now.
pub fn current_cpu() -> Option<usize> {
    sched_getcpu().ok()
}

/// Number of CPUs available to this process, as first seen: `available_parallelism` follows
/// the calling thread's affinity, so once a thread is pinned it would report 1 and the next
/// `Pin::Split` would put both sides on CPU 0.
pub fn available_cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Where to place the two sides of a measurement.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Pin {
    /// Let the scheduler decide.
    None,
    /// Client and server on the same CPU (CPU 0).
    Same,
    /// Client on CPU 0, server on CPU 1.
    Split,
}

impl Pin {
    /// `none`, `same` or `split`, as the flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            Pin::None => "none",
            Pin::Same => "same",
            Pin::Split => "split",
        }
    }

    /// The CPUs for (client, server), or `None` when unpinned.
    pub fn cpus(self) -> Option<(usize, usize)> {
        match self {
            Pin::None => None,
            Pin::Same => Some((0, 0)),
            Pin::Split => Some((0, 1.min(available_cpus().saturating_sub(1)))),
        }
    }
}

/// A set of CPU numbers seen, as a compact sorted list.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpusSeen(pub Vec<usize>);

impl CpusSeen {
    /// Records one observation.
    pub fn note(&mut self, cpu: Option<usize>) {
        if let Some(c) = cpu
            && !self.0.contains(&c)
        {
            self.0.push(c);
            self.0.sort_unstable();
        }
    }
}

/// The CPUs a thread ran on, noted from a runtime hook on that thread (lock-free, so it can
/// be called at every unpark without a timer of its own).
#[derive(Debug, Default)]
pub struct CpuMask(std::sync::atomic::AtomicU64);

impl CpuMask {
    /// Notes the CPU the calling thread is on (CPUs past 63 are not recorded).
    pub fn note_current(&self) {
        if let Some(c) = current_cpu()
            && c < 64
        {
            self.0
                .fetch_or(1 << c, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// What was noted.
    pub fn seen(&self) -> CpusSeen {
        let bits = self.0.load(std::sync::atomic::Ordering::Relaxed);
        CpusSeen((0..64).filter(|c| bits & (1 << c) != 0).collect())
    }
}

impl std::fmt::Display for CpusSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("?");
        }
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}
