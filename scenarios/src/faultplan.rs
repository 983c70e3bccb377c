//! Fault plans: a timeline of phases (clean, fault on, healed) run under an open-loop load
//! through the fault proxy, as written in a suite's `[[fault]]` entries. The harness runs
//! them (`wirebench::faultplan`); this module only says what a plan is and checks it when
//! the suite is parsed, so a bad fault spec fails with the suite's file and line.
//!
//! The first phase must be clean: it is the plan's baseline, measured through the same proxy
//! as the fault phases (docs/ARCHITECTURE.md: "every fault run is compared with a clean run
//! through the same proxy"), so the proxy's own cost cancels out of every comparison.

use std::time::Duration;

use crate::faultspec::Fault;
use crate::load::LoadSpec;

/// A process fault, applied for the length of a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessFault {
    /// `kill -9` at the phase start; restarted (same port) when the phase ends.
    Kill,
    /// `SIGSTOP` at the phase start, `SIGCONT` when the phase ends.
    Pause,
}

impl ProcessFault {
    /// `kill` or `pause`.
    pub fn name(self) -> &'static str {
        match self {
            ProcessFault::Kill => "kill",
            ProcessFault::Pause => "pause",
        }
    }

    /// Parses `kill` or `pause`.
    pub fn parse(s: &str) -> Option<ProcessFault> {
        match s {
            "kill" => Some(ProcessFault::Kill),
            "pause" => Some(ProcessFault::Pause),
            _ => None,
        }
    }
}

/// Which process a process fault acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessTarget {
    /// The `wirebench serve` child.
    Server,
    /// The broker of a broker transport.
    Broker,
}

impl ProcessTarget {
    /// `server` or `broker`.
    pub fn name(self) -> &'static str {
        match self {
            ProcessTarget::Server => "server",
            ProcessTarget::Broker => "broker",
        }
    }
}

/// One phase of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    /// Its name (`clean`, `fault`, `healed`).
    pub name: String,
    /// How long it lasts.
    pub duration: Duration,
    /// Proxy faults in force during it (empty: clean).
    pub faults: Vec<Fault>,
    /// The specs as written (shown in reports).
    pub specs: Vec<String>,
    /// A process fault during it.
    pub process: Option<ProcessFault>,
}

impl Phase {
    /// No proxy fault and no process fault.
    pub fn is_clean(&self) -> bool {
        self.faults.is_empty() && self.process.is_none()
    }
}

/// Whether a plan runs with a resilience policy.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum PolicyChoice {
    /// No policy (the default).
    #[default]
    None,
    /// Run with the policy only (`runs = "with"`) or twice, without and with (`runs =
    /// "both"`). The configuration is passed through untouched to the policy layer
    /// (`wirebench_policy::PolicyConfig`), which owns its format.
    With {
        /// Also run without the policy, for the side-by-side comparison.
        also_without: bool,
        /// The policy table minus `runs`.
        config: toml::Table,
    },
}

/// A parsed `[[fault]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// Its name (unique in the suite).
    pub name: String,
    /// Only against these transports (`None`: every selected transport with a network path).
    pub transports: Option<Vec<String>>,
    /// The open-loop load; its length is the sum of the phases and its timeout the per-call
    /// deadline (default 1 s, so no call can hang a phase).
    pub load: LoadSpec,
    /// The timeline, first phase clean.
    pub phases: Vec<Phase>,
    /// What process faults act on.
    pub target: ProcessTarget,
    /// Resilience policy.
    pub policy: PolicyChoice,
}

impl FaultPlan {
    /// The measured length: every phase.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// Phase start offsets from the start of the measured time, in order.
    pub fn phase_starts(&self) -> Vec<Duration> {
        let mut t = Duration::ZERO;
        self.phases
            .iter()
            .map(|p| {
                let s = t;
                t += p.duration;
                s
            })
            .collect()
    }

    /// A rough estimate of one run (for progress): warm-up plus phases, per policy variant.
    pub fn estimate(&self) -> Duration {
        let runs = match &self.policy {
            PolicyChoice::With {
                also_without: true, ..
            } => 2,
            _ => 1,
        };
        (self.load.warmup + self.duration()) * runs
    }

    /// True when some phase applies a proxy fault that means nothing over UDP (or TCP);
    /// returns the first such spec.
    pub fn inapplicable(&self, udp: bool) -> Option<&str> {
        self.phases.iter().find_map(|p| {
            p.faults
                .iter()
                .zip(&p.specs)
                .find(|(f, _)| !f.kind.applies_to(udp))
                .map(|(_, s)| s.as_str())
        })
    }
}
