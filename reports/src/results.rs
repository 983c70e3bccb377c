//! `results.json`: the product's one artifact. A versioned schema (`schema` + `version`),
//! documented field by field here and checked in as `reports/schema/results.schema.json`.
//!
//! Everything a report shows is derived from these records, so any saved file can be
//! re-rendered (`wirebench report`) or compared later.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::conformance::CaseOutcome;

/// The `schema` field of every results file.
pub const SCHEMA: &str = "wirebench-results";
/// The schema version this build writes and reads.
pub const VERSION: u32 = 1;

/// Why a results file could not be read or written.
#[derive(Debug, Error)]
pub enum ResultsError {
    /// The file could not be read.
    #[error("cannot read results file {file}: {source}")]
    Read {
        /// The path.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON of the expected shape.
    #[error("{file}:{line}:{column}: not a wirebench results file: {message}")]
    Parse {
        /// The path.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What serde said.
        message: String,
    },
    /// The file is a results file of another schema or version.
    #[error("{file}: {message}")]
    Version {
        /// The path.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The file could not be written.
    #[error("cannot write {file}: {source}")]
    Write {
        /// The path.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A whole `results.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The schema version ([`VERSION`]).
    pub version: u32,
    /// The tool that wrote it (`wirebench 0.1.0`).
    pub tool: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// When it ended; `None` while it runs or when it was interrupted.
    pub finished_at: Option<String>,
    /// True once every planned step ran.
    pub complete: bool,
    /// True when the user interrupted the run (the file holds what finished before).
    pub interrupted: bool,
    /// Where it ran.
    pub environment: Environment,
    /// The suite as run.
    pub suite: SuiteRecord,
    /// Transports selected for the run.
    pub transports: Vec<String>,
    /// The loopback floor measured in this run.
    pub floor: Option<FloorRecord>,
    /// Conformance outcomes (case × transport).
    pub conformance: Vec<CaseOutcome>,
    /// Load runs, in the order they ran.
    pub runs: Vec<RunRecord>,
    /// Load points not run against a transport, with the declared reason.
    pub skipped: Vec<Skipped>,
    /// Load points that failed to run, with the error.
    pub errors: Vec<RunFailure>,
    /// Fault runs (suite `[[fault]]` plans), in the order they ran. Optional and omitted
    /// when empty: an additive field, so version 1 files without it still read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fault_runs: Vec<FaultRunRecord>,
    /// `wirebench capacity`: the knee found per transport (additive; empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity: Vec<CapacityRecord>,
}

/// One fault plan against one transport (with or without a resilience policy). The plan's
/// first phase is clean and runs through the same proxy, so it is the baseline the fault
/// phases are compared with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRunRecord {
    /// The plan's name.
    pub plan: String,
    /// The transport.
    pub transport: String,
    /// `none`, or `with` when a resilience policy wrapped the connections.
    pub policy: String,
    /// The policy settings as written in the suite (JSON), when `policy` is `with`.
    pub policy_config: Option<serde_json::Value>,
    /// The proxied hop: `tcp` or `udp`.
    pub protocol: String,
    /// What process faults act on (`server` or `broker`).
    pub target: String,
    /// The open-loop load as run.
    pub params: RunParams,
    /// Where the server was.
    pub server: ServerInfo,
    /// Length of one interval of [`FaultRunRecord::intervals`], seconds.
    pub interval_s: f64,
    /// The phases, in order.
    pub phases: Vec<FaultPhaseRecord>,
    /// Detection and recovery, one entry per phase that is not clean.
    pub recovery: Vec<RecoveryRecord>,
    /// Every request sent, accounted for.
    pub accounting: Accounting,
    /// What the proxy saw and did (its counters at the end of the run).
    pub proxy: BTreeMap<String, u64>,
    /// Process faults applied, in order.
    pub events: Vec<FaultEvent>,
    /// Whether the run's numbers can be trusted (an accounting mismatch invalidates it).
    pub validity: Validity,
    /// The time series (by completion time, every call, failures included).
    pub intervals: Vec<IntervalRecord>,
}

/// One phase of a fault run. Requests are charged to the phase they were sent in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultPhaseRecord {
    /// Its name.
    pub name: String,
    /// Start, seconds after the measured time began.
    pub start_s: f64,
    /// Length, seconds.
    pub duration_s: f64,
    /// Proxy fault specs in force.
    pub faults: Vec<String>,
    /// Process fault (`kill`, `pause`), if any.
    pub process: Option<String>,
    /// Requests sent in it.
    pub sent: u64,
    /// Of which succeeded.
    pub ok: u64,
    /// Failed with a status other than `DEADLINE_EXCEEDED`.
    pub failed: u64,
    /// Timed out (`DEADLINE_EXCEEDED`: the per-call deadline passed).
    pub timed_out: u64,
    /// Sent but never answered (must be zero).
    pub unanswered: u64,
    /// Calls by status code name.
    pub status_counts: BTreeMap<String, u64>,
    /// Successful calls per second of the phase.
    pub throughput_per_s: f64,
    /// Fraction of its requests that did not succeed.
    pub error_rate: f64,
    /// Latency of its successful calls (from the intended start).
    pub latency: LatencySummary,
    /// That latency histogram (base64 V2 deflate, ns).
    pub histogram: String,
}

/// How a fault was noticed and how the system came back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// The fault phase.
    pub phase: String,
    /// From the fault's start to the first failed call completing in the phase (`None`:
    /// no call failed — a latency or bandwidth fault degrades without errors).
    pub detected_ms: Option<f64>,
    /// From the heal (the phase's end) to the first successful call completing after it.
    pub first_success_ms: Option<f64>,
    /// From the heal until the rolling p99 (window [`RecoveryRecord::window_ms`]) is back
    /// within 2x of the clean phase's p99 (`None`: not within the plan).
    pub p99_recovered_ms: Option<f64>,
    /// The rolling window, milliseconds.
    pub window_ms: f64,
    /// The clean phase's p99 (ns).
    pub clean_p99_ns: u64,
    /// Median rise of the phase's successful calls over the clean phase (ns, may be
    /// negative).
    pub p50_rise_ns: i64,
    /// p99 rise over the clean phase (ns).
    pub p99_rise_ns: i64,
}

/// Every request sent is succeeded, failed (by code), timed out or unanswered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accounting {
    /// Requests sent in the measured time.
    pub sent: u64,
    /// Succeeded.
    pub ok: u64,
    /// Failed with another code.
    pub failed: u64,
    /// Timed out.
    pub timed_out: u64,
    /// Never answered (a call still in flight when the run gave up waiting).
    pub unanswered: u64,
    /// True when `sent == ok + failed + timed_out` and nothing is unanswered.
    pub balanced: bool,
    /// Due on the schedule but never sent (every caller busy until the run closed): not in
    /// `sent`, so due = sent + unsent.
    #[serde(default)]
    pub unsent: u64,
}

/// A process fault applied during a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// Seconds after the measured time began.
    pub at_s: f64,
    /// What happened (`kill -9 pid 123`, `restarted, pid 456`, `SIGSTOP`, `SIGCONT`).
    pub what: String,
}

impl Results {
    /// An empty results record.
    pub fn new(
        tool: String,
        started_at: String,
        environment: Environment,
        suite: SuiteRecord,
    ) -> Results {
        Results {
            schema: SCHEMA.into(),
            version: VERSION,
            tool,
            started_at,
            finished_at: None,
            complete: false,
            interrupted: false,
            environment,
            suite,
            transports: Vec::new(),
            floor: None,
            conformance: Vec::new(),
            runs: Vec::new(),
            fault_runs: Vec::new(),
            capacity: Vec::new(),
            skipped: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The results without their stepped runs (the steps of a schedule or of a capacity
    /// search): what the headline, the point sections, the summary's table and JUnit show.
    /// Steps are drawn as curves instead (`curves`): a search's dozens of steps, most of them
    /// overloaded on purpose, are not points to rank or to fail a build on.
    pub fn without_steps(&self) -> std::borrow::Cow<'_, Results> {
        if self.runs.iter().all(|r| r.step.is_none()) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut fixed = self.clone();
        fixed.runs.retain(|r| r.step.is_none());
        std::borrow::Cow::Owned(fixed)
    }

    /// Reads and checks a results file.
    pub fn load(path: &Path) -> Result<Results, ResultsError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Read {
            file: file.clone(),
            source,
        })?;
        Results::parse(&text, &file)
    }

    /// Parses results JSON; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Results, ResultsError> {
        // Check the schema and version first so a newer or foreign file gets a clear message
        // rather than a field-level complaint.
        let head: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ResultsError::Parse {
                file: file.to_owned(),
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
        let schema = head.get("schema").and_then(|s| s.as_str());
        if schema != Some(SCHEMA) {
            return Err(ResultsError::Version {
                file: file.to_owned(),
                message: format!(
                    "not a wirebench results file (expected \"schema\": \"{SCHEMA}\", found {})",
                    schema.map_or("none".to_owned(), |s| format!("{s:?}"))
                ),
            });
        }
        let version = head.get("version").and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(VERSION)) {
            return Err(ResultsError::Version {
                file: file.to_owned(),
                message: format!(
                    "results schema version {} is not supported by this build (it reads \
                     version {VERSION})",
                    version.map_or("missing".to_owned(), |v| v.to_string())
                ),
            });
        }
        serde_json::from_str(text).map_err(|e| ResultsError::Parse {
            file: file.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    /// Writes the file atomically (a temporary file renamed over it), so a reader or a crash
    /// never sees half a file and the previous version survives a failed write.
    pub fn save(&self, path: &Path) -> Result<(), ResultsError> {
        let file = path.display().to_string();
        let err = |source| ResultsError::Write {
            file: file.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        write_atomic(path, &json).map_err(err)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// The machine and build a run happened on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// `git rev-parse HEAD` of the working directory, if it is a git checkout.
    pub git_sha: Option<String>,
    /// Whether the checkout had uncommitted changes.
    pub git_dirty: Option<bool>,
    /// `rustc --version` of the compiler that built the tool.
    pub rustc: String,
    /// Build profile: `release` or `debug` (debug numbers are not representative).
    pub build_profile: String,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// OS and architecture (`linux x86_64`).
    pub os: String,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// CPUs available to the process.
    pub cores: u32,
    /// Total memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Host name.
    pub hostname: Option<String>,
    /// The command line that produced the file.
    pub command: Vec<String>,
}

/// The suite as run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SuiteRecord {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// A path, `built-in:NAME`, or `command line` for `wirebench load`.
    pub source: String,
    /// The TOML text (empty for `wirebench load`).
    pub toml: String,
}

/// Latency percentiles in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Standard deviation.
    pub stdev_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// 99.99th percentile.
    pub p9999_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

/// The loopback floor: a blocking TCP ping-pong, one message in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloorRecord {
    /// Bytes each way.
    pub payload_bytes: u64,
    /// Measured seconds.
    pub duration_s: f64,
    /// CPU placement asked for (`none`, `same`, `split`).
    pub pin: String,
    /// Round-trip percentiles.
    pub latency: LatencySummary,
    /// The round-trip histogram (base64 of HdrHistogram V2 deflate, ns).
    pub histogram: String,
    /// CPUs the client thread ran on.
    pub client_cpus: Vec<usize>,
    /// CPUs the server thread ran on.
    pub server_cpus: Vec<usize>,
}

/// A load run's parameters, as run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunParams {
    /// `Unary`, `ServerStream`, `ClientStream` or `Bidi`.
    pub method: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Closed loop: calls in flight.
    pub concurrency: Option<u32>,
    /// Open loop: requests per second offered.
    pub rate: Option<f64>,
    /// Open loop: `constant` or `poisson`.
    pub schedule: Option<String>,
    /// Open loop: calls in flight at most.
    pub max_in_flight: Option<u32>,
    /// Connections in total.
    pub connections: u32,
    /// Client worker threads.
    pub workers: u32,
    /// Request payload bytes.
    pub payload_bytes: u64,
    /// Response payload bytes (`None`: echoed).
    pub response_bytes: Option<u64>,
    /// Messages per stream call.
    pub messages_per_call: u32,
    /// Warm-up seconds (discarded).
    pub warmup_s: f64,
    /// Measured seconds asked for (or `None` when a request count was asked for).
    pub duration_s: Option<f64>,
    /// Calls asked for (or `None` when a duration was asked for).
    pub requests: Option<u64>,
    /// Seed.
    pub seed: u64,
    /// Per-call deadline in seconds.
    pub timeout_s: Option<f64>,
    /// Injected stall: when (s after the warm-up) and how long (s).
    pub stall_at_s: Option<f64>,
    /// Injected stall duration (s).
    pub stall_for_s: Option<f64>,
    /// Every call's requested server delay (s), when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_delay_s: Option<f64>,
    /// CPU placement (`none`, `same`, `split`).
    pub pin: String,
    /// Client options given to the transport.
    pub client_options: BTreeMap<String, String>,
    /// Server options given to the transport.
    pub server_options: BTreeMap<String, String>,
    /// TLS between client and server: `none`, `tls` or `mtls` (files without it: `none`).
    #[serde(default = "plaintext")]
    pub tls: String,
    /// Open loop: how the generator waited for due times, `sleep` or `spin` (additive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing: Option<String>,
    /// When this generator ran one shard of a run shared by several (additive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardParams>,
}

/// One generator's share of a run made by several.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardParams {
    /// Its index, when one of `count` equal shards.
    pub index: Option<u32>,
    /// How many equal shards.
    pub count: Option<u32>,
    /// Its segment of the whole, `FROM:TO` as exact fractions (`1/3:2/3`).
    pub segment: String,
    /// Where the index came from: `--shard-index`, `JOB_COMPLETION_INDEX`, `SLURM_PROCID`,
    /// `NOMAD_ALLOC_INDEX` or `--execution-segment`.
    pub source: String,
}

fn plaintext() -> String {
    "none".into()
}

/// Where the server of a run was.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// `child` (spawned `wirebench serve`), `in-process` or `external` (`--target`).
    pub placement: String,
    /// The endpoint called.
    pub endpoint: String,
    /// Its process id, when known.
    pub pid: Option<u32>,
    /// Why it was placed so, or anything else worth saying.
    pub note: Option<String>,
}

/// CPU and memory of one process over a run's measured phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub system_s: f64,
    /// (user + system) CPU microseconds per completed call.
    pub cpu_us_per_call: f64,
    /// Peak resident set size in bytes (`VmHWM`), when known.
    pub peak_rss_bytes: Option<u64>,
    /// CPUs its threads were seen on.
    pub cpus: Vec<usize>,
    /// Caveats (e.g. the server ran inside the client process).
    pub note: Option<String>,
}

/// Bytes on the wire, counted at the client's sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WireTotals {
    /// Bytes the client wrote.
    pub sent: u64,
    /// Bytes the client read.
    pub received: u64,
    /// Sent per completed call.
    pub sent_per_call: f64,
    /// Received per completed call.
    pub received_per_call: f64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Measured seconds (from the start of the measured phase to the last answer).
    pub elapsed_s: f64,
    /// Calls completed (any status).
    pub calls: u64,
    /// Calls that ended `OK`.
    pub ok: u64,
    /// Calls that ended with another status.
    pub errors: u64,
    /// Calls still unanswered when the run gave up waiting (not in the histograms).
    pub incomplete: u64,
    /// Completed calls by status code name (`OK`, `UNAVAILABLE`, ...).
    pub status_counts: BTreeMap<String, u64>,
    /// Completed calls per second.
    pub throughput_per_s: f64,
    /// Stream messages sent by the client.
    pub messages_sent: u64,
    /// Stream messages received by the client.
    pub messages_received: u64,
    /// Messages (sent + received) per second.
    pub messages_per_s: f64,
    /// Call latency: closed loop from the call's start, open loop from its intended start
    /// (coordinated omission corrected). Every completed call, whatever its status.
    pub latency: LatencySummary,
    /// Open loop: from the actual start of the call (uncorrected service time).
    pub service_time: Option<LatencySummary>,
    /// Open loop: the generator's lag, actual minus intended send, not counting waits for
    /// a free caller.
    pub generator_lag: Option<LatencySummary>,
    /// Streams: per-message latency (bidi: round trip; server stream: gap between
    /// responses, the first from the call's start).
    pub message_latency: Option<LatencySummary>,
    /// Open loop: calls that had to wait for a free caller (`max_in_flight` reached).
    pub backpressured: u64,
    /// Open loop: every request the schedule made due, sent or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered: Option<OfferedLoad>,
    /// Bytes on the wire, when the transport counts them.
    pub bytes: Option<WireTotals>,
    /// Why `bytes` is absent: the transport's declared reason (additive, omitted when the
    /// bytes were counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_not_measured: Option<String>,
    /// With a coordinated start (`--start-at`): how far from it the run began, ms on this
    /// host's real-time clock (0: on time; positive: late, within the grace) (additive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_skew_ms: Option<f64>,
    /// What the rest of the host did during the measured phase (additive; Linux only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostLoad>,
    /// The client (load generator) process.
    pub client: ProcessUsage,
    /// The server process, when it is a separate process we can see.
    pub server: Option<ProcessUsage>,
    /// Fraction of the measured time each client worker thread was on a CPU.
    pub worker_busy: Vec<f64>,
    /// Connection setup before the warm-up: a new connection and its first 0-byte unary call
    /// (TCP/QUIC and TLS handshakes, HTTP/2 or broker session setup), several in a row.
    #[serde(default)]
    pub connect: Option<LatencySummary>,
}

/// The host during a measured phase: CPU used by processes other than the load generator, the
/// server and the brokers they started, and time a hypervisor stole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostLoad {
    /// The window measured, seconds.
    pub window_s: f64,
    /// CPUs the host has.
    pub cpus: u32,
    /// Other processes' CPU use, in CPUs (0.9 = 90 % of one CPU), interrupts left out.
    pub other_cpus: f64,
    /// Steal time summed over the CPUs, milliseconds.
    pub steal_ms: f64,
}

/// An open loop's accounting of its schedule: due = sent + unsent, and the rate achieved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OfferedLoad {
    /// The rate asked for, requests per second.
    pub rate_per_s: f64,
    /// Measured requests whose intended start came before the run closed.
    pub due: u64,
    /// Of which were sent (late ones too: their latency counts from the intended start).
    pub sent: u64,
    /// Due but never sent: no caller became free for them before the run closed. They are
    /// in no percentile of the summary.
    pub unsent: u64,
    /// Completed calls per second over the run, against `due` per second of the schedule.
    pub achieved_per_s: f64,
    /// How long each unsent request had waited when the run closed: a lower bound of the
    /// latency it would have had.
    pub unsent_wait: Option<LatencySummary>,
    /// The latency percentiles with the unsent requests counted at their lower bound (the
    /// summary's `latency` leaves them out).
    pub latency_with_unsent: Option<LatencySummary>,
}

/// Whether a run's numbers measure the transport.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Validity {
    /// False when any reason applies, or the offered load was not sustained.
    pub valid: bool,
    /// Why the run is invalid: the load generator or the run itself failed.
    pub reasons: Vec<String>,
    /// Caveats that do not invalidate it.
    pub notes: Vec<String>,
    /// Open loop: the system under test could not keep up with the offered rate ("offered
    /// 5000/s, achieved 837/s: …") — a verdict on the system, not on the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsustained: Option<String>,
}

impl Validity {
    /// The verdict in one word: `valid`, `UNSUSTAINED` or `INVALID` (the tool's failure
    /// wins: then the numbers say nothing about the system either).
    pub fn label(&self) -> &'static str {
        if self.valid {
            "valid"
        } else if self.reasons.is_empty() && self.unsustained.is_some() {
            "UNSUSTAINED"
        } else {
            "INVALID"
        }
    }

    /// Why the run is not valid, every reason in one line (empty when valid).
    pub fn why(&self) -> String {
        self.unsustained
            .iter()
            .chain(&self.reasons)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A run's full histograms (base64 of HdrHistogram V2 deflate, ns).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunHistograms {
    /// Call latency (as [`RunSummary::latency`]).
    pub latency: String,
    /// Open loop: service time.
    pub service_time: Option<String>,
    /// Open loop: generator lag.
    pub generator_lag: Option<String>,
    /// Streams: per-message latency.
    pub message_latency: Option<String>,
}

/// One second of a run (by completion time).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalRecord {
    /// Start of the interval, seconds after the measured phase began.
    pub start_s: f64,
    /// Calls completed in it.
    pub calls: u64,
    /// Of which ended with an error status.
    pub errors: u64,
    /// Latency percentiles of its calls.
    pub latency: LatencySummary,
    /// Its latency histogram (base64 V2 deflate, ns).
    pub histogram: String,
}

/// One load point against one transport.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The transport.
    pub transport: String,
    /// The load point's name.
    pub point: String,
    /// Parameters as run.
    pub params: RunParams,
    /// Where the server was.
    pub server: ServerInfo,
    /// What was measured.
    pub summary: RunSummary,
    /// Whether the numbers measure the transport.
    pub validity: Validity,
    /// Full histograms.
    pub histograms: RunHistograms,
    /// Per-second series.
    pub intervals: Vec<IntervalRecord>,
    /// When the suite repeats the point (`repeat = N`): what each repeat measured, in the order
    /// run, each with its own server. The fields above are those of one of them, the
    /// representative repeat (the valid one with the median p50). `compare` judges repeated
    /// runs by these values: their spread is the noise *between* runs, which the per-second
    /// intervals of one run cannot show.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<RepeatSummary>,
    /// The metrics whose regression fails `compare`'s gate for this point, as its suite says
    /// (`gate = [...]`); absent: every metric but p99.9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Vec<String>>,
    /// The absolute thresholds the run was held to, each with what was measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<ThresholdOutcome>,
    /// When the run is one step of a stepped schedule or of a capacity search: which series
    /// it belongs to and what was stepped (additive; absent for a fixed point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepInfo>,
    /// A ramped open loop (`stages`): each stage summarised on its own, the requests charged to
    /// the stage they were due in (additive; empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageRecord>,
}

/// One stage of a ramped open loop.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Position, from 0.
    pub index: u32,
    /// Start, seconds into the measured time.
    pub start_s: f64,
    /// Length, seconds.
    pub duration_s: f64,
    /// The rate at its start, requests/s.
    pub rate_from: f64,
    /// The rate at its end.
    pub rate_to: f64,
    /// Requests the schedule made due in it.
    pub due: u64,
    /// Of which were sent.
    pub sent: u64,
    /// Due but never sent.
    pub unsent: u64,
    /// Calls sent in it that completed (any status).
    pub completed: u64,
    /// Of which failed.
    pub errors: u64,
    /// Completed calls per second of the stage.
    pub achieved_per_s: f64,
    /// Latency of its successful calls, from their intended start.
    pub latency: LatencySummary,
    /// The generator's lag over its requests.
    pub generator_lag: LatencySummary,
    /// `valid`, `UNSUSTAINED` or `INVALID`.
    pub verdict: String,
    /// Why, when not valid.
    pub why: String,
}

/// A run's place in a stepped schedule (`--rate 1k..20k --step 5k`) or a capacity search.
/// Each step is a run of its own, with its own summary and validity; the steps of one series
/// share `series` and are drawn as one line of a latency–throughput chart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    /// The series: the stepped point's name (its runs are named `SERIES@VALUE`).
    pub series: String,
    /// What was stepped: `rate` (open loop, requests/s) or `concurrency` (closed loop).
    pub knob: String,
    /// This step's value of the knob.
    pub value: f64,
    /// Position in the order run (0 = first).
    pub index: u32,
}

/// What `wirebench capacity` found for one transport: the highest offered rate whose step met
/// the SLO, bracketed by the lowest rate that missed it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityRecord {
    /// The transport.
    pub transport: String,
    /// The series searched (its steps are the runs with this `step.series`).
    pub series: String,
    /// The SLO, as written (`p99 < 2ms`, `errors < 0.1%`).
    pub slo: Vec<String>,
    /// `found` (bracketed within the tolerance), `below-floor` (even the lowest rate tried
    /// missed), `above-ceiling` (the highest rate allowed still met it), `generator-limited`
    /// (the load generator could not offer the rate that would decide), or `interrupted`.
    pub outcome: String,
    /// The knee: the highest rate that met the SLO, requests/s.
    pub knee_per_s: Option<f64>,
    /// The lowest rate that missed it, requests/s.
    pub missed_per_s: Option<f64>,
    /// The bracket's width relative to the knee (`(missed - knee) / knee`).
    pub bracket: Option<f64>,
    /// The tolerance the search bisected to.
    pub tolerance: f64,
    /// The answer in words, with how far it can be trusted.
    pub verdict: String,
    /// Every step in the order run.
    pub steps: Vec<CapacityStep>,
    /// The SLO's first latency limit, which the report's chart plots and draws across.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_line: Option<SloLine>,
    /// The knee the search must reach (`--min-rate`, `min_rate`): below it the command fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rate_per_s: Option<f64>,
}

/// A latency limit of an SLO: which percentile, and its limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SloLine {
    /// `p50`, `p90`, `p99`, `p99.9`, `p99.99` or `max`.
    pub quantile: String,
    /// The limit, nanoseconds.
    pub limit_ns: u64,
}

impl LatencySummary {
    /// The value of a percentile named as an SLO names it (`p99`, `p99.9`, `max`).
    pub fn quantile(&self, name: &str) -> Option<u64> {
        Some(match name {
            "p50" => self.p50_ns,
            "p90" => self.p90_ns,
            "p99" => self.p99_ns,
            "p99.9" => self.p999_ns,
            "p99.99" => self.p9999_ns,
            "max" => self.max_ns,
            _ => return None,
        })
    }
}

/// One step of a capacity search.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityStep {
    /// Offered rate, requests/s.
    pub rate_per_s: f64,
    /// The run's point name (`SERIES@RATE`) in `runs`.
    pub point: String,
    /// `met`, `missed` or `unjudged` (the run was invalid: it cannot be the answer).
    pub verdict: String,
    /// Why, in words (the SLO outcomes, or what invalidated it).
    pub why: String,
    /// How many runs at this rate decided it (more than one when the first was within noise
    /// of the SLO).
    pub runs: u32,
}

/// One threshold checked against a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdOutcome {
    /// As written (`p99 < 1ms`).
    pub threshold: String,
    /// What the run measured, as people read it (`1.23 ms`), or why nothing was measured.
    pub measured: String,
    /// Whether the run kept within it (a measure the run lacks is a breach).
    pub passed: bool,
}

impl RunRecord {
    /// The thresholds the run breached.
    pub fn breaches(&self) -> impl Iterator<Item = &ThresholdOutcome> {
        self.thresholds.iter().filter(|t| !t.passed)
    }
}

/// One repeat of a repeated load point: the figures `compare` judges.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepeatSummary {
    /// Completed calls per second.
    pub throughput_per_s: f64,
    /// Median latency, ns.
    pub p50_ns: u64,
    /// 99th percentile latency, ns.
    pub p99_ns: u64,
    /// 99.9th percentile latency, ns.
    pub p999_ns: u64,
    /// Client CPU µs per call.
    pub cpu_client_us: f64,
    /// Server CPU µs per call, when the server's process was known.
    pub cpu_server_us: Option<f64>,
    /// Whether this repeat's numbers measure the transport.
    pub valid: bool,
}

impl RepeatSummary {
    /// The figures of one run.
    pub fn of(r: &RunRecord) -> RepeatSummary {
        let s = &r.summary;
        RepeatSummary {
            throughput_per_s: s.throughput_per_s,
            p50_ns: s.latency.p50_ns,
            p99_ns: s.latency.p99_ns,
            p999_ns: s.latency.p999_ns,
            cpu_client_us: s.client.cpu_us_per_call,
            cpu_server_us: s.server.as_ref().map(|u| u.cpu_us_per_call),
            valid: r.validity.valid,
        }
    }
}

impl RunRecord {
    /// For a repeated point, one line on its repeats: `median of 5 repeats (p50 29.4–49.0 µs)`.
    pub fn repeats_line(&self) -> Option<String> {
        if self.repeats.len() < 2 {
            return None;
        }
        let p50s = self.repeats.iter().map(|r| r.p50_ns);
        let (lo, hi) = (p50s.clone().min()?, p50s.max()?);
        Some(format!(
            "median of {} repeats (p50 {:.1}–{:.1} µs)",
            self.repeats.len(),
            lo as f64 / 1e3,
            hi as f64 / 1e3
        ))
    }

    /// Folds the repeats of one load point into one record: the valid repeat with the median
    /// p50 (any repeat when none is valid) carries the full record, every repeat's figures go
    /// into [`RunRecord::repeats`]. `None` for no runs; one run is returned as it is.
    pub fn from_repeats(mut runs: Vec<RunRecord>) -> Option<RunRecord> {
        if runs.len() <= 1 {
            return runs.pop();
        }
        let repeats: Vec<RepeatSummary> = runs.iter().map(RepeatSummary::of).collect();
        let mut order: Vec<usize> = (0..runs.len())
            .filter(|&i| runs[i].validity.valid)
            .collect();
        if order.is_empty() {
            order = (0..runs.len()).collect();
        }
        order.sort_by_key(|&i| runs[i].summary.latency.p50_ns);
        let pick = order[(order.len() - 1) / 2];
        // Thresholds are judged on the repeat whose figures are shown; say where the others
        // disagree.
        let mut breached: BTreeMap<String, usize> = BTreeMap::new();
        for r in &runs {
            for b in r.breaches() {
                *breached.entry(b.threshold.clone()).or_default() += 1;
            }
        }
        let n = runs.len();
        let mut rep = runs.swap_remove(pick);
        for (threshold, k) in breached {
            rep.validity.notes.push(format!(
                "threshold {threshold} breached in {k} of {n} repeats (judged on the one shown)"
            ));
        }
        let invalid = repeats.iter().filter(|r| !r.valid).count();
        if invalid > 0 && rep.validity.valid {
            rep.validity.notes.push(format!(
                "{invalid} of {} repeats invalid; the figures shown are of a valid one",
                repeats.len()
            ));
        }
        rep.repeats = repeats;
        Some(rep)
    }
}

/// A load point not run against a transport.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The transport.
    pub transport: String,
    /// The load point.
    pub point: String,
    /// The transport's declared reason.
    pub reason: String,
}

/// A load point that failed to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFailure {
    /// The transport.
    pub transport: String,
    /// The load point (or `floor`, `conformance`).
    pub point: String,
    /// The error.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Results {
        Results::new(
            "wirebench test".into(),
            "2026-01-01T00:00:00Z".into(),
            Environment::default(),
            SuiteRecord::default(),
        )
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(Results::parse(&text, "x").unwrap(), r);
    }

    #[test]
    fn foreign_and_future_files_are_refused_clearly() {
        let e = Results::parse("{\"a\": 1}", "f.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a wirebench results file"), "{e}");
        let mut v = serde_json::to_value(sample()).unwrap();
        v["version"] = 99.into();
        let e = Results::parse(&v.to_string(), "f.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 99"), "{e}");
        let e = Results::parse("{\n  \"schema\": ", "f.json")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.json:2:"), "{e}");
    }

    #[test]
    fn save_is_atomic_and_readable() {
        let dir = std::env::temp_dir().join(format!("wb-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.json");
        sample().save(&path).unwrap();
        assert_eq!(Results::load(&path).unwrap(), sample());
        assert!(!dir.join("results.json.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
