//! Shards merged into the run they made together: the runs of one point from N generators
//! (`load --shard-count N`) become one run, exactly — histograms added bucket by bucket (never
//! percentiles averaged), counters summed, and every figure recomputed from those. Shards of
//! different builds or scenarios are refused, naming the difference; missing shards are named,
//! and only with `allow_partial` does a merge go ahead, marked degraded with the load that was
//! really offered.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::histogram::{decode, encode, latency_histogram, summarize};
use crate::results::{
    IntervalRecord, OfferedLoad, ProcessUsage, Results, RunFailure, RunRecord, WireTotals,
};

/// Why shards cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A run carries no shard (it was not run with `--shard-count`).
    #[error("{file}: {transport}/{point} is not a shard (run it with --shard-count)")]
    NotSharded {
        /// The file.
        file: String,
        /// Its transport.
        transport: String,
        /// Its point.
        point: String,
    },
    /// The files disagree on what was run or with what.
    #[error("the shards differ: {0}")]
    Differ(String),
    /// Shards are missing (and partial merges were not allowed).
    #[error("missing shards: {0} (merge what there is with --allow-partial)")]
    Missing(String),
    /// A histogram could not be read or written.
    #[error("{0}")]
    Histogram(String),
}

/// A point of a run: its transport and name.
type PointKey = (String, String);

/// One shard's run of a point, with the file it came from.
type ShardRun<'a> = (&'a str, &'a RunRecord);

/// One shard's file: a label (its name) and its results.
#[derive(Clone, Debug)]
pub struct ShardFile {
    /// How errors name it.
    pub label: String,
    /// Its results.
    pub results: Results,
}

/// Merges `files` (shards of one run, `expect` of them) into one [`Results`].
pub fn merge(
    files: Vec<ShardFile>,
    expect: u32,
    allow_partial: bool,
) -> Result<Results, ShardError> {
    let first = files
        .first()
        .ok_or_else(|| ShardError::Missing("no shard file given".into()))?;
    // One build: a shard of another build measures another program.
    for f in &files[1..] {
        let (a, b) = (&first.results.environment, &f.results.environment);
        if a.git_sha != b.git_sha || a.git_dirty != b.git_dirty {
            return Err(ShardError::Differ(format!(
                "{} is build {:?}, {} is build {:?}",
                first.label, a.git_sha, f.label, b.git_sha
            )));
        }
    }
    // The runs of each point, in the order first seen, with their files.
    let mut groups: Vec<(PointKey, Vec<ShardRun<'_>>)> = Vec::new();
    for f in &files {
        for r in &f.results.runs {
            if r.params.shard.is_none() {
                return Err(ShardError::NotSharded {
                    file: f.label.clone(),
                    transport: r.transport.clone(),
                    point: r.point.clone(),
                });
            }
            let key = (r.transport.clone(), r.point.clone());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push((&f.label, r)),
                None => groups.push((key, vec![(&f.label, r)])),
            }
        }
    }
    let mut out = first.results.clone();
    out.runs.clear();
    out.errors.clear();
    out.transports.clear();
    out.capacity.clear();
    for f in &files {
        for t in &f.results.transports {
            if !out.transports.contains(t) {
                out.transports.push(t.clone());
            }
        }
        out.complete &= f.results.complete;
        out.interrupted |= f.results.interrupted;
        out.errors.extend(f.results.errors.iter().cloned());
    }
    let mut missing_all = Vec::new();
    for ((transport, point), runs) in groups {
        let missing = missing_shards(&runs, expect)?;
        if !missing.is_empty() {
            missing_all.push(format!(
                "{transport}/{point}: shard {} of {expect}",
                missing
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let merged = merge_point(&runs, expect, &missing)?;
        if !missing.is_empty() {
            out.errors.push(RunFailure {
                transport: transport.clone(),
                point: point.clone(),
                error: format!("shards missing from the merge: {missing:?} of {expect}"),
            });
        }
        out.runs.push(merged);
    }
    if !missing_all.is_empty() {
        if !allow_partial {
            return Err(ShardError::Missing(missing_all.join("; ")));
        }
        out.complete = false;
    }
    out.suite.description = format!(
        "{} merged from {} shard file(s): {}",
        out.suite.description,
        files.len(),
        files
            .iter()
            .map(|f| f.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(out)
}

/// The shard indices of `0..expect` no run of the point came from; refuses a shard of another
/// count, and the same shard twice.
fn missing_shards(runs: &[(&str, &RunRecord)], expect: u32) -> Result<Vec<u32>, ShardError> {
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    for (file, r) in runs {
        let s = r
            .params
            .shard
            .as_ref()
            .expect("checked: every run is a shard");
        let (Some(i), Some(n)) = (s.index, s.count) else {
            return Err(ShardError::Differ(format!(
                "{file}: {}/{} ran segment {} (merge counts equal shards: run them with \
                 --shard-index and --shard-count)",
                r.transport, r.point, s.segment
            )));
        };
        if n != expect {
            return Err(ShardError::Differ(format!(
                "{file}: {}/{} is shard {i} of {n}, not of {expect}",
                r.transport, r.point
            )));
        }
        if let Some(other) = seen.insert(i, file) {
            return Err(ShardError::Differ(format!(
                "{other} and {file} are both shard {i} of {}/{}",
                r.transport, r.point
            )));
        }
    }
    Ok((0..expect).filter(|i| !seen.contains_key(i)).collect())
}

/// What must be the same in every shard of a point: its parameters but the shares.
fn scenario(r: &RunRecord) -> serde_json::Value {
    let mut p = r.params.clone();
    p.shard = None;
    p.rate = None;
    p.connections = 0;
    p.workers = 0;
    p.max_in_flight = None;
    p.concurrency = None;
    p.requests = None;
    p.seed = 0;
    serde_json::to_value(&p).unwrap_or_default()
}

fn hist(text: &str) -> Result<Histogram<u64>, ShardError> {
    decode(text).map_err(|e| ShardError::Histogram(e.to_string()))
}

/// Adds the histograms `texts` (base64); `None` when none is present.
fn added<'a>(
    texts: impl Iterator<Item = Option<&'a String>>,
) -> Result<Option<Histogram<u64>>, ShardError> {
    let mut total: Option<Histogram<u64>> = None;
    for t in texts.flatten() {
        let h = hist(t)?;
        match &mut total {
            Some(acc) => acc
                .add(&h)
                .map_err(|e| ShardError::Histogram(e.to_string()))?,
            None => {
                let mut acc = latency_histogram();
                acc.add(&h)
                    .map_err(|e| ShardError::Histogram(e.to_string()))?;
                total = Some(acc);
            }
        }
    }
    Ok(total)
}

fn enc(h: &Histogram<u64>) -> Result<String, ShardError> {
    encode(h).map_err(|e| ShardError::Histogram(e.to_string()))
}

/// One point's shards as one run.
fn merge_point(
    runs: &[(&str, &RunRecord)],
    expect: u32,
    missing: &[u32],
) -> Result<RunRecord, ShardError> {
    let (first_file, first) = runs[0];
    let want = scenario(first);
    for (file, r) in &runs[1..] {
        let got = scenario(r);
        if got != want {
            let differs = want
                .as_object()
                .into_iter()
                .flatten()
                .find(|(k, v)| got.get(k.as_str()) != Some(*v))
                .map_or("parameters".to_owned(), |(k, v)| {
                    format!("{k}: {v} in {first_file}, {} in {file}", got[k.as_str()])
                });
            return Err(ShardError::Differ(format!(
                "{}/{}: {differs}",
                r.transport, r.point
            )));
        }
    }
    let all = || runs.iter().map(|(_, r)| *r);
    let sum = |f: &dyn Fn(&RunRecord) -> u64| all().map(f).sum::<u64>();
    let mut m = first.clone();
    m.params.shard = None;
    m.params.rate = first
        .params
        .rate
        .map(|_| all().filter_map(|r| r.params.rate).sum());
    m.params.connections = all().map(|r| r.params.connections).sum();
    m.params.workers = all().map(|r| r.params.workers).sum();
    m.params.max_in_flight = first
        .params
        .max_in_flight
        .map(|_| all().filter_map(|r| r.params.max_in_flight).sum());
    m.params.concurrency = first
        .params
        .concurrency
        .map(|_| all().filter_map(|r| r.params.concurrency).sum());
    m.params.requests = first
        .params
        .requests
        .map(|_| all().filter_map(|r| r.params.requests).sum());

    let latency =
        added(all().map(|r| Some(&r.histograms.latency)))?.unwrap_or_else(latency_histogram);
    let service = added(all().map(|r| r.histograms.service_time.as_ref()))?;
    let lag = added(all().map(|r| r.histograms.generator_lag.as_ref()))?;
    let message = added(all().map(|r| r.histograms.message_latency.as_ref()))?;
    let s = &mut m.summary;
    s.elapsed_s = all().map(|r| r.summary.elapsed_s).fold(0.0, f64::max);
    s.calls = sum(&|r| r.summary.calls);
    s.ok = sum(&|r| r.summary.ok);
    s.errors = sum(&|r| r.summary.errors);
    s.incomplete = sum(&|r| r.summary.incomplete);
    s.status_counts = BTreeMap::new();
    for r in all() {
        for (k, v) in &r.summary.status_counts {
            *s.status_counts.entry(k.clone()).or_default() += v;
        }
    }
    // The shards ran side by side: their rates add.
    s.throughput_per_s = all().map(|r| r.summary.throughput_per_s).sum();
    s.messages_sent = sum(&|r| r.summary.messages_sent);
    s.messages_received = sum(&|r| r.summary.messages_received);
    s.messages_per_s = all().map(|r| r.summary.messages_per_s).sum();
    s.latency = summarize(&latency);
    s.service_time = service.as_ref().map(summarize);
    s.generator_lag = lag.as_ref().map(summarize);
    s.message_latency = message.as_ref().map(summarize);
    s.backpressured = sum(&|r| r.summary.backpressured);
    s.offered = first.summary.offered.as_ref().map(|_| {
        let o = |f: &dyn Fn(&OfferedLoad) -> f64| -> f64 {
            all()
                .filter_map(|r| r.summary.offered.as_ref())
                .map(f)
                .sum()
        };
        OfferedLoad {
            rate_per_s: o(&|x| x.rate_per_s),
            due: o(&|x| x.due as f64) as u64,
            sent: o(&|x| x.sent as f64) as u64,
            unsent: o(&|x| x.unsent as f64) as u64,
            achieved_per_s: o(&|x| x.achieved_per_s),
            // The unsent waits are kept as percentiles only: they cannot be added.
            unsent_wait: None,
            latency_with_unsent: None,
        }
    });
    s.bytes = if all().all(|r| r.summary.bytes.is_some()) {
        let sent = sum(&|r| r.summary.bytes.map_or(0, |b| b.sent));
        let received = sum(&|r| r.summary.bytes.map_or(0, |b| b.received));
        let per = |v: u64| {
            if s.calls > 0 {
                v as f64 / s.calls as f64
            } else {
                0.0
            }
        };
        Some(WireTotals {
            sent,
            received,
            sent_per_call: per(sent),
            received_per_call: per(received),
        })
    } else {
        None
    };
    // Each shard's host is its own: no one figure for "the host".
    s.host = None;
    s.connect = None;
    let calls = s.calls.max(1) as f64;
    let user: f64 = all().map(|r| r.summary.client.user_s).sum();
    let system: f64 = all().map(|r| r.summary.client.system_s).sum();
    s.client = ProcessUsage {
        user_s: user,
        system_s: system,
        cpu_us_per_call: (user + system) * 1e6 / calls,
        peak_rss_bytes: all().filter_map(|r| r.summary.client.peak_rss_bytes).max(),
        cpus: Vec::new(),
        note: Some(format!("{} generators' CPU summed", runs.len())),
    };
    // Every shard watched the same server over the same time: its busiest view, not a sum.
    s.server = all()
        .filter_map(|r| r.summary.server.clone())
        .max_by(|a, b| (a.user_s + a.system_s).total_cmp(&(b.user_s + b.system_s)))
        .map(|mut u| {
            u.cpu_us_per_call = (u.user_s + u.system_s) * 1e6 / calls;
            u.note = Some("as the busiest shard saw it (every shard watched it)".into());
            u
        });
    s.worker_busy = all().flat_map(|r| r.summary.worker_busy.clone()).collect();

    // Valid only when every shard was, and none is missing.
    let v = &mut m.validity;
    v.reasons.clear();
    v.notes.clear();
    let mut unsustained = Vec::new();
    for (_, r) in runs {
        let i = r.params.shard.as_ref().and_then(|s| s.index).unwrap_or(0);
        v.reasons
            .extend(r.validity.reasons.iter().map(|x| format!("shard {i}: {x}")));
        v.notes
            .extend(r.validity.notes.iter().map(|x| format!("shard {i}: {x}")));
        if let Some(u) = &r.validity.unsustained {
            unsustained.push(format!("shard {i}: {u}"));
        }
    }
    if !missing.is_empty() {
        let offered = m.params.rate.map_or(String::new(), |r| {
            format!("; the offered load was {r:.0}/s of the whole run's")
        });
        v.reasons.push(format!(
            "degraded: shard(s) {missing:?} of {expect} missing, so this is part of the run{offered}"
        ));
    }
    let skews: Vec<f64> = all().filter_map(|r| r.summary.start_skew_ms).collect();
    m.summary.start_skew_ms = skews.iter().copied().reduce(f64::max);
    if !skews.is_empty() {
        v.notes.push(format!(
            "coordinated start: the shards began {} ms after it (each on its own clock)",
            skews
                .iter()
                .map(|s| format!("{s:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    v.unsustained = (!unsustained.is_empty()).then(|| unsustained.join("; "));
    v.valid = v.reasons.is_empty() && v.unsustained.is_none();

    m.histograms.latency = enc(&latency)?;
    m.histograms.service_time = service.as_ref().map(enc).transpose()?;
    m.histograms.generator_lag = lag.as_ref().map(enc).transpose()?;
    m.histograms.message_latency = message.as_ref().map(enc).transpose()?;
    m.intervals = merge_intervals(runs)?;
    m.repeats.clear();
    // Limits were checked against each shard's share; the whole is checked anew by the
    // command that merges.
    m.thresholds.clear();
    Ok(m)
}

/// The shards' series added interval by interval (each aligned on its own measured start).
fn merge_intervals(runs: &[(&str, &RunRecord)]) -> Result<Vec<IntervalRecord>, ShardError> {
    let mut by: BTreeMap<u64, (f64, u64, u64, Histogram<u64>)> = BTreeMap::new();
    for (_, r) in runs {
        for iv in &r.intervals {
            let key = (iv.start_s * 1000.0).round() as u64;
            let e = by
                .entry(key)
                .or_insert_with(|| (iv.start_s, 0, 0, latency_histogram()));
            e.1 += iv.calls;
            e.2 += iv.errors;
            if !iv.histogram.is_empty() {
                e.3.add(&hist(&iv.histogram)?)
                    .map_err(|e| ShardError::Histogram(e.to_string()))?;
            }
        }
    }
    by.into_values()
        .map(|(start_s, calls, errors, h)| {
            Ok(IntervalRecord {
                start_s,
                calls,
                errors,
                latency: summarize(&h),
                histogram: enc(&h)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Environment, ShardParams, SuiteRecord, Validity};
    use rand::{Rng, SeedableRng};

    /// A shard's file: one run of `point` whose latencies are `samples` (ns).
    fn shard(i: u32, n: u32, samples: &[u64]) -> ShardFile {
        let mut h = latency_histogram();
        for s in samples {
            h.saturating_record(*s);
        }
        let mut r = Results::new(
            "t".into(),
            "2026-12-08T00:00:00Z".into(),
            Environment::default(),
            SuiteRecord::default(),
        );
        let mut run = RunRecord {
            transport: "tcp".into(),
            point: "p".into(),
            ..RunRecord::default()
        };
        run.params.rate = Some(100.0);
        run.params.connections = 1;
        run.params.shard = Some(ShardParams {
            index: Some(i),
            count: Some(n),
            segment: format!("{i}/{n}:{}/{n}", i + 1),
            source: "--shard-index".into(),
        });
        run.summary.calls = samples.len() as u64;
        run.summary.ok = samples.len() as u64;
        run.summary.throughput_per_s = samples.len() as f64;
        run.summary.latency = summarize(&h);
        run.histograms.latency = encode(&h).unwrap();
        run.validity = Validity {
            valid: true,
            ..Validity::default()
        };
        r.runs.push(run);
        ShardFile {
            label: format!("shard-{i}.json"),
            results: r,
        }
    }

    #[test]
    fn one_histogram_equals_its_samples_split_over_shards_and_merged() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for n in [1u32, 2, 3, 5] {
            let samples: Vec<u64> = (0..20_000)
                .map(|_| rng.random_range(1_000..50_000_000u64))
                .collect();
            let mut whole = latency_histogram();
            let mut parts: Vec<Vec<u64>> = vec![Vec::new(); n as usize];
            for (k, s) in samples.iter().enumerate() {
                whole.saturating_record(*s);
                parts[k % n as usize].push(*s);
            }
            let files = (0..n).map(|i| shard(i, n, &parts[i as usize])).collect();
            let merged = merge(files, n, false).unwrap();
            let m = &merged.runs[0];
            assert_eq!(m.summary.latency, summarize(&whole), "{n} shards");
            assert_eq!(m.summary.calls, 20_000);
            assert_eq!(m.params.rate, Some(100.0 * f64::from(n)));
            let h = decode(&m.histograms.latency).unwrap();
            assert_eq!(h, whole, "count for count");
            assert!(m.validity.valid);
        }
    }

    #[test]
    fn missing_duplicate_and_foreign_shards_are_named() {
        let e = merge(vec![shard(0, 3, &[5]), shard(2, 3, &[5])], 3, false).unwrap_err();
        assert!(e.to_string().contains("tcp/p: shard 1 of 3"), "{e}");
        let partial = merge(vec![shard(0, 3, &[5]), shard(2, 3, &[5])], 3, true).unwrap();
        let v = &partial.runs[0].validity;
        assert!(
            !v.valid && v.reasons[0].contains("degraded: shard(s) [1] of 3 missing"),
            "{v:?}"
        );
        assert!(v.reasons[0].contains("offered load was 200/s"), "{v:?}");
        assert!(!partial.complete);
        let e = merge(vec![shard(0, 2, &[5]), shard(0, 2, &[6])], 2, false).unwrap_err();
        assert!(e.to_string().contains("both shard 0"), "{e}");
        let e = merge(vec![shard(0, 2, &[5]), shard(1, 3, &[6])], 2, false).unwrap_err();
        assert!(e.to_string().contains("shard 1 of 3, not of 2"), "{e}");
        let mut other = shard(1, 2, &[5]);
        other.results.runs[0].params.payload_bytes = 1024;
        let e = merge(vec![shard(0, 2, &[5]), other], 2, false).unwrap_err();
        assert!(
            e.to_string()
                .contains("payload_bytes: 0 in shard-0.json, 1024 in shard-1.json"),
            "{e}"
        );
        let mut build = shard(1, 2, &[5]);
        build.results.environment.git_sha = Some("abc".into());
        let e = merge(vec![shard(0, 2, &[5]), build], 2, false).unwrap_err();
        assert!(e.to_string().contains("build"), "{e}");
        let mut plain = shard(0, 1, &[5]);
        plain.results.runs[0].params.shard = None;
        let e = merge(vec![plain], 1, false).unwrap_err();
        assert!(e.to_string().contains("is not a shard"), "{e}");
    }
}
