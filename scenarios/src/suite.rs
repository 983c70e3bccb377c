//! Suites: a TOML file that says what `wirebench run` does — conformance, the floor, and a
//! list of load points run against every transport. The format is documented in
//! `scenarios/suites/README.md`; `quick` and `ci` are built in.
//!
//! A malformed suite fails with the file, the line and column, and what was expected.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use wirebench_core::Method;
use wirebench_core::tls::TlsMode;

use crate::capacity::{CapacityPoint, SearchSpec};
use crate::faultplan::{FaultPlan, Phase, PolicyChoice, ProcessFault, ProcessTarget};
use crate::load::{Length, LoadSpec, Mode, Pacing, Ramp, RampShape, Schedule, Stage, Stall};
use crate::steps::{Knob, Place, Steps, expand, is_range};
use crate::threshold::Threshold;
use crate::units::{parse_duration, parse_rate, parse_size};

/// The built-in suites: name and TOML text.
pub const BUILTIN: &[(&str, &str)] = &[
    ("quick", include_str!("../suites/quick.toml")),
    ("ci", include_str!("../suites/ci.toml")),
];

/// Why a suite could not be loaded.
#[derive(Debug, Error)]
pub enum SuiteError {
    /// The suite file could not be read.
    #[error("cannot read suite file {file}: {source}")]
    Read {
        /// The path given.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Neither a file nor a built-in suite of that name exists.
    #[error("no suite file or built-in suite named {name:?} (built-in: {builtin})")]
    Unknown {
        /// The name given.
        name: String,
        /// The built-in names.
        builtin: String,
    },
    /// The file is not a valid suite; the position names the line and column.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file (or `built-in:NAME`).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong and what was expected.
        message: String,
    },
}

/// Options passed to one transport's client and server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransportOptions {
    /// Client options (`ClientConfig::options`).
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    /// Server options (`ServerConfig::options`, `wirebench serve --option`).
    #[serde(default)]
    pub server: BTreeMap<String, String>,
}

/// The conformance part of a suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConformanceSpec {
    /// Run conformance at all.
    pub enabled: bool,
    /// Only these cases (`None`: all).
    pub cases: Option<Vec<String>>,
}

/// The floor measurement of a suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloorSpec {
    /// Measure the floor at all.
    pub enabled: bool,
    /// Measured time.
    pub duration: Duration,
    /// Discarded warm-up.
    pub warmup: Duration,
    /// Bytes each way.
    pub payload: usize,
}

/// When a run's numbers are declared to measure the tool rather than the transport.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValiditySpec {
    /// An open-loop run whose generator lag p99 exceeds this is invalid.
    pub max_lag_p99: Duration,
    /// A run where some client worker thread was busy at least this fraction of the time
    /// is invalid (the client saturated its CPU).
    pub max_client_busy: f64,
}

impl Default for ValiditySpec {
    fn default() -> ValiditySpec {
        ValiditySpec {
            max_lag_p99: Duration::from_millis(1),
            max_client_busy: 0.95,
        }
    }
}

/// One load point of a suite.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadPoint {
    /// What to run.
    pub spec: LoadSpec,
    /// Only against these transports (`None`: all selected).
    pub transports: Option<Vec<String>>,
    /// Times the point runs against each transport, each with its own server (1: once). The
    /// spread of repeated runs is the noise between runs, which `compare` needs to tell a
    /// regression from a noisy machine.
    pub repeat: u32,
    /// The metrics whose regression fails `compare`'s gate for this point (names of
    /// [`GATE_METRICS`]); `None`: every metric but p99.9.
    pub gate: Option<Vec<String>>,
    /// Absolute limits every run of the point must keep (the suite's global ones, then the
    /// point's own or `[defaults]`'s); a breach fails the run command.
    pub thresholds: Vec<Threshold>,
    /// When the point is one step of a stepped point (`rate = "1k..20k"`, `step = "5k"`):
    /// its place in the series. A stepped point becomes one point per step.
    pub step: Option<Place>,
}

/// The metric names a point's `gate` may list (those of `wirebench compare`).
pub const GATE_METRICS: [&str; 6] = [
    "throughput",
    "p50",
    "p99",
    "p99.9",
    "cpu-client",
    "cpu-server",
];

/// The most repeats a load point may ask for.
pub const MAX_REPEAT: u32 = 50;

/// A parsed suite.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Where it came from: a path, or `built-in:NAME`.
    pub source: String,
    /// The TOML text as read (recorded in results: the suite as run).
    pub text: String,
    /// Transports to run (`None`: every transport).
    pub transports: Option<Vec<String>>,
    /// Conformance.
    pub conformance: ConformanceSpec,
    /// The floor.
    pub floor: FloorSpec,
    /// Validity thresholds.
    pub validity: ValiditySpec,
    /// Per-transport options.
    pub options: BTreeMap<String, TransportOptions>,
    /// The load points, in order.
    pub load: Vec<LoadPoint>,
    /// The fault plans (`[[fault]]`), in order.
    pub faults: Vec<FaultPlan>,
    /// The capacity searches (`[[capacity]]`), in order.
    pub capacity: Vec<CapacityPoint>,
    /// Every transport name the file writes (top level, points, plans), where it is written:
    /// the harness knows which names exist and reports an unknown one at its line.
    pub transport_names: Vec<NameAt>,
}

/// A name as written in a suite file, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAt {
    /// The name.
    pub name: String,
    /// `file:line:column` of it.
    pub at: String,
}

/// The names of a written list.
fn names(list: &Option<Vec<toml::Spanned<String>>>) -> Option<Vec<String>> {
    list.as_ref()
        .map(|l| l.iter().map(|n| n.get_ref().clone()).collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteToml {
    name: String,
    #[serde(default)]
    description: String,
    transports: Option<Vec<toml::Spanned<String>>>,
    #[serde(default)]
    conformance: ConformanceToml,
    #[serde(default)]
    floor: FloorToml,
    #[serde(default)]
    validity: ValidityToml,
    #[serde(default)]
    defaults: PointToml,
    /// Thresholds every load point must keep.
    #[serde(default)]
    thresholds: Vec<toml::Spanned<String>>,
    #[serde(default)]
    options: BTreeMap<String, TransportOptions>,
    #[serde(default)]
    load: Vec<toml::Spanned<PointToml>>,
    #[serde(default)]
    fault: Vec<toml::Spanned<FaultToml>>,
    #[serde(default)]
    capacity: Vec<toml::Spanned<CapacityToml>>,
}

/// A `[[capacity]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapacityToml {
    name: String,
    transports: Option<Vec<toml::Spanned<String>>>,
    #[serde(default)]
    slo: Vec<toml::Spanned<String>>,
    max_errors: Option<toml::Spanned<Unit>>,
    start_rate: Option<toml::Spanned<Unit>>,
    min_probe: Option<toml::Spanned<Unit>>,
    max_rate: Option<toml::Spanned<Unit>>,
    tolerance: Option<toml::Spanned<Unit>>,
    repeats: Option<u32>,
    every: Option<toml::Spanned<Unit>>,
    warmup: Option<toml::Spanned<Unit>>,
    schedule: Option<toml::Spanned<String>>,
    max_in_flight: Option<u32>,
    min_rate: Option<toml::Spanned<Unit>>,
    load: Option<toml::Spanned<PointToml>>,
}

/// A `[[fault]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultToml {
    name: String,
    transports: Option<Vec<toml::Spanned<String>>>,
    load: toml::Spanned<PointToml>,
    phases: Vec<toml::Spanned<PhaseToml>>,
    target: Option<toml::Spanned<String>>,
    policy: Option<toml::Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseToml {
    name: String,
    #[serde(rename = "for")]
    length: toml::Spanned<Unit>,
    #[serde(default)]
    faults: Vec<toml::Spanned<String>>,
    process: Option<toml::Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConformanceToml {
    #[serde(default = "yes")]
    enabled: bool,
    cases: Option<Vec<String>>,
}

impl Default for ConformanceToml {
    fn default() -> Self {
        ConformanceToml {
            enabled: true,
            cases: None,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FloorToml {
    enabled: Option<bool>,
    duration: Option<toml::Spanned<Unit>>,
    warmup: Option<toml::Spanned<Unit>>,
    payload: Option<toml::Spanned<Unit>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidityToml {
    max_lag_p99: Option<toml::Spanned<Unit>>,
    max_client_busy: Option<toml::Spanned<f64>>,
}

/// A size, rate or duration as written: a TOML number (`64`, `5000`, `2.5`) or a string
/// (`"16KiB"`, `"5k"`, `"250ms"`). Either way it goes through the one unit grammar
/// (`wirebench_core::units`), so a suite takes exactly what the command line takes.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Unit {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Unit {
    fn text(&self) -> String {
        match self {
            Unit::Int(n) => n.to_string(),
            Unit::Float(f) => f.to_string(),
            Unit::Text(s) => s.clone(),
        }
    }
}

/// A load point as written: every field optional, `[defaults]` fills the gaps.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PointToml {
    name: Option<String>,
    transports: Option<Vec<toml::Spanned<String>>>,
    method: Option<toml::Spanned<String>>,
    concurrency: Option<toml::Spanned<Unit>>,
    rate: Option<toml::Spanned<Unit>>,
    step: Option<toml::Spanned<Unit>>,
    schedule: Option<toml::Spanned<String>>,
    max_in_flight: Option<u32>,
    connections: Option<u32>,
    workers: Option<u32>,
    payload: Option<toml::Spanned<Unit>>,
    response_size: Option<toml::Spanned<Unit>>,
    messages: Option<u32>,
    warmup: Option<toml::Spanned<Unit>>,
    duration: Option<toml::Spanned<Unit>>,
    requests: Option<u64>,
    seed: Option<u64>,
    repeat: Option<u32>,
    gate: Option<Vec<String>>,
    timeout: Option<toml::Spanned<Unit>>,
    stall_at: Option<toml::Spanned<Unit>>,
    stall_for: Option<toml::Spanned<Unit>>,
    server_delay: Option<toml::Spanned<Unit>>,
    tls: Option<toml::Spanned<String>>,
    pacing: Option<toml::Spanned<String>>,
    stages: Option<toml::Spanned<Vec<StageToml>>>,
    ramp: Option<toml::Spanned<String>>,
    thresholds: Option<Vec<toml::Spanned<String>>>,
}

/// One `stages` entry as written: `{ rate = "5k", over = "10s" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageToml {
    rate: toml::Spanned<Unit>,
    over: toml::Spanned<Unit>,
}

macro_rules! pick {
    ($p:expr, $d:expr, $f:ident) => {
        $p.$f.clone().or_else(|| $d.$f.clone())
    };
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> SuiteError {
        let (line, column) = line_col(self.text, span.start);
        SuiteError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn duration(&self, v: &toml::Spanned<Unit>, what: &str) -> Result<Duration, SuiteError> {
        parse_duration(&v.get_ref().text()).map_err(|e| self.err(v.span(), format!("{what}: {e}")))
    }

    fn size(&self, v: &toml::Spanned<Unit>, what: &str) -> Result<usize, SuiteError> {
        parse_size(&v.get_ref().text()).map_err(|e| self.err(v.span(), format!("{what}: {e}")))
    }

    fn rate(&self, v: &toml::Spanned<Unit>, what: &str) -> Result<f64, SuiteError> {
        parse_rate(&v.get_ref().text()).map_err(|e| self.err(v.span(), format!("{what}: {e}")))
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

impl Suite {
    /// A built-in suite by name, or a suite file by path (anything with a `/`, ending in
    /// `.toml`, or naming an existing file).
    pub fn load(name_or_path: &str) -> Result<Suite, SuiteError> {
        let looks_like_path = name_or_path.contains('/')
            || name_or_path.ends_with(".toml")
            || Path::new(name_or_path).is_file();
        if looks_like_path {
            let text =
                std::fs::read_to_string(name_or_path).map_err(|source| SuiteError::Read {
                    file: name_or_path.to_owned(),
                    source,
                })?;
            return Suite::parse(&text, name_or_path);
        }
        match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, text)) => Suite::parse(text, &format!("built-in:{n}")),
            None => Err(SuiteError::Unknown {
                name: name_or_path.to_owned(),
                builtin: BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Parses suite TOML; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Suite, SuiteError> {
        let cx = Ctx { file, text };
        let raw: SuiteToml = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            cx.err(span, e.message().trim_end().replace('\n', "; "))
        })?;
        let floor_defaults = FloorSpec {
            enabled: true,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            payload: 64,
        };
        let floor = FloorSpec {
            enabled: raw.floor.enabled.unwrap_or(true),
            duration: match &raw.floor.duration {
                Some(d) => cx.duration(d, "floor.duration")?,
                None => floor_defaults.duration,
            },
            warmup: match &raw.floor.warmup {
                Some(d) => cx.duration(d, "floor.warmup")?,
                None => floor_defaults.warmup,
            },
            payload: match &raw.floor.payload {
                Some(p) => cx.size(p, "floor.payload")?,
                None => floor_defaults.payload,
            },
        };
        let mut validity = ValiditySpec::default();
        if let Some(d) = &raw.validity.max_lag_p99 {
            validity.max_lag_p99 = cx.duration(d, "validity.max_lag_p99")?;
        }
        if let Some(b) = &raw.validity.max_client_busy {
            let v = *b.get_ref();
            if !(v > 0.0 && v <= 1.0) {
                return Err(cx.err(
                    b.span(),
                    format!("validity.max_client_busy: expected a fraction in (0, 1], got {v}"),
                ));
            }
            validity.max_client_busy = v;
        }
        if raw.load.is_empty()
            && raw.fault.is_empty()
            && raw.capacity.is_empty()
            && !raw.conformance.enabled
        {
            return Err(cx.err(
                0..0,
                "the suite does nothing: expected at least one [[load]] point, [[capacity]] search, [[fault]] plan \
                 or conformance",
            ));
        }
        let defaults = &raw.defaults;
        let global = thresholds(&cx, &raw.thresholds, "thresholds")?;
        let mut load = Vec::with_capacity(raw.load.len());
        for (i, p) in raw.load.iter().enumerate() {
            let (mut point, steps) = resolve_point(&cx, p, defaults, i)?;
            point.thresholds.splice(0..0, global.iter().cloned());
            if load.iter().any(|l: &LoadPoint| {
                l.step.as_ref().map_or(&l.spec.name, |s| &s.series) == &point.spec.name
            }) {
                return Err(cx.err(
                    p.span(),
                    format!("load point name {:?} is used twice", point.spec.name),
                ));
            }
            match steps {
                None => load.push(point),
                // A stepped point is one point per step, each named after its value.
                Some(st) => {
                    let expanded =
                        expand(&point.spec, &st).map_err(|e| cx.err(p.span(), e.to_string()))?;
                    for step in expanded {
                        load.push(LoadPoint {
                            spec: step.spec,
                            step: Some(step.place),
                            ..point.clone()
                        });
                    }
                }
            }
        }
        let mut faults: Vec<FaultPlan> = Vec::with_capacity(raw.fault.len());
        for f in &raw.fault {
            let plan = resolve_fault(&cx, f)?;
            if faults.iter().any(|p| p.name == plan.name) {
                return Err(cx.err(
                    f.span(),
                    format!("fault plan name {:?} is used twice", plan.name),
                ));
            }
            faults.push(plan);
        }
        let mut capacity: Vec<CapacityPoint> = Vec::with_capacity(raw.capacity.len());
        for c in &raw.capacity {
            let point = resolve_capacity(&cx, c)?;
            let taken = capacity.iter().any(|p| p.name == point.name)
                || load
                    .iter()
                    .any(|l| l.step.as_ref().map_or(&l.spec.name, |s| &s.series) == &point.name);
            if taken {
                return Err(cx.err(
                    c.span(),
                    format!("capacity name {:?} is used twice", point.name),
                ));
            }
            capacity.push(point);
        }
        let mut transport_names = Vec::new();
        let lists = std::iter::once(&raw.transports)
            .chain(std::iter::once(&raw.defaults.transports))
            .chain(raw.load.iter().map(|p| &p.get_ref().transports))
            .chain(raw.fault.iter().map(|f| &f.get_ref().transports))
            .chain(raw.capacity.iter().map(|c| &c.get_ref().transports));
        for n in lists.flatten().flatten() {
            let (line, column) = line_col(text, n.span().start);
            transport_names.push(NameAt {
                name: n.get_ref().clone(),
                at: format!("{file}:{line}:{column}"),
            });
        }
        Ok(Suite {
            name: raw.name,
            description: raw.description,
            source: file.to_owned(),
            text: text.to_owned(),
            transports: names(&raw.transports),
            conformance: ConformanceSpec {
                enabled: raw.conformance.enabled,
                cases: raw.conformance.cases,
            },
            floor,
            validity,
            options: raw.options,
            load,
            faults,
            capacity,
            transport_names,
        })
    }

    /// A rough estimate of the load part per transport (for progress).
    pub fn load_estimate(&self) -> Duration {
        self.load
            .iter()
            .map(|p| p.spec.estimate())
            .sum::<Duration>()
            + self
                .faults
                .iter()
                .map(FaultPlan::estimate)
                .sum::<Duration>()
    }
}

/// A `[[capacity]]` entry: its load's shape (a `load` table without rate, concurrency or
/// length: the search sets the rate, `every` each step's length), its SLO and its search.
fn resolve_capacity(
    cx: &Ctx<'_>,
    c: &toml::Spanned<CapacityToml>,
) -> Result<CapacityPoint, SuiteError> {
    let span = c.span();
    let c = c.get_ref();
    let name = c.name.clone();
    let at = |sp: Range<usize>, msg: String| cx.err(sp, format!("capacity {name:?}: {msg}"));
    let default_load = toml::Spanned::new(span.clone(), PointToml::default());
    let load = c.load.as_ref().unwrap_or(&default_load);
    let lp = load.get_ref();
    if lp.rate.is_some()
        || lp.concurrency.is_some()
        || lp.duration.is_some()
        || lp.requests.is_some()
        || lp.warmup.is_some()
        || lp.step.is_some()
        || lp.schedule.is_some()
        || lp.max_in_flight.is_some()
        || lp.stages.is_some()
        || lp.ramp.is_some()
    {
        return Err(at(
            load.span(),
            "its load is the shape of each call (method, payload, connections, ...): the \
             search sets the rate (no stages), and every, warmup, schedule and \
             max_in_flight belong to the [[capacity]] entry itself"
                .into(),
        ));
    }
    let (mut point, _) = resolve_point(cx, load, &PointToml::default(), 0)?;
    let schedule = match &c.schedule {
        None => Schedule::Poisson,
        Some(s) => Schedule::parse(s.get_ref()).ok_or_else(|| {
            at(
                s.span(),
                format!(
                    "schedule {:?}: expected \"constant\" or \"poisson\"",
                    s.get_ref()
                ),
            )
        })?,
    };
    let rate = |v: &Option<toml::Spanned<Unit>>, what: &str, default: f64| match v {
        Some(v) => cx.rate(v, what),
        None => Ok(default),
    };
    let share = |v: &Option<toml::Spanned<Unit>>, what: &str, default: f64| match v {
        None => Ok(default),
        Some(v) => {
            let text = v.get_ref().text();
            text.trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .map(|n| n / 100.0)
                .ok_or_else(|| {
                    cx.err(
                        v.span(),
                        format!("{what}: {text:?} is not a percentage (5%)"),
                    )
                })
        }
    };
    let defaults = SearchSpec::default();
    let search = SearchSpec {
        start: rate(&c.start_rate, "start_rate", defaults.start)?,
        floor: rate(&c.min_probe, "min_probe", defaults.floor)?,
        ceiling: rate(&c.max_rate, "max_rate", defaults.ceiling)?,
        factor: defaults.factor,
        tolerance: share(&c.tolerance, "tolerance", defaults.tolerance)?,
        repeats: c.repeats.unwrap_or(defaults.repeats),
    };
    search.validate().map_err(|e| at(span.clone(), e))?;
    let limits = if c.slo.is_empty() {
        vec![Threshold::parse("p99 < 1ms").expect("a valid threshold")]
    } else {
        self::thresholds(cx, &c.slo, &format!("capacity {name:?}: slo"))?
    };
    let slo = crate::capacity::slo(&limits, share(&c.max_errors, "max_errors", 0.001)?)
        .map_err(|e| at(span.clone(), e))?;
    point.spec.name.clone_from(&name);
    point.spec.length = Length::Duration(match &c.every {
        Some(e) => cx.duration(e, "every")?,
        None => Duration::from_secs(2),
    });
    point.spec.warmup = match &c.warmup {
        Some(w) => cx.duration(w, "warmup")?,
        None => Duration::from_millis(500),
    };
    crate::capacity::open_loop(
        &mut point.spec,
        schedule,
        c.max_in_flight.unwrap_or(256),
        search.start,
    );
    point.spec.validate().map_err(|e| at(span.clone(), e.0))?;
    Ok(CapacityPoint {
        name,
        spec: point.spec,
        slo,
        search,
        min_rate: match &c.min_rate {
            Some(v) => Some(cx.rate(v, "min_rate")?),
            None => None,
        },
        transports: names(&c.transports),
    })
}

/// The per-call deadline of a fault plan when its load sets none: long enough for any
/// healthy call here, short enough that a call lost to a fault is counted within its phase.
const FAULT_CALL_TIMEOUT: Duration = Duration::from_secs(1);

fn resolve_fault(cx: &Ctx<'_>, f: &toml::Spanned<FaultToml>) -> Result<FaultPlan, SuiteError> {
    let span = f.span();
    let f = f.get_ref();
    let name = f.name.clone();
    let at = |sp: Range<usize>, msg: String| cx.err(sp, format!("fault plan {name:?}: {msg}"));
    let lp = f.load.get_ref();
    if lp.rate.is_none() {
        return Err(at(
            f.load.span(),
            "load needs a rate: fault plans run an open loop (requests keep arriving while \
             the fault is on)"
                .into(),
        ));
    }
    if lp.duration.is_some() || lp.requests.is_some() || lp.stall_at.is_some() {
        return Err(at(
            f.load.span(),
            "load sets its own length or stall; a fault plan's length is the sum of its phases"
                .into(),
        ));
    }
    if lp.name.is_some() || lp.transports.is_some() {
        return Err(at(
            f.load.span(),
            "name and transports belong to the plan, not to its load".into(),
        ));
    }
    if lp.thresholds.is_some() {
        return Err(at(
            f.load.span(),
            "thresholds apply to load points; a fault plan is judged by its phases and \
             recovery"
                .into(),
        ));
    }
    let (mut point, steps) = resolve_point(cx, &f.load, &PointToml::default(), 0)?;
    if steps.is_some() || point.spec.ramp.is_some() {
        return Err(at(
            span.clone(),
            "a fault plan's load is one level, not a range or a ramp (its phases are its \
             steps)"
                .into(),
        ));
    }
    point.spec.name.clone_from(&name);
    if f.phases.is_empty() {
        return Err(at(span, "expected at least one phase".into()));
    }
    let mut phases: Vec<Phase> = Vec::with_capacity(f.phases.len());
    for ph in &f.phases {
        let psp = ph.span();
        let ph = ph.get_ref();
        let duration = cx.duration(&ph.length, "phase length (for)")?;
        if duration.is_zero() {
            return Err(at(
                ph.length.span(),
                format!("phase {:?} lasts 0 s", ph.name),
            ));
        }
        if phases.iter().any(|p| p.name == ph.name) {
            return Err(at(psp, format!("phase name {:?} is used twice", ph.name)));
        }
        let mut faults = Vec::with_capacity(ph.faults.len());
        for spec in &ph.faults {
            // The proxy's own parser: a suite accepts exactly what `wirebench proxy` does.
            let fault = crate::faultspec::parse(spec.get_ref())
                .map_err(|e| at(spec.span(), format!("phase {:?}: {e}", ph.name)))?;
            faults.push(fault);
        }
        let process = match &ph.process {
            None => None,
            Some(p) => Some(ProcessFault::parse(p.get_ref()).ok_or_else(|| {
                at(
                    p.span(),
                    format!(
                        "phase {:?}: process {:?}: expected \"kill\" or \"pause\"",
                        ph.name,
                        p.get_ref()
                    ),
                )
            })?),
        };
        phases.push(Phase {
            name: ph.name.clone(),
            duration,
            faults,
            specs: ph.faults.iter().map(|s| s.get_ref().clone()).collect(),
            process,
        });
    }
    if !phases[0].is_clean() {
        return Err(at(
            f.phases[0].span(),
            "the first phase must be clean (no faults, no process fault): it is the baseline \
             every later phase is compared with"
                .into(),
        ));
    }
    let target = match &f.target {
        None => ProcessTarget::Server,
        Some(t) => match t.get_ref().as_str() {
            "server" => ProcessTarget::Server,
            "broker" => ProcessTarget::Broker,
            other => {
                return Err(at(
                    t.span(),
                    format!("target {other:?}: expected \"server\" or \"broker\""),
                ));
            }
        },
    };
    let policy = match &f.policy {
        None => PolicyChoice::None,
        Some(v) => match v.get_ref() {
            toml::Value::String(s) if s == "none" => PolicyChoice::None,
            toml::Value::Table(t) => {
                let mut config = t.clone();
                let also_without = match config.remove("runs") {
                    None => true,
                    Some(toml::Value::String(r)) if r == "both" => true,
                    Some(toml::Value::String(r)) if r == "with" => false,
                    Some(other) => {
                        return Err(at(
                            v.span(),
                            format!("policy.runs = {other}: expected \"both\" or \"with\""),
                        ));
                    }
                };
                PolicyChoice::With {
                    also_without,
                    config,
                }
            }
            other => {
                return Err(at(
                    v.span(),
                    format!(
                        "policy = {other}: expected \"none\" or a table of policy settings \
                         (with runs = \"both\" or \"with\")"
                    ),
                ));
            }
        },
    };
    let mut load = point.spec;
    load.length = Length::Duration(phases.iter().map(|p| p.duration).sum());
    load.timeout = Some(load.timeout.unwrap_or(FAULT_CALL_TIMEOUT));
    if lp.warmup.is_none() {
        // A short warm-up: enough to open the connections, not to dominate a short plan.
        load.warmup = Duration::from_millis(500);
    }
    Ok(FaultPlan {
        name,
        transports: names(&f.transports),
        load,
        phases,
        target,
        policy,
    })
}

/// A suite's load point, and its steps when it is stepped (the caller expands them).
fn resolve_point(
    cx: &Ctx<'_>,
    p: &toml::Spanned<PointToml>,
    d: &PointToml,
    index: usize,
) -> Result<(LoadPoint, Option<Steps>), SuiteError> {
    let span = p.span();
    let p = p.get_ref();
    let name = pick!(p, d, name).unwrap_or_else(|| format!("load-{}", index + 1));
    let at = |msg: String| cx.err(span.clone(), format!("load point {name:?}: {msg}"));
    let method = match pick!(p, d, method) {
        None => Method::Unary,
        Some(m) => match Method::parse(m.get_ref()) {
            Some(method) => method,
            None => {
                return Err(cx.err(
                    m.span(),
                    format!(
                        "method {:?}: expected unary, server-stream, client-stream or bidi",
                        m.get_ref()
                    ),
                ));
            }
        },
    };
    let connections = pick!(p, d, connections).unwrap_or(1);
    let workers = pick!(p, d, workers).unwrap_or(1);
    // A point's own `rate` or `concurrency` decides its loop; defaults fill in only when the
    // point has neither.
    let (rate, concurrency) = if p.rate.is_some() || p.concurrency.is_some() {
        (p.rate.clone(), p.concurrency.clone())
    } else {
        (d.rate.clone(), d.concurrency.clone())
    };
    let step = pick!(p, d, step);
    let step_text = step.as_ref().map(|s| s.get_ref().text());
    let mut steps = None;
    // A range (`1k..20k`, `1..64`) is stepped: read with `step`, the loop's first value is
    // the range's.
    let mut stepped = |v: &toml::Spanned<Unit>, knob: Knob| -> Result<Option<f64>, SuiteError> {
        let text = v.get_ref().text();
        if !is_range(&text) {
            return Ok(None);
        }
        let st = Steps::parse(knob, &text, step_text.as_deref()).map_err(|e| {
            cx.err(
                v.span(),
                format!("load point {name:?}: {} {e}", knob.name()),
            )
        })?;
        steps = Some(st);
        Ok(Some(st.from))
    };
    let mode = match (rate, concurrency) {
        (Some(_), Some(_)) => {
            return Err(at(
                "has both rate (open loop) and concurrency (closed loop); expected one".into(),
            ));
        }
        (Some(r), None) => {
            let rate = match stepped(&r, Knob::Rate)? {
                Some(first) => first,
                None => cx.rate(&r, "rate")?,
            };
            let schedule = match pick!(p, d, schedule) {
                None => Schedule::Poisson,
                Some(s) => Schedule::parse(s.get_ref()).ok_or_else(|| {
                    cx.err(
                        s.span(),
                        format!(
                            "schedule {:?}: expected \"constant\" or \"poisson\"",
                            s.get_ref()
                        ),
                    )
                })?,
            };
            Mode::Open {
                rate,
                schedule,
                max_in_flight: pick!(p, d, max_in_flight).unwrap_or(1024),
            }
        }
        (None, Some(c)) => {
            let concurrency = match stepped(&c, Knob::Concurrency)? {
                Some(first) => first as u32,
                None => match c.get_ref() {
                    Unit::Int(n) if *n > 0 && *n <= i64::from(u32::MAX) => *n as u32,
                    other => {
                        return Err(cx.err(
                            c.span(),
                            format!(
                                "load point {name:?}: concurrency {:?}: expected a positive \
                                 whole number, or a range to step through (\"1..64\")",
                                other.text()
                            ),
                        ));
                    }
                },
            };
            Mode::Closed { concurrency }
        }
        (None, None) => Mode::Closed {
            concurrency: connections,
        },
    };
    if let (None, Some(s)) = (&steps, &step) {
        return Err(cx.err(
            s.span(),
            format!(
                "load point {name:?}: step needs a range to step through (rate = \"1k..20k\" \
                 or concurrency = \"1..64\")"
            ),
        ));
    }
    // A point's own length wins; `[defaults]` fills in only when it has none.
    let length = match (&p.duration, p.requests) {
        (Some(_), Some(_)) => {
            return Err(at("has both duration and requests; expected one".into()));
        }
        (Some(dur), None) => Length::Duration(cx.duration(dur, "duration")?),
        (None, Some(n)) => Length::Requests(n),
        (None, None) => match (&d.duration, d.requests) {
            (_, Some(n)) => Length::Requests(n),
            (Some(dur), None) => Length::Duration(cx.duration(dur, "defaults.duration")?),
            (None, None) => Length::Duration(Duration::from_secs(5)),
        },
    };
    let stall = match (pick!(p, d, stall_at), pick!(p, d, stall_for)) {
        (Some(a), Some(f)) => Some(Stall {
            at: cx.duration(&a, "stall_at")?,
            duration: cx.duration(&f, "stall_for")?,
        }),
        (None, None) => None,
        _ => return Err(at("stall_at and stall_for go together".into())),
    };
    let ramp = match pick!(p, d, stages) {
        None => {
            if let Some(r) = pick!(p, d, ramp) {
                return Err(cx.err(r.span(), format!("load point {name:?}: ramp needs stages")));
            }
            None
        }
        Some(st) => {
            if p.duration.is_some() || p.requests.is_some() {
                return Err(at(
                    "has stages and a duration or requests: a ramp lasts its stages".into(),
                ));
            }
            let shape = match pick!(p, d, ramp) {
                None => RampShape::Linear,
                Some(r) => RampShape::parse(r.get_ref()).ok_or_else(|| {
                    cx.err(
                        r.span(),
                        format!(
                            "load point {name:?}: ramp {:?}: expected \"linear\" or \"step\"",
                            r.get_ref()
                        ),
                    )
                })?,
            };
            let mut stages = Vec::new();
            for stage in st.get_ref() {
                let rate = match stage.rate.get_ref() {
                    Unit::Int(0) => 0.0,
                    _ => cx.rate(&stage.rate, "stages.rate")?,
                };
                stages.push(Stage {
                    rate,
                    over: cx.duration(&stage.over, "stages.over")?,
                });
            }
            Some(Ramp { shape, stages })
        }
    };
    let length = match &ramp {
        Some(r) => Length::Duration(r.total()),
        None => length,
    };
    let spec = LoadSpec {
        name: name.clone(),
        method,
        mode,
        connections,
        workers,
        payload: match pick!(p, d, payload) {
            Some(s) => cx.size(&s, "payload")?,
            None => 64,
        },
        response_size: match pick!(p, d, response_size) {
            Some(s) => Some(cx.size(&s, "response_size")?),
            None => None,
        },
        messages: pick!(p, d, messages).unwrap_or(if method == Method::Unary { 1 } else { 10 }),
        warmup: match pick!(p, d, warmup) {
            Some(w) => cx.duration(&w, "warmup")?,
            None => Duration::from_secs(1),
        },
        length,
        seed: pick!(p, d, seed).unwrap_or(1),
        timeout: match pick!(p, d, timeout) {
            Some(t) => Some(cx.duration(&t, "timeout")?),
            None => None,
        },
        stall,
        server_delay: match pick!(p, d, server_delay) {
            Some(t) => cx.duration(&t, "server_delay")?,
            None => Duration::ZERO,
        },
        tls: match pick!(p, d, tls) {
            None => TlsMode::None,
            Some(t) => t
                .get_ref()
                .parse()
                .map_err(|e: wirebench_core::tls::UnknownTlsMode| {
                    cx.err(t.span(), format!("load point {name:?}: tls: {e}"))
                })?,
        },
        pacing: match pick!(p, d, pacing) {
            None => Pacing::Sleep,
            Some(v) => Pacing::parse(v.get_ref()).ok_or_else(|| {
                cx.err(
                    v.span(),
                    format!(
                        "load point {name:?}: pacing {:?}: expected \"sleep\" or \"spin\"",
                        v.get_ref()
                    ),
                )
            })?,
        },
        ramp,
    };
    spec.validate().map_err(|e| at(e.0))?;
    let repeat = pick!(p, d, repeat).unwrap_or(1);
    if !(1..=MAX_REPEAT).contains(&repeat) {
        return Err(at(format!(
            "repeat: expected 1 to {MAX_REPEAT} runs, got {repeat}"
        )));
    }
    let gate = pick!(p, d, gate);
    if let Some(bad) = gate
        .iter()
        .flatten()
        .find(|m| !GATE_METRICS.contains(&m.as_str()))
    {
        return Err(at(format!(
            "gate: unknown metric {bad:?}; expected some of {}",
            GATE_METRICS.join(", ")
        )));
    }
    let thresholds = match pick!(p, d, thresholds) {
        Some(list) => self::thresholds(cx, &list, &format!("load point {name:?}: thresholds"))?,
        None => Vec::new(),
    };
    Ok((
        LoadPoint {
            spec,
            transports: names(&pick!(p, d, transports)),
            repeat,
            gate,
            thresholds,
            step: None,
        },
        steps,
    ))
}

/// Parses a `thresholds` list, each error at its own line.
fn thresholds(
    cx: &Ctx<'_>,
    list: &[toml::Spanned<String>],
    key: &str,
) -> Result<Vec<Threshold>, SuiteError> {
    list.iter()
        .map(|t| Threshold::parse(t.get_ref()).map_err(|e| cx.err(t.span(), format!("{key}: {e}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_suites_parse() {
        for (name, _) in BUILTIN {
            let s = Suite::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&s.name, name);
            assert!(!s.load.is_empty());
        }
    }

    #[test]
    fn defaults_fill_points() {
        let s = Suite::parse(
            r#"
name = "t"
[defaults]
payload = "1KiB"
duration = "2s"
warmup = "0s"
[[load]]
name = "a"
concurrency = 4
[[load]]
name = "b"
rate = 100
schedule = "constant"
requests = 50
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(s.load[0].spec.payload, 1024);
        assert_eq!(s.load[0].spec.mode, Mode::Closed { concurrency: 4 });
        assert_eq!(
            s.load[0].spec.length,
            Length::Duration(Duration::from_secs(2))
        );
        assert_eq!(s.load[1].spec.length, Length::Requests(50));
        assert!(matches!(
            s.load[1].spec.mode,
            Mode::Open {
                schedule: Schedule::Constant,
                ..
            }
        ));
    }

    fn err(text: &str) -> String {
        Suite::parse(text, "bad.toml").unwrap_err().to_string()
    }

    #[test]
    fn stepped_points_become_one_point_per_step() {
        let s = Suite::parse(
            r#"
name = "t"
[[load]]
name = "ramp"
rate = "1k..3k"
step = "1k"
duration = "1s"
[[load]]
name = "fan"
concurrency = "1..4"
step = "x2"
"#,
            "t.toml",
        )
        .unwrap();
        let names: Vec<&str> = s.load.iter().map(|p| p.spec.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ramp@1k/s",
                "ramp@2k/s",
                "ramp@3k/s",
                "fan@1",
                "fan@2",
                "fan@4"
            ]
        );
        let third = s.load[2].step.as_ref().unwrap();
        assert_eq!((third.series.as_str(), third.index), ("ramp", 2));
        assert!(matches!(s.load[2].spec.mode, Mode::Open { rate, .. } if rate == 3000.0));
        assert_eq!(s.load[5].spec.mode, Mode::Closed { concurrency: 4 });
        assert_eq!(
            s.load[5].spec.length,
            Length::Duration(Duration::from_secs(5))
        );
        // Errors name the line and what is wrong.
        let e = err("name = \"x\"\n[[load]]\nrate = 5\nstep = \"1k\"\n");
        assert!(
            e.contains("bad.toml:4") && e.contains("step needs a range"),
            "{e}"
        );
        let e = err("name = \"x\"\n[[load]]\nrate = \"5k..1k\"\nstep = \"1k\"\n");
        assert!(e.contains("bad.toml:3") && e.contains("must rise"), "{e}");
        let e = err("name = \"x\"\n[[load]]\nconcurrency = \"many\"\n");
        assert!(e.contains("positive whole number"), "{e}");
        let e = err(
            "name = \"x\"\n[[load]]\nname = \"r\"\nrate = \"1k..2k\"\nstep = \"1k\"\n[[load]]\nname = \"r\"\nrate = 5\n",
        );
        assert!(e.contains("used twice"), "{e}");
    }

    #[test]
    fn capacity_entries_parse_with_defaults_and_refuse_what_is_not_theirs() {
        let s = Suite::parse(
            r#"
name = "t"
[[capacity]]
name = "knee"
slo = ["p99 < 2ms", "p99.9 < 10ms"]
max_errors = "0.5%"
tolerance = "10%"
min_rate = "20k"
load = { method = "bidi", payload = "1KiB", connections = 4 }
"#,
            "t.toml",
        )
        .unwrap();
        let c = &s.capacity[0];
        assert_eq!(c.name, "knee");
        assert_eq!(c.slo_text(), "p99 < 2ms, p99.9 < 10ms, errors <= 0.5%");
        assert_eq!((c.search.tolerance, c.min_rate), (0.1, Some(20_000.0)));
        assert_eq!((c.spec.method, c.spec.payload), (Method::Bidi, 1024));
        assert!(matches!(
            c.spec.mode,
            Mode::Open {
                max_in_flight: 256,
                ..
            }
        ));
        assert_eq!(c.spec.length, Length::Duration(Duration::from_secs(2)));
        assert_eq!(c.step(5000.0).name, "knee@5k/s");
        let e = err("name = \"x\"\n[[capacity]]\nname = \"k\"\nload = { rate = 5 }\n");
        assert!(
            e.contains("bad.toml:4") && e.contains("the search sets the rate"),
            "{e}"
        );
        let e = err("name = \"x\"\n[[capacity]]\nname = \"k\"\nslo = [\"throughput > 5\"]\n");
        assert!(e.contains("limits latency"), "{e}");
        let e = err("name = \"x\"\n[[capacity]]\nname = \"k\"\ntolerance = \"0.1%\"\n");
        assert!(e.contains("between 1% and 50%"), "{e}");
        let e = err("name = \"x\"\n[[capacity]]\nname = \"k\"\nmax_rate = \"5\"\n");
        assert!(e.contains("start_rate (1k/s) <= max_rate (5/s)"), "{e}");
    }

    #[test]
    fn ramps_parse_their_stages_and_last_as_long_as_them() {
        let s = Suite::parse(
            r#"
name = "t"
[[load]]
name = "ramp"
rate = "1k"
stages = [{ rate = "10k", over = "5s" }, { rate = 0, over = "1s" }]
"#,
            "t.toml",
        )
        .unwrap();
        let spec = &s.load[0].spec;
        let ramp = spec.ramp.as_ref().unwrap();
        assert_eq!(ramp.shape, RampShape::Linear);
        assert_eq!(ramp.stages[1].rate, 0.0);
        assert_eq!(spec.length, Length::Duration(Duration::from_secs(6)));
        let segs = ramp.segments(1000.0);
        assert_eq!((segs[0].from, segs[0].to), (1000.0, 10_000.0));
        assert_eq!(segs[0].due(), 27_500.0);
        let e = err(
            "name = \"x\"\n[[load]]\nrate = 5\nduration = \"1s\"\nstages = [{ rate = 5, over = \"1s\" }]\n",
        );
        assert!(e.contains("a ramp lasts its stages"), "{e}");
        let e = err(
            "name = \"x\"\n[[load]]\nconcurrency = 1\nstages = [{ rate = 5, over = \"1s\" }]\n",
        );
        assert!(e.contains("give a rate"), "{e}");
        let e = err("name = \"x\"\n[[load]]\nrate = 5\nramp = \"step\"\n");
        assert!(e.contains("ramp needs stages"), "{e}");
    }

    #[test]
    fn repeat_defaults_to_once_and_is_bounded() {
        let s = Suite::parse(
            "name = \"t\"\n[defaults]\nrepeat = 5\n[[load]]\nname = \"a\"\n\
             [[load]]\nname = \"b\"\nrepeat = 1\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!((s.load[0].repeat, s.load[1].repeat), (5, 1));
        let s = Suite::parse("name = \"t\"\n[[load]]\nname = \"a\"\n", "t.toml").unwrap();
        assert_eq!(s.load[0].repeat, 1);
        let t = err(
            "name = \"t\"\nthresholds = [\"p99 < 1ms\", \"p99 < soon\"]\n[[load]]\nname = \"a\"\n",
        );
        assert!(
            t.contains("bad.toml:2") && t.contains("threshold \"p99 < soon\": a latency limit"),
            "{t}"
        );
        let t = err("name = \"t\"\n[[load]]\nname = \"a\"\nthresholds = [\"errors < 5\"]\n");
        assert!(
            t.contains("bad.toml:4") && t.contains("load point \"a\": thresholds:"),
            "{t}"
        );
        let s = Suite::parse(
            "name = \"t\"\nthresholds = [\"p99 < 1ms\"]\n[defaults]\nthresholds = [\"errors < 1%\"]\n\
             [[load]]\nname = \"a\"\n[[load]]\nname = \"b\"\nthresholds = [\"p50 < 1ms\"]\n",
            "t.toml",
        )
        .unwrap();
        let texts = |i: usize| -> Vec<&str> {
            s.load[i]
                .thresholds
                .iter()
                .map(|t| t.text.as_str())
                .collect()
        };
        assert_eq!(texts(0), ["p99 < 1ms", "errors < 1%"]);
        assert_eq!(texts(1), ["p99 < 1ms", "p50 < 1ms"]);
        let g = err("name = \"t\"\n[[load]]\nname = \"a\"\ngate = [\"p42\"]\n");
        assert!(g.contains("gate: unknown metric \"p42\""), "{g}");
        let e = err("name = \"t\"\n[[load]]\nname = \"a\"\nrepeat = 0\n");
        assert!(
            e.contains("bad.toml:2") && e.contains("repeat: expected 1 to 50"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_line_and_expectation() {
        let e = err("name = \"x\"\n[[load]]\nname = \"a\"\nrate = 0\n");
        assert!(e.starts_with("bad.toml:4:"), "{e}");
        assert!(e.contains("positive"), "{e}");

        let e = err("name = \"x\"\n[[load]]\nname = \"a\"\nconcurency = 3\n");
        assert!(e.starts_with("bad.toml:4:"), "{e}");
        assert!(e.contains("concurency") && e.contains("expected"), "{e}");

        let e = err("name = \"x\"\n\n[[load]]\nmethod = \"teleport\"\n");
        assert!(e.starts_with("bad.toml:4:"), "{e}");
        assert!(e.contains("bidi"), "{e}");

        let e = err("name = \"x\"\n[[load]]\nduration = \"3 parsecs\"\n");
        assert!(e.starts_with("bad.toml:3:"), "{e}");

        let e = err("name = [\n");
        assert!(e.starts_with("bad.toml:"), "{e}");

        let e = err("name = \"x\"\n[[load]]\nrate = 5\nconcurrency = 2\n");
        assert!(e.contains("both rate"), "{e}");

        let e = err("name = \"x\"\n[[load]]\nconcurrency = 1\ntls = \"ssl3\"\n");
        assert!(e.starts_with("bad.toml:4:"), "{e}");
        assert!(e.contains("ssl3") && e.contains("mtls"), "{e}");

        let e = err("name = \"x\"\n[[load]]\nconcurrency = 1\nconnections = 2\n");
        assert!(
            e.starts_with("bad.toml:2:") && e.contains("connections"),
            "{e}"
        );
    }

    const PLAN: &str = r#"name = "x"
[conformance]
enabled = false
[[fault]]
name = "reset"
transports = ["tcp"]
load = { rate = 200, payload = 64 }
phases = [ { name = "clean", for = "1s" },
           { name = "fault", for = "2s", faults = ["reset:p=0.5", "latency:50ms,dir=down"] },
           { name = "crash", for = "1s", process = "kill" },
           { name = "healed", for = "1s" } ]
policy = { runs = "both", retry = { max = 3 } }
"#;

    #[test]
    fn fault_plans_parse() {
        let s = Suite::parse(PLAN, "t.toml").unwrap();
        let p = &s.faults[0];
        assert_eq!(p.name, "reset");
        assert_eq!(p.phases.len(), 4);
        assert_eq!(p.duration(), Duration::from_secs(5));
        assert_eq!(p.load.length, Length::Duration(Duration::from_secs(5)));
        assert_eq!(p.load.timeout, Some(Duration::from_secs(1)));
        assert!(matches!(p.load.mode, Mode::Open { rate, .. } if rate == 200.0));
        assert_eq!(p.phases[1].faults.len(), 2);
        assert_eq!(p.phases[2].process, Some(ProcessFault::Kill));
        assert_eq!(
            p.phase_starts(),
            [0, 1, 3, 4].map(Duration::from_secs).to_vec()
        );
        match &p.policy {
            PolicyChoice::With {
                also_without,
                config,
            } => {
                assert!(also_without);
                assert!(config.contains_key("retry") && !config.contains_key("runs"));
            }
            PolicyChoice::None => panic!("policy lost"),
        }
    }

    #[test]
    fn bad_fault_plans_fail_with_position() {
        let bad = |from: &str, to: &str| err(&PLAN.replace(from, to));
        let e = bad("reset:p=0.5", "teleport:5ms");
        assert!(
            e.starts_with("bad.toml:9:") && e.contains("unknown fault"),
            "{e}"
        );
        let e = bad("reset:p=0.5", "reset:p=1.5");
        assert!(
            e.starts_with("bad.toml:9:") && e.contains("outside [0, 1]"),
            "{e}"
        );
        let e = bad("latency:50ms", "latency:-50ms");
        assert!(
            e.starts_with("bad.toml:9:") && e.contains("negative"),
            "{e}"
        );
        let e = bad("\"kill\"", "\"explode\"");
        assert!(e.starts_with("bad.toml:10:") && e.contains("pause"), "{e}");
        let e = bad("rate = 200, ", "");
        assert!(
            e.starts_with("bad.toml:7:") && e.contains("open loop"),
            "{e}"
        );
        let e = bad(
            "{ name = \"clean\", for = \"1s\" }",
            "{ name = \"clean\", for = \"1s\", faults = [\"refuse\"] }",
        );
        assert!(e.contains("first phase must be clean"), "{e}");
        let e = bad("for = \"2s\"", "for = \"soon\"");
        assert!(e.starts_with("bad.toml:9:"), "{e}");
        let e = bad("runs = \"both\"", "runs = \"sometimes\"");
        assert!(e.starts_with("bad.toml:12:") && e.contains("with"), "{e}");
    }

    #[test]
    fn unknown_names_list_builtins() {
        let e = Suite::load("nonesuch").unwrap_err().to_string();
        assert!(e.contains("quick") && e.contains("ci"), "{e}");
        let e = Suite::load("/nonexistent/x.toml").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }
}
