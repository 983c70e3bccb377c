//! The history of many runs: `wirebench history` keeps, in one compact versioned file
//! (`history.json`, schema `wirebench-history`), each run's headline figures per transport and
//! point, and every step where `compare` — applied to a run and the previous run *of the same
//! machine class* — said "regressed" or "improved". From it, [`site`] renders a static site of
//! trends.
//!
//! Only the latest run of each machine class is kept whole enough to compare with (its
//! records without whole-run histograms), so a new run can be appended without the old
//! results files at hand, and the file grows by a few hundred bytes per run and point.

pub mod site;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::compare::{CompareConfig, Metric, Verdict, compare};
use crate::results::{Environment, Results, ResultsError, RunHistograms, write_atomic};

/// The `schema` field of a history file.
pub const SCHEMA: &str = "wirebench-history";
/// The history schema version this build writes and reads.
pub const VERSION: u32 = 1;
/// The history file's name inside a site.
pub const FILE: &str = "history.json";

/// Every run added so far, in the order added (oldest first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// [`VERSION`].
    pub version: u32,
    /// The runs.
    pub runs: Vec<HistoryRun>,
    /// The latest run of each machine class, kept to compare the next one with.
    pub latest: BTreeMap<String, Results>,
}

/// One run in the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryRun {
    /// Unique within the site; the folder of its report (`runs/ID/report.html`).
    pub id: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// The commit it measured, when it ran in a checkout.
    pub git_sha: Option<String>,
    /// Whether the checkout had uncommitted changes.
    pub git_dirty: bool,
    /// The suite's name.
    pub suite: String,
    /// Its machine class: CPU model, cores and kernel ([`machine_class`]).
    pub machine: String,
    /// Whether every planned step ran.
    pub complete: bool,
    /// The file it was read from, as given.
    pub source: String,
    /// Its figures, one entry per transport and load point.
    pub points: Vec<PointFigures>,
    /// What `compare` said against the previous run of the same machine class.
    pub changes: Vec<Change>,
}

/// A load point's headline figures in one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointFigures {
    /// The transport.
    pub transport: String,
    /// The load point.
    pub point: String,
    /// `valid`, `INVALID` or `UNSUSTAINED`.
    pub validity: String,
    /// Calls per second.
    pub throughput_per_s: f64,
    /// Median latency (ns).
    pub p50_ns: u64,
    /// 99th percentile (ns).
    pub p99_ns: u64,
    /// Client CPU µs per call.
    pub cpu_client_us: f64,
    /// Server CPU µs per call, when seen.
    pub cpu_server_us: Option<f64>,
    /// The spread of the repeats, when the point was repeated.
    pub spread: Option<Spread>,
}

/// The lowest and highest value of each figure over a point's repeats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Repeats.
    pub repeats: usize,
    /// Throughput, calls/s.
    pub throughput_per_s: (f64, f64),
    /// p50, ns.
    pub p50_ns: (u64, u64),
    /// p99, ns.
    pub p99_ns: (u64, u64),
    /// Client CPU µs per call.
    pub cpu_client_us: (f64, f64),
}

/// A step `compare` judged beyond the threshold and the noise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The transport.
    pub transport: String,
    /// The load point.
    pub point: String,
    /// The metric (`throughput`, `p50`, ...).
    pub metric: Metric,
    /// `true` for a regression, `false` for an improvement.
    pub regressed: bool,
    /// NEW / BASE − 1.
    pub change: f64,
    /// The run it was compared with.
    pub base: String,
}

/// Figures the site draws, per metric.
impl PointFigures {
    /// The value of `metric` (latencies in ns, CPU in µs), if the run has it.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Throughput => Some(self.throughput_per_s),
            Metric::P50 => Some(self.p50_ns as f64),
            Metric::P99 => Some(self.p99_ns as f64),
            Metric::CpuClient => Some(self.cpu_client_us),
            Metric::CpuServer => self.cpu_server_us,
            Metric::P999 => None,
        }
    }

    /// The repeats' range of `metric`, when the point was repeated.
    pub fn range(&self, metric: Metric) -> Option<(f64, f64)> {
        let s = self.spread.as_ref()?;
        match metric {
            Metric::Throughput => Some(s.throughput_per_s),
            Metric::P50 => Some((s.p50_ns.0 as f64, s.p50_ns.1 as f64)),
            Metric::P99 => Some((s.p99_ns.0 as f64, s.p99_ns.1 as f64)),
            Metric::CpuClient => Some(s.cpu_client_us),
            Metric::CpuServer | Metric::P999 => None,
        }
    }
}

/// The machine class of an environment: what moves performance (CPU model, cores, kernel).
/// Runs of different classes are never compared or joined in one line.
pub fn machine_class(e: &Environment) -> String {
    format!("{} · {} cores · {}", e.cpu_model, e.cores, e.kernel)
}

impl Default for History {
    fn default() -> History {
        History {
            schema: SCHEMA.into(),
            version: VERSION,
            runs: Vec::new(),
            latest: BTreeMap::new(),
        }
    }
}

impl History {
    /// Reads a history file (its errors are a results file's: what and where).
    pub fn load(path: &Path) -> Result<History, ResultsError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Read {
            file: file.clone(),
            source,
        })?;
        let parse = |e: serde_json::Error| ResultsError::Parse {
            file: file.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        };
        let head: serde_json::Value = serde_json::from_str(&text).map_err(parse)?;
        if head.get("schema").and_then(|s| s.as_str()) != Some(SCHEMA)
            || head.get("version").and_then(serde_json::Value::as_u64) != Some(u64::from(VERSION))
        {
            return Err(ResultsError::Version {
                file,
                message: format!(
                    "not a wirebench history of version {VERSION} (expected \"schema\": \
                     \"{SCHEMA}\")"
                ),
            });
        }
        serde_json::from_str(&text).map_err(parse)
    }

    /// Writes it atomically.
    pub fn save(&self, path: &Path) -> Result<(), ResultsError> {
        let err = |source| ResultsError::Write {
            file: path.display().to_string(),
            source,
        };
        let json = serde_json::to_vec(self).map_err(|e| err(std::io::Error::other(e)))?;
        write_atomic(path, &json).map_err(err)
    }

    /// Whether a run with this start time, commit and suite is already in.
    pub fn contains(&self, r: &Results) -> bool {
        self.runs.iter().any(|h| {
            h.started_at == r.started_at
                && h.git_sha == r.environment.git_sha
                && h.suite == r.suite.name
        })
    }

    /// Adds a run: its figures, and what `compare` says against the previous run of its
    /// machine class. Returns the new run's id.
    pub fn add(&mut self, results: &Results, source: &str, cfg: &CompareConfig) -> String {
        let machine = machine_class(&results.environment);
        let id = format!(
            "{:03}-{}{}",
            self.runs.len() + 1,
            results
                .started_at
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>(),
            results
                .environment
                .git_sha
                .as_deref()
                .map(|s| format!("-{}", &s[..s.len().min(7)]))
                .unwrap_or_default()
        );
        let changes = match self.latest.get(&machine) {
            Some(base) => {
                let base_id = self
                    .runs
                    .iter()
                    .rev()
                    .find(|r| r.machine == machine)
                    .map(|r| r.id.clone())
                    .unwrap_or_default();
                changes(base, &base_id, &results.without_steps(), cfg)
            }
            None => Vec::new(),
        };
        self.runs.push(HistoryRun {
            id: id.clone(),
            started_at: results.started_at.clone(),
            git_sha: results.environment.git_sha.clone(),
            git_dirty: results.environment.git_dirty == Some(true),
            suite: results.suite.name.clone(),
            machine: machine.clone(),
            complete: results.complete,
            source: source.to_owned(),
            // A stepped series is a curve, not points to trend one by one.
            points: results.without_steps().runs.iter().map(figures).collect(),
            changes,
        });
        self.latest.insert(machine, comparable(results));
        id
    }
}

/// What compare needs of a run and nothing more: no whole-run histograms, no conformance, no
/// fault runs, no suite text.
fn comparable(r: &Results) -> Results {
    let mut r = r.without_steps().into_owned();
    r.capacity.clear();
    for run in &mut r.runs {
        run.histograms = RunHistograms::default();
    }
    r.conformance.clear();
    r.fault_runs.clear();
    r.suite.toml.clear();
    r
}

fn changes(base: &Results, base_id: &str, new: &Results, cfg: &CompareConfig) -> Vec<Change> {
    let c = compare(base, "base", new, "new", cfg);
    let mut out = Vec::new();
    for run in &c.runs {
        for m in &run.metrics {
            let regressed = match m.verdict {
                Verdict::Regressed => true,
                Verdict::Improved => false,
                _ => continue,
            };
            out.push(Change {
                transport: run.transport.clone(),
                point: run.point.clone(),
                metric: m.metric,
                regressed,
                change: m.change,
                base: base_id.to_owned(),
            });
        }
    }
    out
}

fn figures(r: &crate::results::RunRecord) -> PointFigures {
    let s = &r.summary;
    let spread = (r.repeats.len() >= 2).then(|| {
        let range_f = |f: &dyn Fn(&crate::results::RepeatSummary) -> f64| {
            r.repeats
                .iter()
                .map(f)
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
        };
        let range_u = |f: &dyn Fn(&crate::results::RepeatSummary) -> u64| {
            r.repeats
                .iter()
                .map(f)
                .fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)))
        };
        Spread {
            repeats: r.repeats.len(),
            throughput_per_s: range_f(&|x| x.throughput_per_s),
            p50_ns: range_u(&|x| x.p50_ns),
            p99_ns: range_u(&|x| x.p99_ns),
            cpu_client_us: range_f(&|x| x.cpu_client_us),
        }
    });
    PointFigures {
        transport: r.transport.clone(),
        point: r.point.clone(),
        validity: r.validity.label().to_owned(),
        throughput_per_s: s.throughput_per_s,
        p50_ns: s.latency.p50_ns,
        p99_ns: s.latency.p99_ns,
        cpu_client_us: s.client.cpu_us_per_call,
        cpu_server_us: s.server.as_ref().map(|u| u.cpu_us_per_call),
        spread,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{RunRecord, SuiteRecord, Validity};

    fn results(started: &str, cpu: &str, p50_ns: u64) -> Results {
        let mut r = Results::new(
            "t".into(),
            started.into(),
            Environment {
                cpu_model: cpu.into(),
                cores: 2,
                kernel: "6.1".into(),
                ..Environment::default()
            },
            SuiteRecord {
                name: "ci".into(),
                ..SuiteRecord::default()
            },
        );
        let mut run = RunRecord {
            transport: "tcp".into(),
            point: "p".into(),
            validity: Validity {
                valid: true,
                ..Validity::default()
            },
            ..RunRecord::default()
        };
        run.summary.latency.p50_ns = p50_ns;
        run.summary.throughput_per_s = 1000.0;
        r.runs.push(run);
        r
    }

    #[test]
    fn runs_are_compared_only_within_their_machine_class() {
        let cfg = CompareConfig::default();
        let mut h = History::default();
        h.add(&results("2026-01-01T00:00:00Z", "EPYC", 50_000), "a", &cfg);
        // Three times slower, but on another machine: nothing to say.
        h.add(&results("2026-01-02T00:00:00Z", "Xeon", 150_000), "b", &cfg);
        assert!(h.runs[1].changes.is_empty(), "{:?}", h.runs[1].changes);
        // Three times slower on the first machine: compared with its own last run.
        h.add(&results("2026-01-03T00:00:00Z", "EPYC", 150_000), "c", &cfg);
        let c = &h.runs[2].changes;
        assert!(
            c.iter()
                .any(|c| c.regressed && c.metric == Metric::P50 && c.base == h.runs[0].id),
            "{c:?}"
        );
        assert_eq!(h.latest.len(), 2);
        assert!(h.contains(&results("2026-01-03T00:00:00Z", "EPYC", 1)));
        // Ids are unique and sort in the order added.
        let mut ids: Vec<&str> = h.runs.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn a_foreign_file_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("wb-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("history.json");
        std::fs::write(&path, "{\"schema\": \"wirebench-results\", \"version\": 1}").expect("w");
        let e = History::load(&path).expect_err("not a history");
        assert!(e.to_string().contains("history.json"), "{e}");
        assert!(e.to_string().contains("not a wirebench history"), "{e}");
        let h = History::default();
        h.save(&path).expect("saved");
        assert_eq!(History::load(&path).expect("reads back"), h);
    }
}
