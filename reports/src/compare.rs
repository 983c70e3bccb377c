//! `compare BASE NEW`: decides, run by run and metric by metric, whether NEW regressed against
//! BASE — with the machine's noise in mind.
//!
//! A metric counts as changed only when its change is larger than the threshold **and**
//! outside the noise. The change is measured as a factor, the same either way (1.25x worse or
//! 1.25x better against a 25 % threshold), so a fix that undoes a regression is as large as it. The noise comes from each run's own per-second intervals: their
//! histograms are resampled with replacement (a bootstrap over intervals, merging the drawn
//! intervals' histograms losslessly) to get a confidence interval for the ratio NEW/BASE; the
//! change is significant only when that interval excludes 1. Without intervals to resample
//! (runs shorter than two seconds, and CPU per call, which `/proc` gives per run only) the
//! change must exceed the threshold plus a noise allowance instead: the threshold again for
//! rates and latencies, `/proc`'s 10 ms tick resolution for CPU; the table says "no spread".
//! Runs whose parameters differ, or that are invalid on either side, are listed, not judged —
//! and a gate that judged less than it was given fails ([`Comparison::shortfalls`]): nothing
//! in common, a BASE run missing from NEW, a run not judged, unless partial comparisons are
//! allowed. A NEW run that no longer sustains the open-loop rate its BASE sustained is a
//! regression in itself. Files from different machines (CPU model, cores, kernel) are compared
//! with a loud warning ([`Comparison::machine`]).
//!
//! Repeated runs (a suite's `repeat = N`, at least [`MIN_REPEATS`] valid on each side) are
//! judged differently, because on a shared machine the spread *between* runs (a fresh server,
//! another moment of the host) is several times the spread *within* one: the values are the
//! medians of the repeats, and a change counts only when it exceeds the threshold **and** a
//! one-sided exact Mann–Whitney rank test over the repeats says NEW is worse (or better) with
//! p at most [`CompareConfig::rank_alpha`] (5 against 5 repeats: at most one of the 25 pairs
//! out of order).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::histogram;
use crate::results::{RepeatSummary, Results, RunRecord};

/// What is compared for every run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Calls per second (higher is better).
    Throughput,
    /// Median latency.
    P50,
    /// 99th percentile latency.
    P99,
    /// 99.9th percentile latency.
    P999,
    /// Client CPU µs per call.
    CpuClient,
    /// Server CPU µs per call.
    CpuServer,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 6] = [
        Metric::Throughput,
        Metric::P50,
        Metric::P99,
        Metric::P999,
        Metric::CpuClient,
        Metric::CpuServer,
    ];

    /// Its name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::P50 => "p50",
            Metric::P99 => "p99",
            Metric::P999 => "p99.9",
            Metric::CpuClient => "cpu-client",
            Metric::CpuServer => "cpu-server",
        }
    }

    /// Parses a name printed by [`Metric::name`].
    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s)
    }

    fn higher_is_better(self) -> bool {
        self == Metric::Throughput
    }

    /// The default threshold: tails move more than medians between clean runs. Set from 21
    /// consecutive clean runs of the `ci` suite (5 repeats each) on a shared 2-vCPU VM
    /// (2026-12-03): between consecutive runs, medians of repeats moved by up to 19 %
    /// (throughput, p50, CPU per call) and p99 by up to 41 % at one call in flight.
    pub fn default_threshold(self) -> f64 {
        match self {
            Metric::Throughput | Metric::P50 => 0.25,
            Metric::P99 | Metric::P999 => 0.50,
            Metric::CpuClient | Metric::CpuServer => 0.25,
        }
    }

    /// Whether a regression of this metric fails the gate unless a suite or `--gate` says
    /// otherwise: p99.9 is reported but not gated, because between clean runs of one build it
    /// moved by up to 4x (a few host preemptions in a few thousand calls make it).
    pub fn gated_by_default(self) -> bool {
        self != Metric::P999
    }

    fn quantile(self) -> Option<f64> {
        match self {
            Metric::P50 => Some(0.5),
            Metric::P99 => Some(0.99),
            Metric::P999 => Some(0.999),
            _ => None,
        }
    }
}

/// How to decide.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareConfig {
    /// Relative change that matters, per metric (0.15 = 15 %).
    pub thresholds: BTreeMap<Metric, f64>,
    /// Confidence of the bootstrap interval (0.95).
    pub confidence: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Seed of the bootstrap (decisions are reproducible).
    pub seed: u64,
    /// Repeated runs: the one-sided p-value of the rank test at or below which a change
    /// beyond the threshold counts.
    pub rank_alpha: f64,
    /// The metrics whose regression fails the gate, for every run (`None`: each run's own list
    /// from its suite, else every metric [`Metric::gated_by_default`]). The others are still
    /// judged and shown.
    pub gate: Option<Vec<Metric>>,
}

/// Valid repeats needed on each side to judge by the rank test (3 against 3 can reach
/// p = 0.05 at best).
pub const MIN_REPEATS: usize = 3;

impl Default for CompareConfig {
    fn default() -> CompareConfig {
        CompareConfig {
            thresholds: Metric::ALL
                .into_iter()
                .map(|m| (m, m.default_threshold()))
                .collect(),
            confidence: 0.95,
            resamples: 1000,
            seed: 1,
            rank_alpha: 0.01,
            gate: None,
        }
    }
}

impl CompareConfig {
    /// Whether `m` of `run` (NEW's record) fails the gate when it regresses.
    fn gated(&self, run: &RunRecord, m: Metric) -> bool {
        if let Some(g) = &self.gate {
            return g.contains(&m);
        }
        match &run.gate {
            Some(names) => names.iter().any(|n| n == m.name()),
            None => m.gated_by_default(),
        }
    }

    fn threshold(&self, m: Metric) -> f64 {
        self.thresholds
            .get(&m)
            .copied()
            .unwrap_or_else(|| m.default_threshold())
    }
}

/// The verdict on one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the threshold.
    Same,
    /// Beyond the threshold but inside the noise: not counted.
    Noise,
    /// Better, beyond the threshold and the noise.
    Improved,
    /// Worse, beyond the threshold and the noise (or, without a noise estimate, beyond the
    /// threshold and the measurement resolution).
    Regressed,
    /// Nothing to compare (missing on one side).
    Missing,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::Noise => "noise",
            Verdict::Improved => "improved",
            Verdict::Regressed => "REGRESSED",
            Verdict::Missing => "n/a",
        }
    }
}

/// One metric of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricComparison {
    /// The metric.
    pub metric: Metric,
    /// BASE's value (calls/s, ns or µs).
    pub base: f64,
    /// NEW's value.
    pub new: f64,
    /// NEW/BASE − 1.
    pub change: f64,
    /// The threshold applied.
    pub threshold: f64,
    /// Confidence interval of NEW/BASE − 1, when the runs have intervals to resample.
    pub interval: Option<(f64, f64)>,
    /// Whether a regression of this metric fails the gate (otherwise it is only reported).
    #[serde(default = "yes")]
    pub gated: bool,
    /// Repeated runs: the rank test over the repeats (`base` and `new` are then medians).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<RankTest>,
    /// The decision.
    pub verdict: Verdict,
}

fn yes() -> bool {
    true
}

/// The rank test of one metric over repeated runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankTest {
    /// Valid repeats in BASE.
    pub base_runs: usize,
    /// Valid repeats in NEW.
    pub new_runs: usize,
    /// One-sided exact p-value that NEW is this much worse (or better, for the direction of
    /// the change) by chance.
    pub p: f64,
}

/// One run (transport × load point) present in both files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunComparison {
    /// The transport.
    pub transport: String,
    /// The load point.
    pub point: String,
    /// Per metric.
    pub metrics: Vec<MetricComparison>,
    /// Why the run was not judged (parameters differ, an invalid or unsustained run on
    /// either side), if so.
    pub skipped: Option<String>,
    /// NEW could not sustain the open-loop rate BASE sustained: a regression whatever the
    /// metrics say.
    #[serde(default)]
    pub lost_rate: bool,
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// BASE's label (path).
    pub base: String,
    /// NEW's label.
    pub new: String,
    /// Runs in both files.
    pub runs: Vec<RunComparison>,
    /// Runs only in BASE (`transport/point`): listed, not failed.
    pub only_in_base: Vec<String>,
    /// Runs only in NEW: listed, not failed.
    pub only_in_new: Vec<String>,
    /// How the two files' machines differ (`cpu model "A" → "B"`, ...): empty when alike.
    #[serde(default)]
    pub machine: Vec<String>,
}

impl Comparison {
    /// Runs of NEW that no longer sustain the open-loop rate their BASE run sustained.
    pub fn lost_rate(&self) -> Vec<String> {
        self.runs
            .iter()
            .filter(|r| r.lost_rate)
            .map(|r| format!("{}/{}", r.transport, r.point))
            .collect()
    }

    /// Why the comparison judged less than it was given, each a reason for the gate to fail:
    /// no run in common (always); unless `allow_partial`, also BASE runs missing from NEW and
    /// runs not judged (parameters differ, invalid or unsustained on either side).
    pub fn shortfalls(&self, allow_partial: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.runs.is_empty() {
            out.push("no run is in both files: nothing was compared".to_owned());
        }
        if allow_partial {
            return out;
        }
        if !self.only_in_base.is_empty() {
            out.push(format!(
                "{} run(s) of BASE missing from NEW: {}",
                self.only_in_base.len(),
                self.only_in_base.join(", ")
            ));
        }
        let unjudged: Vec<String> = self
            .runs
            .iter()
            .filter(|r| r.skipped.is_some() && !r.lost_rate)
            .map(|r| format!("{}/{}", r.transport, r.point))
            .collect();
        if !unjudged.is_empty() {
            out.push(format!(
                "{} run(s) not judged: {}",
                unjudged.len(),
                unjudged.join(", ")
            ));
        }
        out
    }

    /// `(run, metric)` pairs that regressed.
    pub fn regressions(&self) -> Vec<(String, Metric)> {
        self.runs
            .iter()
            .flat_map(|r| {
                r.metrics
                    .iter()
                    .filter(|m| m.verdict == Verdict::Regressed && m.gated)
                    .map(move |m| (format!("{}/{}", r.transport, r.point), m.metric))
            })
            .collect()
    }
}

/// Per-second samples of one run, prepared for resampling.
struct Samples {
    /// Calls per second of each interval.
    rates: Vec<f64>,
    /// Each interval's latency histogram as sorted (value, count) pairs.
    buckets: Vec<Vec<(u64, u64)>>,
}

impl Samples {
    fn of(run: &RunRecord) -> Samples {
        let elapsed = run.summary.elapsed_s;
        let mut rates = Vec::new();
        let mut buckets = Vec::new();
        for i in &run.intervals {
            let len = (elapsed - i.start_s).clamp(0.0, 1.0);
            if len < 0.5 {
                continue; // a sliver at the end says little about the rate
            }
            rates.push(i.calls as f64 / len);
            if let Ok(h) = histogram::decode(&i.histogram) {
                let b: Vec<(u64, u64)> = h
                    .iter_recorded()
                    .map(|v| {
                        (
                            h.highest_equivalent(v.value_iterated_to()),
                            v.count_at_value(),
                        )
                    })
                    .collect();
                if !b.is_empty() {
                    buckets.push(b);
                }
            }
        }
        Samples { rates, buckets }
    }

    fn resample_rate(&self, rng: &mut SmallRng) -> f64 {
        let n = self.rates.len();
        (0..n)
            .map(|_| self.rates[rng.random_range(0..n)])
            .sum::<f64>()
            / n as f64
    }

    fn resample_quantiles(&self, rng: &mut SmallRng, qs: &[f64], out: &mut Vec<f64>) {
        let n = self.buckets.len();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for _ in 0..n {
            merged.extend_from_slice(&self.buckets[rng.random_range(0..n)]);
        }
        merged.sort_unstable_by_key(|(v, _)| *v);
        let total: u64 = merged.iter().map(|(_, c)| c).sum();
        out.clear();
        let mut seen = 0u64;
        let mut it = merged.iter();
        for q in qs {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut value = 0;
            while seen < rank {
                match it.next() {
                    Some((v, c)) => {
                        seen += c;
                        value = *v;
                    }
                    None => break,
                }
            }
            if seen >= rank {
                out.push(value as f64);
            } else {
                out.push(merged.last().map_or(0.0, |(v, _)| *v as f64));
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// A metric's value in one run's (or one repeat's) figures.
fn value(x: &RepeatSummary, m: Metric) -> Option<f64> {
    Some(match m {
        Metric::Throughput => x.throughput_per_s,
        Metric::P50 => x.p50_ns as f64,
        Metric::P99 => x.p99_ns as f64,
        Metric::P999 => x.p999_ns as f64,
        Metric::CpuClient => x.cpu_client_us,
        Metric::CpuServer => x.cpu_server_us?,
    })
}

fn point_value(run: &RunRecord, m: Metric) -> Option<f64> {
    value(&RepeatSummary::of(run), m)
}

/// The noise allowance when there is no spread to resample: for CPU, the relative
/// uncertainty of µs per call from 10 ms ticks (on each side); otherwise the threshold again.
fn noise_allowance(base: &RunRecord, new: &RunRecord, m: Metric, threshold: f64) -> f64 {
    let usage = |r: &'_ RunRecord| match m {
        Metric::CpuClient => Some(r.summary.client.clone()),
        Metric::CpuServer => r.summary.server.clone(),
        _ => None,
    };
    let tick = |u: Option<crate::results::ProcessUsage>| match u {
        Some(u) if u.user_s + u.system_s > 0.0 => 0.01 / (u.user_s + u.system_s),
        _ => 1.0,
    };
    match m {
        Metric::CpuClient | Metric::CpuServer => tick(usage(base)) + tick(usage(new)),
        _ => threshold,
    }
}

/// Why two runs' parameters make them incomparable, if they do (the seed may differ).
fn params_differ(base: &RunRecord, new: &RunRecord) -> Option<String> {
    let mut b = base.params.clone();
    b.seed = new.params.seed;
    if b == new.params {
        return None;
    }
    let (bj, nj) = (
        serde_json::to_value(&base.params).unwrap_or_default(),
        serde_json::to_value(&new.params).unwrap_or_default(),
    );
    let fields: Vec<String> = match (bj.as_object(), nj.as_object()) {
        (Some(bo), Some(no)) => bo
            .iter()
            .filter(|(k, v)| *k != "seed" && no.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} {v} → {}", no.get(k).cloned().unwrap_or_default()))
            .collect(),
        _ => Vec::new(),
    };
    Some(format!("parameters differ: {}", fields.join(", ")))
}

fn compare_run(base: &RunRecord, new: &RunRecord, cfg: &CompareConfig) -> RunComparison {
    let mut out = RunComparison {
        transport: new.transport.clone(),
        point: new.point.clone(),
        metrics: Vec::new(),
        skipped: None,
        lost_rate: false,
    };
    let invalid = |label: &str, r: &RunRecord| {
        (!r.validity.valid).then(|| {
            format!(
                "{label} run {}: {}",
                r.validity.label().to_lowercase(),
                r.validity.why()
            )
        })
    };
    if let Some(why) = params_differ(base, new)
        .or_else(|| invalid("BASE", base))
        .or_else(|| invalid("NEW", new))
    {
        out.lost_rate = base.validity.valid && new.validity.label() == "UNSUSTAINED";
        out.skipped = Some(why);
        return out;
    }
    if let Some(metrics) = compare_repeats(base, new, cfg) {
        out.metrics = metrics;
        return out;
    }
    let (bs, ns) = (Samples::of(base), Samples::of(new));
    let lat_metrics = [Metric::P50, Metric::P99, Metric::P999];
    let qs: Vec<f64> = lat_metrics.iter().filter_map(|m| m.quantile()).collect();
    // Bootstrap the ratios NEW/BASE for throughput and the three quantiles at once.
    let mut ratios: BTreeMap<Metric, Vec<f64>> = BTreeMap::new();
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let rate_ok = bs.rates.len() >= 2 && ns.rates.len() >= 2;
    let lat_ok = bs.buckets.len() >= 2 && ns.buckets.len() >= 2;
    let (mut qb, mut qn) = (Vec::new(), Vec::new());
    for _ in 0..cfg.resamples {
        if rate_ok {
            let r = ns.resample_rate(&mut rng) / bs.resample_rate(&mut rng);
            ratios.entry(Metric::Throughput).or_default().push(r);
        }
        if lat_ok {
            bs.resample_quantiles(&mut rng, &qs, &mut qb);
            ns.resample_quantiles(&mut rng, &qs, &mut qn);
            for (i, m) in lat_metrics.iter().enumerate() {
                if qb[i] > 0.0 {
                    ratios.entry(*m).or_default().push(qn[i] / qb[i]);
                }
            }
        }
    }
    let alpha = (1.0 - cfg.confidence) / 2.0;
    for m in Metric::ALL {
        let (Some(b), Some(n)) = (point_value(base, m), point_value(new, m)) else {
            continue;
        };
        let threshold = cfg.threshold(m);
        if b <= 0.0 {
            out.metrics.push(MetricComparison {
                metric: m,
                base: b,
                new: n,
                change: 0.0,
                threshold,
                interval: None,
                rank: None,
                gated: cfg.gated(new, m),
                verdict: Verdict::Missing,
            });
            continue;
        }
        let change = n / b - 1.0;
        let worse = if m.higher_is_better() {
            change < 0.0
        } else {
            change > 0.0
        };
        let interval = ratios.get_mut(&m).filter(|r| r.len() >= 10).map(|r| {
            r.sort_by(f64::total_cmp);
            (percentile(r, alpha) - 1.0, percentile(r, 1.0 - alpha) - 1.0)
        });
        let beyond_threshold = factor(change) > threshold;
        let significant = match interval {
            Some((lo, hi)) => lo > 0.0 || hi < 0.0,
            // No spread to judge by: the change must also exceed the measurement resolution.
            None => factor(change) > threshold + noise_allowance(base, new, m, threshold),
        };
        let verdict = match (beyond_threshold, significant, worse) {
            (false, _, _) => Verdict::Same,
            (true, false, _) => Verdict::Noise,
            (true, true, true) => Verdict::Regressed,
            (true, true, false) => Verdict::Improved,
        };
        out.metrics.push(MetricComparison {
            metric: m,
            base: b,
            new: n,
            change,
            threshold,
            interval,
            rank: None,
            gated: cfg.gated(new, m),
            verdict,
        });
    }
    out
}

/// A metric's values over the valid repeats of a run.
fn repeat_values(r: &RunRecord, m: Metric) -> Vec<f64> {
    r.repeats
        .iter()
        .filter(|x| x.valid)
        .filter_map(|x| value(x, m))
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Mann–Whitney U of `new` over `base`: the pairs in which the NEW value is the higher one
/// (`new_higher`) or the lower one, ties counting a half.
fn mann_whitney_u(base: &[f64], new: &[f64], new_higher: bool) -> f64 {
    let mut u = 0.0;
    for b in base {
        for n in new {
            if n == b {
                u += 0.5;
            } else if (n > b) == new_higher {
                u += 1.0;
            }
        }
    }
    u
}

/// P(U ≥ u) for U of `m` NEW against `k` BASE values under "no difference" (every ordering
/// equally likely), exactly: the count of orderings with each U follows from where the largest
/// value sits (a NEW value there is above all `k` BASE values).
fn rank_tail(k: usize, m: usize, u: usize) -> f64 {
    // counts[j][x]: orderings of i BASE and j NEW values with U = x, for the current i.
    let mut prev: Vec<Vec<f64>> = vec![vec![1.0]; m + 1];
    for i in 1..=k {
        let mut row: Vec<Vec<f64>> = Vec::with_capacity(m + 1);
        row.push(vec![1.0]);
        for j in 1..=m {
            let mut v = vec![0.0; i * j + 1];
            for (x, c) in row[j - 1].iter().enumerate() {
                v[x + i] += c;
            }
            for (x, c) in prev[j].iter().enumerate() {
                v[x] += c;
            }
            row.push(v);
        }
        prev = row;
    }
    let dist = &prev[m];
    let total: f64 = dist.iter().sum();
    dist.iter().skip(u).sum::<f64>() / total
}

/// The verdicts of repeated runs, when both sides have enough valid repeats.
fn compare_repeats(
    base: &RunRecord,
    new: &RunRecord,
    cfg: &CompareConfig,
) -> Option<Vec<MetricComparison>> {
    let valid = |r: &RunRecord| r.repeats.iter().filter(|x| x.valid).count();
    if valid(base) < MIN_REPEATS || valid(new) < MIN_REPEATS {
        return None;
    }
    let mut out = Vec::new();
    for m in Metric::ALL {
        let (b, n) = (repeat_values(base, m), repeat_values(new, m));
        if b.len() < MIN_REPEATS || n.len() < MIN_REPEATS {
            continue;
        }
        let (bm, nm) = (median(&b), median(&n));
        let threshold = cfg.threshold(m);
        let change = if bm > 0.0 { nm / bm - 1.0 } else { 0.0 };
        // The test looks in the direction the medians moved.
        let u = mann_whitney_u(&b, &n, change > 0.0);
        let p = rank_tail(b.len(), n.len(), u.floor() as usize);
        let worse = if m.higher_is_better() {
            change < 0.0
        } else {
            change > 0.0
        };
        let verdict = if bm <= 0.0 {
            Verdict::Missing
        } else if factor(change) <= threshold {
            Verdict::Same
        } else if p > cfg.rank_alpha {
            Verdict::Noise
        } else if worse {
            Verdict::Regressed
        } else {
            Verdict::Improved
        };
        out.push(MetricComparison {
            metric: m,
            base: bm,
            new: nm,
            change,
            threshold,
            interval: None,
            rank: Some(RankTest {
                base_runs: b.len(),
                new_runs: n.len(),
                p,
            }),
            gated: cfg.gated(new, m),
            verdict,
        });
    }
    Some(out)
}

/// Compares every run of `new` with the run of the same transport and load point in `base`.
pub fn compare(
    base: &Results,
    base_label: &str,
    new: &Results,
    new_label: &str,
    cfg: &CompareConfig,
) -> Comparison {
    let key = |r: &RunRecord| format!("{}/{}", r.transport, r.point);
    let mut runs = Vec::new();
    let mut only_in_new = Vec::new();
    for n in &new.runs {
        match base
            .runs
            .iter()
            .find(|b| b.transport == n.transport && b.point == n.point)
        {
            Some(b) => runs.push(compare_run(b, n, cfg)),
            None => only_in_new.push(key(n)),
        }
    }
    let only_in_base = base
        .runs
        .iter()
        .filter(|b| {
            !new.runs
                .iter()
                .any(|n| n.transport == b.transport && n.point == b.point)
        })
        .map(key)
        .collect();
    Comparison {
        base: base_label.to_owned(),
        new: new_label.to_owned(),
        runs,
        only_in_base,
        only_in_new,
        machine: machine_differences(&base.environment, &new.environment),
    }
}

/// The size of a change as a factor, the same either way: NEW/BASE − 1 going up, BASE/NEW − 1
/// going down. So a threshold of 25 % means "1.25x worse or 1.25x better", and a fix that
/// exactly undoes a regression (+30 % then −23 %) is judged as large as the regression was.
fn factor(change: f64) -> f64 {
    if change >= 0.0 {
        change
    } else if change > -1.0 {
        1.0 / (1.0 + change) - 1.0
    } else {
        f64::INFINITY
    }
}

/// How two machines differ in what moves performance: CPU model, cores, kernel.
pub(crate) fn machine_differences(
    base: &crate::results::Environment,
    new: &crate::results::Environment,
) -> Vec<String> {
    let mut out = Vec::new();
    if base.cpu_model != new.cpu_model {
        out.push(format!("CPU {:?} → {:?}", base.cpu_model, new.cpu_model));
    }
    if base.cores != new.cores {
        out.push(format!("cores {} → {}", base.cores, new.cores));
    }
    if base.kernel != new.kernel {
        out.push(format!("kernel {} → {}", base.kernel, new.kernel));
    }
    out
}

fn fmt_value(m: Metric, v: f64) -> String {
    match m {
        Metric::Throughput => {
            if v >= 1e6 {
                format!("{:.2}M/s", v / 1e6)
            } else if v >= 1e3 {
                format!("{:.1}k/s", v / 1e3)
            } else {
                format!("{v:.0}/s")
            }
        }
        Metric::P50 | Metric::P99 | Metric::P999 => {
            if v >= 1e6 {
                format!("{:.2} ms", v / 1e6)
            } else {
                format!("{:.1} µs", v / 1e3)
            }
        }
        Metric::CpuClient | Metric::CpuServer => format!("{v:.1} µs"),
    }
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

fn rows(c: &Comparison) -> Vec<[String; 7]> {
    let mut rows = Vec::new();
    for r in &c.runs {
        let run = format!("{}/{}", r.transport, r.point);
        if let Some(why) = &r.skipped {
            rows.push([
                run,
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("not judged: {why}"),
            ]);
            continue;
        }
        for m in &r.metrics {
            rows.push([
                run.clone(),
                m.metric.name().into(),
                fmt_value(m.metric, m.base),
                fmt_value(m.metric, m.new),
                pct(m.change),
                match (m.rank, m.interval) {
                    (Some(r), _) => format!("{} vs {} runs, p={:.3}", r.base_runs, r.new_runs, r.p),
                    (None, Some((lo, hi))) => format!("[{}, {}]", pct(lo), pct(hi)),
                    (None, None) => "no spread".into(),
                },
                format!(
                    "{}{} (±{:.0}%)",
                    m.verdict.label(),
                    if m.gated { "" } else { ", not gated" },
                    m.threshold * 100.0
                ),
            ]);
        }
    }
    rows
}

const HEADER: [&str; 7] = [
    "run",
    "metric",
    "base",
    "new",
    "change",
    "noise (interval or rank test)",
    "verdict",
];

/// The warning two machines' files deserve.
pub fn machine_warning(c: &Comparison) -> Option<String> {
    (!c.machine.is_empty()).then(|| {
        format!(
            "WARNING: the files come from different machines ({}): differences may be the \
             machine's, not the code's; refresh the baseline on this machine class \
             (ci/README.md)",
            c.machine.join(", ")
        )
    })
}

/// The verdict in one line: regressions, runs that lost their rate, what was not judged.
pub fn verdict_line(c: &Comparison, allow_partial: bool) -> String {
    let reg = c.regressions();
    let lost = c.lost_rate();
    let short = c.shortfalls(allow_partial);
    let judged = c.runs.iter().filter(|r| r.skipped.is_none()).count();
    let mut parts = Vec::new();
    if !reg.is_empty() {
        let list: Vec<String> = reg
            .iter()
            .map(|(r, m)| format!("{r} {}", m.name()))
            .collect();
        parts.push(format!(
            "REGRESSION in {} metric(s): {}",
            reg.len(),
            list.join(", ")
        ));
    }
    if !lost.is_empty() {
        parts.push(format!(
            "REGRESSION: no longer sustains the offered rate: {}",
            lost.join(", ")
        ));
    }
    if !short.is_empty() {
        parts.push(format!("NOT JUDGED: {}", short.join("; ")));
    }
    if parts.is_empty() {
        let partial = if judged < c.runs.len() || !c.only_in_base.is_empty() {
            " (partial comparison allowed)"
        } else {
            ""
        };
        format!("no regression ({judged} runs judged){partial}")
    } else {
        parts.join("; ")
    }
}

/// A plain-text table.
pub fn render_text(c: &Comparison, allow_partial: bool) -> String {
    let rows = rows(c);
    let mut widths = HEADER.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!("compare {} → {}\n", c.base, c.new);
    if let Some(w) = machine_warning(c) {
        let _ = writeln!(out, "{w}");
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w.saturating_sub(cell.chars().count());
            s.push_str(cell);
            s.push_str(&" ".repeat(pad));
        }
        s.trim_end().to_owned()
    };
    out.push_str(&line(&HEADER.map(String::from)));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    for k in &c.only_in_base {
        let _ = writeln!(out, "only in base: {k}");
    }
    for k in &c.only_in_new {
        let _ = writeln!(out, "only in new: {k}");
    }
    out.push_str(&verdict_line(c, allow_partial));
    out.push('\n');
    out
}

/// A Markdown table (for a CI job summary).
pub fn render_markdown(c: &Comparison, allow_partial: bool) -> String {
    let mut out = format!(
        "## Regression gate\n\n**{}**\n\n",
        verdict_line(c, allow_partial)
    );
    if let Some(w) = machine_warning(c) {
        let _ = writeln!(out, "> {w}\n");
    }
    let _ = writeln!(out, "| {} |", HEADER.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
    for r in rows(c) {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == 6 && s.starts_with("REGRESSED") {
                    format!("**{s}**")
                } else {
                    s.replace('|', "\\|")
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    if !c.only_in_base.is_empty() || !c.only_in_new.is_empty() {
        out.push('\n');
        for k in &c.only_in_base {
            let _ = writeln!(out, "- only in base: `{k}`");
        }
        for k in &c.only_in_new {
            let _ = writeln!(out, "- only in new: `{k}`");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{encode, latency_histogram, summarize};
    use crate::results::{
        Environment, IntervalRecord, RunHistograms, RunParams, RunSummary, ServerInfo, SuiteRecord,
        Validity,
    };

    /// A run of `secs` one-second intervals whose latencies are drawn around `center_ns` with
    /// a relative spread `spread`, deterministically.
    fn run(point: &str, center_ns: f64, spread: f64, secs: usize, seed: u64) -> RunRecord {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut all = latency_histogram();
        let mut intervals = Vec::new();
        for i in 0..secs {
            let mut h = latency_histogram();
            // Each second has its own level (between-second noise) and spread within it.
            let level = center_ns * (1.0 + spread * (rng.random::<f64>() - 0.5));
            for _ in 0..2000 {
                let v = level * (1.0 + 0.2 * rng.random::<f64>());
                h.saturating_record(v as u64);
            }
            all.add(&h).unwrap();
            intervals.push(IntervalRecord {
                start_s: i as f64,
                calls: h.len(),
                errors: 0,
                latency: summarize(&h),
                histogram: encode(&h).unwrap(),
            });
        }
        RunRecord {
            transport: "tcp".into(),
            point: point.into(),
            params: RunParams {
                method: "unary".into(),
                ..RunParams::default()
            },
            server: ServerInfo::default(),
            summary: RunSummary {
                elapsed_s: secs as f64,
                calls: all.len(),
                ok: all.len(),
                throughput_per_s: all.len() as f64 / secs as f64,
                latency: summarize(&all),
                ..RunSummary::default()
            },
            validity: Validity {
                valid: true,
                ..Validity::default()
            },
            histograms: RunHistograms::default(),
            intervals,
            repeats: Vec::new(),
            gate: None,
            thresholds: Vec::new(),
            step: None,
            stages: Vec::new(),
        }
    }

    /// A run repeated once per p50 in `p50s_us` (other figures proportional), all valid.
    fn repeated(p50s_us: &[f64]) -> RunRecord {
        let runs: Vec<RunRecord> = p50s_us
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let mut r = run("unary-1", p * 1e3, 0.05, 3, i as u64 + 1);
                r.summary.latency.p50_ns = (p * 1e3) as u64;
                r.summary.throughput_per_s = 1e6 / p;
                r
            })
            .collect();
        RunRecord::from_repeats(runs).unwrap()
    }

    #[test]
    fn rank_tail_is_exact() {
        // 5 against 5: 252 orderings; U = 25 only when every NEW value is above every BASE.
        assert!((rank_tail(5, 5, 25) - 1.0 / 252.0).abs() < 1e-12);
        assert!((rank_tail(5, 5, 24) - 2.0 / 252.0).abs() < 1e-12);
        assert!((rank_tail(5, 5, 23) - 4.0 / 252.0).abs() < 1e-12);
        assert!((rank_tail(3, 3, 9) - 1.0 / 20.0).abs() < 1e-12);
        assert!((rank_tail(4, 6, 0) - 1.0).abs() < 1e-12);
        // Symmetric around k·m/2.
        assert!((rank_tail(4, 4, 9) - (1.0 - rank_tail(4, 4, 8)) - 0.0).abs() < 0.2);
    }

    #[test]
    fn repeats_fold_into_the_median_one() {
        let r = repeated(&[40.0, 30.0, 50.0, 35.0, 45.0]);
        assert_eq!(r.repeats.len(), 5);
        assert_eq!(r.summary.latency.p50_ns, 40_000);
        assert_eq!(r.repeats[1].p50_ns, 30_000, "repeats stay in the order run");
        assert_eq!(
            r.repeats_line().as_deref(),
            Some("median of 5 repeats (p50 30.0–50.0 µs)")
        );
        let mut md_in = results(vec![r]);
        md_in.runs[0].point = "unary-1".into();
        assert!(crate::markdown::render(&md_in).contains("valid; median of 5 repeats"));
    }

    #[test]
    fn repeated_runs_judge_by_the_spread_between_runs() {
        let cfg = CompareConfig::default();
        let base = results(vec![repeated(&[40.0, 30.0, 49.0, 35.0, 45.0])]);
        // Shifted by 30% but overlapping: beyond the threshold, inside the noise.
        let shifted = results(vec![repeated(&[52.0, 39.0, 63.0, 45.0, 58.0])]);
        let c = compare(&base, "b", &shifted, "n", &cfg);
        let p50 = metric(&c, "unary-1", Metric::P50);
        assert!(p50.change > cfg.threshold(Metric::P50), "{p50:?}");
        assert_eq!(p50.verdict, Verdict::Noise, "{p50:?}");
        assert!(c.regressions().is_empty(), "{c:?}");
        // Every repeat 20 µs slower: a regression, found by the rank test.
        let slow = results(vec![repeated(&[70.0, 66.0, 75.0, 68.0, 72.0])]);
        let c = compare(&base, "b", &slow, "n", &cfg);
        let p50 = metric(&c, "unary-1", Metric::P50);
        assert_eq!(p50.verdict, Verdict::Regressed, "{p50:?}");
        assert_eq!(p50.rank.map(|r| (r.base_runs, r.new_runs)), Some((5, 5)));
        assert!(
            render_text(&c, false).contains("5 vs 5 runs, p=0.004"),
            "{}",
            render_text(&c, false)
        );
        // And the other way round: improved, not regressed.
        let c = compare(&slow, "b", &base, "n", &cfg);
        let p50 = metric(&c, "unary-1", Metric::P50);
        assert_eq!(p50.verdict, Verdict::Improved, "{p50:?}");
        // A metric the point does not gate is judged and shown, but fails nothing.
        let mut slow_ungated = results(vec![repeated(&[70.0, 66.0, 75.0, 68.0, 72.0])]);
        slow_ungated.runs[0].gate = Some(vec!["throughput".into()]);
        let c = compare(&base, "b", &slow_ungated, "n", &cfg);
        let p50 = metric(&c, "unary-1", Metric::P50);
        assert_eq!((p50.verdict, p50.gated), (Verdict::Regressed, false));
        assert!(render_text(&c, false).contains("REGRESSED, not gated"));
        let tput = metric(&c, "unary-1", Metric::Throughput);
        assert!(tput.gated);
        assert_eq!(c.regressions().len(), 1, "{:?}", c.regressions());
        // --gate overrides the suite's list.
        let only_p50 = CompareConfig {
            gate: Some(vec![Metric::P50]),
            ..CompareConfig::default()
        };
        let c = compare(&base, "b", &slow_ungated, "n", &only_p50);
        assert_eq!(
            c.regressions(),
            vec![("tcp/unary-1".to_owned(), Metric::P50)]
        );
        // A single run on one side falls back to the per-second bootstrap.
        let single = results(vec![run("unary-1", 70e3, 0.05, 3, 9)]);
        let c = compare(&base, "b", &single, "n", &cfg);
        assert!(c.runs[0].metrics.iter().all(|m| m.rank.is_none()));
    }

    /// Fewer resamples than the command's default: debug builds resample slowly.
    fn cfg() -> CompareConfig {
        CompareConfig {
            resamples: 300,
            ..CompareConfig::default()
        }
    }

    fn results(runs: Vec<RunRecord>) -> Results {
        let mut r = Results::new(
            "test".into(),
            "2026-01-01T00:00:00Z".into(),
            Environment::default(),
            SuiteRecord::default(),
        );
        r.runs = runs;
        r
    }

    /// Metric `m` of the run at `point`.
    fn metric<'a>(c: &'a Comparison, point: &str, m: Metric) -> &'a MetricComparison {
        c.runs
            .iter()
            .find(|r| r.point == point)
            .and_then(|r| r.metrics.iter().find(|x| x.metric == m))
            .unwrap()
    }

    fn verdict(c: &Comparison, point: &str, m: Metric) -> Verdict {
        metric(c, point, m).verdict
    }

    #[test]
    fn a_file_compared_with_itself_has_no_regression() {
        let r = results(vec![
            run("a", 50_000.0, 0.1, 10, 1),
            run("b", 1e6, 0.5, 10, 2),
        ]);
        let c = compare(&r, "x", &r, "x", &cfg());
        assert!(c.regressions().is_empty(), "{}", render_text(&c, false));
        assert_eq!(verdict(&c, "a", Metric::P50), Verdict::Same);
    }

    #[test]
    fn a_clear_slowdown_is_a_regression_and_named() {
        let base = results(vec![run("a", 50_000.0, 0.1, 10, 1)]);
        let new = results(vec![run("a", 1_050_000.0, 0.1, 10, 3)]);
        let c = compare(&base, "base", &new, "new", &cfg());
        assert_eq!(verdict(&c, "a", Metric::P50), Verdict::Regressed);
        assert_eq!(verdict(&c, "a", Metric::P99), Verdict::Regressed);
        let text = render_text(&c, false);
        assert!(
            text.contains("REGRESSION") && text.contains("tcp/a p50"),
            "{text}"
        );
        assert!(render_markdown(&c, false).contains("**REGRESSED"));
        // The reverse is an improvement, not a regression.
        let c = compare(&new, "new", &base, "base", &cfg());
        assert_eq!(verdict(&c, "a", Metric::P50), Verdict::Improved);
        assert!(c.regressions().is_empty());
    }

    #[test]
    fn small_changes_and_noisy_changes_do_not_count() {
        let base = results(vec![
            run("small", 50_000.0, 0.05, 10, 1),
            run("noisy", 50_000.0, 3.0, 10, 5),
        ]);
        let new = results(vec![
            run("small", 52_000.0, 0.05, 10, 7),
            run("noisy", 80_000.0, 3.0, 10, 9),
        ]);
        let c = compare(&base, "b", &new, "n", &cfg());
        assert_eq!(verdict(&c, "small", Metric::P50), Verdict::Same);
        // A +60 % median whose seconds swing by ±150 % is not distinguishable from noise.
        let v = verdict(&c, "noisy", Metric::P50);
        assert!(
            matches!(v, Verdict::Noise | Verdict::Same),
            "{v:?}\n{}",
            render_text(&c, false)
        );
    }

    #[test]
    fn a_point_invalidated_by_a_busy_host_is_not_called_a_regression_and_says_why() {
        let base = results(vec![run("p", 50_000.0, 0.1, 5, 1)]);
        // Three times slower, but the host was busy: not judged, with the host named.
        let mut slow = run("p", 150_000.0, 0.1, 5, 2);
        slow.validity = Validity {
            valid: false,
            reasons: vec![
                "host busy: other processes used 1.84 of 2 CPUs during this point, so the \
                 generator and the server shared them; re-run on a quiet machine"
                    .into(),
            ],
            notes: vec![],
            unsustained: None,
        };
        let c = compare(&base, "b", &results(vec![slow]), "n", &cfg());
        assert!(c.regressions().is_empty());
        let text = render_text(&c, false);
        assert!(
            text.contains("host busy: other processes used 1.84 of 2 CPUs"),
            "{text}"
        );
    }

    #[test]
    fn a_change_is_a_factor_the_same_either_way() {
        assert!((factor(0.3) - 0.3).abs() < 1e-12);
        assert!((factor(1.0 / 1.3 - 1.0) - 0.3).abs() < 1e-12);
        assert_eq!(factor(-1.0), f64::INFINITY);
        assert_eq!(factor(0.0), 0.0);
    }

    #[test]
    fn without_intervals_the_threshold_must_be_cleared_twice() {
        let base = results(vec![run("short", 50_000.0, 0.1, 1, 1)]);
        let modest = results(vec![run("short", 70_000.0, 0.1, 1, 2)]);
        let c = compare(&base, "b", &modest, "n", &cfg());
        let m = metric(&c, "short", Metric::P50);
        assert!(m.interval.is_none());
        assert_eq!(m.verdict, Verdict::Noise);
        let huge = results(vec![run("short", 500_000.0, 0.1, 1, 2)]);
        let c = compare(&base, "b", &huge, "n", &cfg());
        assert_eq!(verdict(&c, "short", Metric::P50), Verdict::Regressed);
    }

    #[test]
    fn unmatched_invalid_and_different_runs_are_listed_not_judged() {
        let mut invalid = run("inv", 50_000.0, 0.1, 5, 1);
        invalid.validity = Validity {
            valid: false,
            reasons: vec!["lag".into()],
            notes: vec![],
            unsustained: None,
        };
        let mut other = run("par", 50_000.0, 0.1, 5, 1);
        other.params.payload_bytes = 1024;
        let base = results(vec![
            run("gone", 1.0, 0.1, 5, 1),
            run("inv", 50_000.0, 0.1, 5, 1),
            run("par", 50_000.0, 0.1, 5, 1),
        ]);
        let new = results(vec![invalid, other, run("fresh", 1.0, 0.1, 5, 1)]);
        let c = compare(&base, "b", &new, "n", &cfg());
        assert_eq!(c.only_in_base, vec!["tcp/gone"]);
        assert_eq!(c.only_in_new, vec!["tcp/fresh"]);
        let skipped: Vec<&str> = c.runs.iter().filter_map(|r| r.skipped.as_deref()).collect();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped.iter().any(|s| s.contains("NEW run invalid")));
        assert!(
            skipped.iter().any(|s| s.contains("payload_bytes 0 → 1024")),
            "{skipped:?}"
        );
        assert!(c.regressions().is_empty());
        // Nothing judged: the gate fails unless partial comparisons are allowed.
        assert_eq!(c.shortfalls(false).len(), 2, "{:?}", c.shortfalls(false));
        assert!(verdict_line(&c, false).contains("NOT JUDGED"));
        assert!(c.shortfalls(true).is_empty());
    }

    #[test]
    fn nothing_in_common_fails_even_when_partial_is_allowed() {
        let base = results(vec![run("a", 50_000.0, 0.1, 5, 1)]);
        let new = results(vec![run("b", 50_000.0, 0.1, 5, 1)]);
        let c = compare(&base, "b", &new, "n", &cfg());
        assert!(c.runs.is_empty());
        let short = c.shortfalls(true);
        assert!(short[0].contains("no run is in both files"), "{short:?}");
        assert!(verdict_line(&c, true).starts_with("NOT JUDGED"));
    }

    #[test]
    fn a_partial_comparison_fails_unless_allowed() {
        let mut other = run("par", 50_000.0, 0.1, 5, 1);
        other.params.duration_s = Some(3.0);
        let base = results(vec![
            run("same", 50_000.0, 0.1, 5, 1),
            run("par", 50_000.0, 0.1, 5, 1),
            run("gone", 50_000.0, 0.1, 5, 1),
        ]);
        let new = results(vec![run("same", 50_000.0, 0.1, 5, 2), other]);
        let c = compare(&base, "b", &new, "n", &cfg());
        assert!(c.regressions().is_empty());
        let short = c.shortfalls(false);
        assert_eq!(short.len(), 2, "{short:?}");
        assert!(short[0].contains("missing from NEW: tcp/gone"), "{short:?}");
        assert!(short[1].contains("not judged: tcp/par"), "{short:?}");
        assert!(c.shortfalls(true).is_empty());
        assert!(verdict_line(&c, true).contains("partial comparison allowed"));
    }

    #[test]
    fn a_rate_no_longer_sustained_is_a_regression() {
        let mut lost = run("open", 50_000.0, 0.1, 5, 1);
        lost.validity = Validity {
            valid: false,
            unsustained: Some("offered 5000/s, achieved 837/s".into()),
            ..Validity::default()
        };
        let base = results(vec![run("open", 50_000.0, 0.1, 5, 1)]);
        let new = results(vec![lost.clone()]);
        let c = compare(&base, "b", &new, "n", &cfg());
        assert_eq!(c.lost_rate(), vec!["tcp/open"]);
        assert!(c.shortfalls(false).is_empty(), "{:?}", c.shortfalls(false));
        assert!(verdict_line(&c, false).contains("no longer sustains"));
        // The other way round it is not a regression (but not judged either).
        let c = compare(&new, "n", &base, "b", &cfg());
        assert!(c.lost_rate().is_empty());
        assert!(!c.shortfalls(false).is_empty());
    }

    #[test]
    fn different_machines_are_named() {
        let base = results(vec![run("a", 50_000.0, 0.1, 5, 1)]);
        let mut new = base.clone();
        new.environment.cpu_model = "AMD EPYC".into();
        new.environment.cores = 4;
        let c = compare(&base, "b", &new, "n", &cfg());
        assert_eq!(c.machine.len(), 2, "{:?}", c.machine);
        let w = machine_warning(&c).unwrap();
        assert!(w.contains("AMD EPYC") && w.contains("cores 0 → 4"), "{w}");
        assert!(render_text(&c, false).contains("WARNING: the files come from different"));
        let same = compare(&base, "b", &base, "b", &cfg());
        assert!(machine_warning(&same).is_none());
    }
}
