//! Load profiles: what one load run does (method, closed or open loop, sizes, length, seed),
//! independent of any transport. The harness's load engine executes a [`LoadSpec`]; suites
//! and the `load` command build them.

use std::time::Duration;

use wirebench_core::tls::TlsMode;
use wirebench_core::{Capability, Method};

/// How requests are issued.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// `concurrency` callers, each waiting for its answer before the next call.
    Closed {
        /// Calls in flight in total.
        concurrency: u32,
    },
    /// Requests start on a schedule, whatever the answers do; latency is measured from each
    /// request's intended start.
    Open {
        /// Requests per second, in total.
        rate: f64,
        /// How the starts are spaced.
        schedule: Schedule,
        /// Calls in flight at most (per run): when every caller is busy, a due request waits
        /// for one and that wait is charged to its latency (as wrk2 does per connection).
        max_in_flight: u32,
    },
}

/// How an open loop spaces its request starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Evenly spaced, `1/rate` apart.
    Constant,
    /// Poisson arrivals: exponential gaps with mean `1/rate` (seeded).
    Poisson,
}

impl Schedule {
    /// `constant` or `poisson`.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Poisson => "poisson",
        }
    }

    /// Parses `constant` or `poisson`.
    pub fn parse(s: &str) -> Option<Schedule> {
        match s {
            "constant" => Some(Schedule::Constant),
            "poisson" => Some(Schedule::Poisson),
            _ => None,
        }
    }
}

/// How long a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// For this long.
    Duration(Duration),
    /// Until this many calls were started.
    Requests(u64),
}

/// A server that stalls once: the request started at `at` (after the warm-up) asks the
/// server to wait `duration` before answering (the `delay` directive) — a way to see
/// coordinated-omission correction at work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// When, measured from the start of the measured phase.
    pub at: Duration,
    /// How long the server waits.
    pub duration: Duration,
}

/// One load run's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSpec {
    /// The load point's name (`unary-c1`).
    pub name: String,
    /// The method called.
    pub method: Method,
    /// Closed or open loop.
    pub mode: Mode,
    /// Connections in total (spread over the workers).
    pub connections: u32,
    /// Client worker threads, each with its own single-threaded runtime.
    pub workers: u32,
    /// Request payload bytes.
    pub payload: usize,
    /// Response payload bytes (`None`: echo the request's size).
    pub response_size: Option<usize>,
    /// Messages per stream call (server stream: responses; client stream: requests; bidi:
    /// ping-pongs). Ignored by unary.
    pub messages: u32,
    /// Run first and discarded.
    pub warmup: Duration,
    /// How long to measure.
    pub length: Length,
    /// Seed of every random choice (Poisson gaps).
    pub seed: u64,
    /// Per-call deadline (`None`: no deadline).
    pub timeout: Option<Duration>,
    /// An injected stall, if any.
    pub stall: Option<Stall>,
    /// Every call asks the server to wait this long before answering (the `delay`
    /// directive): a slow system under test on demand, to see what an unsustainable open
    /// loop looks like. Zero: none.
    pub server_delay: Duration,
    /// TLS between client and server: none (plaintext), TLS 1.3, or mutual TLS.
    pub tls: TlsMode,
    /// How an open loop waits for each request's due time.
    pub pacing: Pacing,
    /// An open loop whose rate changes over the run: its stages (`None`: the rate holds).
    pub ramp: Option<Ramp>,
}

/// An open loop's rate over the measured time, in stages (k6's ramping arrival rate). Each
/// stage is a target rate and how long the stage lasts; the run's `rate` is where the first
/// linear stage starts. The run is recorded whole, and each stage is summarised on its own
/// (the requests *due* in it: latency, lag, sent, never sent, and its verdict).
#[derive(Clone, Debug, PartialEq)]
pub struct Ramp {
    /// Linear (from the previous stage's rate to this one's) or step (this rate throughout).
    pub shape: RampShape,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

/// How the rate moves within a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RampShape {
    /// From the previous stage's rate (the first: the run's `rate`) to the stage's, evenly.
    Linear,
    /// The stage's rate throughout.
    Step,
}

impl RampShape {
    /// `linear` or `step`.
    pub fn name(self) -> &'static str {
        match self {
            RampShape::Linear => "linear",
            RampShape::Step => "step",
        }
    }

    /// Parses `linear` or `step`.
    pub fn parse(s: &str) -> Option<RampShape> {
        match s {
            "linear" => Some(RampShape::Linear),
            "step" => Some(RampShape::Step),
            _ => None,
        }
    }
}

/// One stage of a ramp.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    /// The target rate, requests/s (0 allowed: a pause, or a ramp down to nothing).
    pub rate: f64,
    /// How long the stage lasts.
    pub over: Duration,
}

/// A stretch of a ramp where the rate moves linearly from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    /// Its start, from the start of the measured time.
    pub start: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// The rate at its start, requests/s.
    pub from: f64,
    /// The rate at its end.
    pub to: f64,
}

impl Segment {
    /// Requests due over the whole segment.
    pub fn due(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.length.as_secs_f64()
    }
}

/// The most stages a ramp may have.
pub const MAX_STAGES: usize = 100;

impl Ramp {
    /// The measured time: every stage's length.
    pub fn total(&self) -> Duration {
        self.stages.iter().map(|s| s.over).sum()
    }

    /// The rate over time, starting at `start_rate`: one segment per stage.
    pub fn segments(&self, start_rate: f64) -> Vec<Segment> {
        let mut at = Duration::ZERO;
        let mut prev = start_rate;
        self.stages
            .iter()
            .map(|s| {
                let seg = Segment {
                    start: at,
                    length: s.over,
                    from: match self.shape {
                        RampShape::Linear => prev,
                        RampShape::Step => s.rate,
                    },
                    to: s.rate,
                };
                at += s.over;
                prev = s.rate;
                seg
            })
            .collect()
    }

    /// Parses `RATE:OVER,RATE:OVER,...` (`1k:10s,20k:30s,20k:1m`).
    pub fn parse_stages(text: &str) -> Result<Vec<Stage>, String> {
        text.split(',')
            .map(|part| {
                let (rate, over) = part.split_once(':').ok_or_else(|| {
                    format!("stage {part:?}: expected RATE:DURATION (e.g. 5k:10s)")
                })?;
                let rate = match rate.trim() {
                    "0" => 0.0,
                    r => crate::units::parse_rate(r).map_err(|e| format!("stage {part:?}: {e}"))?,
                };
                let over = crate::units::parse_duration(over.trim())
                    .map_err(|e| format!("stage {part:?}: {e}"))?;
                Ok(Stage { rate, over })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
        if self.stages.is_empty() || self.stages.len() > MAX_STAGES {
            return Err(format!("a ramp has 1 to {MAX_STAGES} stages"));
        }
        for (i, s) in self.stages.iter().enumerate() {
            if !s.rate.is_finite() || s.rate < 0.0 {
                return Err(format!("stage {}: the rate must be 0 or more", i + 1));
            }
            if s.over.is_zero() {
                return Err(format!("stage {}: it must last some time", i + 1));
            }
        }
        Ok(())
    }
}

/// How an open loop waits for each request's due time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pacing {
    /// Sleep on a timer armed a little early, then yield to the runtime through the last
    /// 50 µs: cheap, and as precise as the host's timer wake-ups allow (on a small VM, lag p99
    /// of 30-100 µs at 2k/s).
    #[default]
    Sleep,
    /// Never sleep: yield to the runtime until each due time. Lag p99 of 12-15 µs at 2k/s on
    /// the same VM, at the price of a whole CPU per worker, which on a small host competes with
    /// the system under test (docs/measurements.md).
    Spin,
}

impl Pacing {
    /// `sleep` or `spin`.
    pub fn name(self) -> &'static str {
        match self {
            Pacing::Sleep => "sleep",
            Pacing::Spin => "spin",
        }
    }

    /// Parses `sleep` or `spin`.
    pub fn parse(s: &str) -> Option<Pacing> {
        match s {
            "sleep" => Some(Pacing::Sleep),
            "spin" => Some(Pacing::Spin),
            _ => None,
        }
    }
}

impl Default for LoadSpec {
    fn default() -> LoadSpec {
        LoadSpec {
            name: "load".into(),
            method: Method::Unary,
            mode: Mode::Closed { concurrency: 1 },
            connections: 1,
            workers: 1,
            payload: 64,
            response_size: None,
            messages: 1,
            warmup: Duration::from_secs(1),
            length: Length::Duration(Duration::from_secs(5)),
            seed: 1,
            timeout: None,
            stall: None,
            server_delay: Duration::ZERO,
            pacing: Pacing::Sleep,
            ramp: None,
            tls: TlsMode::None,
        }
    }
}

/// Why a load point cannot run (a parameter out of range, or two that contradict).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidLoad(pub String);

impl LoadSpec {
    /// The capabilities a transport needs to run this point: its method, and TLS (mutual
    /// TLS) when the point runs over it.
    pub fn needs(&self) -> Vec<Capability> {
        let mut v = vec![method_capability(self.method)];
        match self.tls {
            TlsMode::None => {}
            TlsMode::Tls => v.push(Capability::Tls),
            TlsMode::Mutual => v.extend([Capability::Tls, Capability::MutualTls]),
        }
        v
    }
}

/// The capability a method needs from a transport.
pub fn method_capability(m: Method) -> Capability {
    match m {
        Method::ServerStream => Capability::ServerStream,
        Method::ClientStream => Capability::ClientStream,
        Method::Bidi => Capability::Bidi,
        Method::Unary | Method::Unimplemented => Capability::Unary,
    }
}

impl LoadSpec {
    /// Checks the parameters make sense; the error says which one and why.
    pub fn validate(&self) -> Result<(), InvalidLoad> {
        if self.method == Method::Unimplemented {
            return Err(InvalidLoad(
                "method must be unary, server-stream, client-stream or bidi".into(),
            ));
        }
        if self.workers == 0 {
            return Err(InvalidLoad("workers must be at least 1".into()));
        }
        if self.connections == 0 {
            return Err(InvalidLoad("connections must be at least 1".into()));
        }
        if self.connections < self.workers {
            return Err(InvalidLoad(format!(
                "connections ({}) must be at least workers ({}): each worker needs one",
                self.connections, self.workers
            )));
        }
        if self.messages == 0 {
            return Err(InvalidLoad("messages must be at least 1".into()));
        }
        if self.payload > u32::MAX as usize || self.response_size.unwrap_or(0) > u32::MAX as usize {
            return Err(InvalidLoad(
                "payload and response sizes must be below 4 GiB".into(),
            ));
        }
        match &self.mode {
            Mode::Closed { concurrency } => {
                if *concurrency == 0 {
                    return Err(InvalidLoad("concurrency must be at least 1".into()));
                }
                if *concurrency < self.connections {
                    return Err(InvalidLoad(format!(
                        "concurrency ({concurrency}) must be at least connections ({})",
                        self.connections
                    )));
                }
            }
            Mode::Open {
                rate,
                max_in_flight,
                ..
            } => {
                if !rate.is_finite() || *rate <= 0.0 {
                    return Err(InvalidLoad(format!(
                        "rate must be a positive number of requests per second, got {rate}"
                    )));
                }
                if *max_in_flight == 0 {
                    return Err(InvalidLoad("max_in_flight must be at least 1".into()));
                }
                if *max_in_flight < self.workers {
                    return Err(InvalidLoad(format!(
                        "max_in_flight ({max_in_flight}) must be at least workers ({})",
                        self.workers
                    )));
                }
            }
        }
        if let Some(ramp) = &self.ramp {
            ramp.validate().map_err(InvalidLoad)?;
            if !matches!(self.mode, Mode::Open { .. }) {
                return Err(InvalidLoad(
                    "stages ramp an open loop's rate: give a rate, not a concurrency".into(),
                ));
            }
            if self.length != Length::Duration(ramp.total()) {
                return Err(InvalidLoad(
                    "a ramp's measured time is its stages' total: no duration or requests".into(),
                ));
            }
            if self.stall.is_some() {
                return Err(InvalidLoad("a ramp has no stall".into()));
            }
        }
        match self.length {
            Length::Duration(d) if d.is_zero() => {
                return Err(InvalidLoad("duration must be positive".into()));
            }
            Length::Requests(0) => return Err(InvalidLoad("requests must be at least 1".into())),
            _ => {}
        }
        Ok(())
    }

    /// Callers in flight at most.
    pub fn in_flight(&self) -> u32 {
        match &self.mode {
            Mode::Closed { concurrency } => *concurrency,
            Mode::Open { max_in_flight, .. } => *max_in_flight,
        }
    }

    /// A rough wall-clock estimate of the run (for progress bars), warm-up included.
    pub fn estimate(&self) -> Duration {
        let measured = match (self.length, &self.mode) {
            (Length::Duration(d), _) => d,
            (Length::Requests(n), Mode::Open { rate, .. }) => {
                Duration::from_secs_f64(n as f64 / rate)
            }
            // Unknown speed: assume 20k calls per second.
            (Length::Requests(n), Mode::Closed { .. }) => {
                Duration::from_secs_f64(n as f64 / 20_000.0)
            }
        };
        self.warmup + measured
    }

    /// A one-line description (`unary closed c=32 over 4 conns, 64 B, 3s`).
    pub fn describe(&self) -> String {
        let mode = match &self.mode {
            Mode::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
            Mode::Open { rate, schedule, .. } => {
                let spin = match self.pacing {
                    Pacing::Sleep => "",
                    Pacing::Spin => ", spin pacing",
                };
                format!("open loop, {} {rate}/s{spin}", schedule.name())
            }
        };
        let len = match self.length {
            Length::Duration(d) => format!("{d:?}"),
            Length::Requests(n) => format!("{n} calls"),
        };
        let stream = if self.method == Method::Unary {
            String::new()
        } else {
            format!(", {} msgs/call", self.messages)
        };
        let delay = if self.server_delay.is_zero() {
            String::new()
        } else {
            format!(", server delay {:?}", self.server_delay)
        };
        format!(
            "{} {mode}, {} conn(s), {} B{stream}, {len}{delay}",
            self.method.name(),
            self.connections,
            self.payload
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(LoadSpec::default().validate(), Ok(()));
    }

    #[test]
    fn bad_parameters_are_named() {
        let open = |rate| LoadSpec {
            mode: Mode::Open {
                rate,
                schedule: Schedule::Poisson,
                max_in_flight: 10,
            },
            ..LoadSpec::default()
        };
        assert!(open(0.0).validate().unwrap_err().0.contains("rate"));
        assert!(open(-3.0).validate().unwrap_err().0.contains("rate"));
        assert!(open(f64::NAN).validate().unwrap_err().0.contains("rate"));
        let s = LoadSpec {
            mode: Mode::Closed { concurrency: 0 },
            ..LoadSpec::default()
        };
        assert!(s.validate().unwrap_err().0.contains("concurrency"));
        let s = LoadSpec {
            connections: 4,
            mode: Mode::Closed { concurrency: 2 },
            ..LoadSpec::default()
        };
        assert!(s.validate().unwrap_err().0.contains("connections"));
        let s = LoadSpec {
            length: Length::Requests(0),
            ..LoadSpec::default()
        };
        assert!(s.validate().unwrap_err().0.contains("requests"));
    }
}
