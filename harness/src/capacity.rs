//! The capacity search: the highest offered rate whose step meets an SLO (the knee), found by
//! raising the rate geometrically until a step misses, then bisecting the bracket down to a
//! tolerance. Steps within noise of the SLO are run again and decided by majority; a step the
//! generator invalidated (its own lag, a busy host) is never taken as an answer either way:
//! the search stops there and says that the generator, not the system, limited it.
//!
//! The search is pure: it asks a probe for a verdict at a rate, so it is tested here without
//! a network, and `wirebench capacity` gives it a probe that runs a load point.

use std::sync::atomic::Ordering;

use wirebench_core::Transport;
use wirebench_reports::results::{
    CapacityRecord, CapacityStep, RunFailure, RunRecord, SloLine, StepInfo,
};
use wirebench_scenarios::capacity::CapacityPoint;
pub use wirebench_scenarios::capacity::SearchSpec;
use wirebench_scenarios::threshold::{Measure, Threshold};
use wirebench_transports::AnyTransport;

use crate::runner::{PlacedServer, RunContext, run_on};

/// A step whose SLO measure lies within this share of the limit is run again.
const NEAR: f64 = 0.1;

/// A probe's verdict on one run at one rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The SLO held, and the rate was sustained.
    Met,
    /// The SLO broke, or the rate was not sustained.
    Missed,
    /// The run cannot decide: the generator lagged or the host was busy.
    Unjudged,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "missed",
            Verdict::Unjudged => "unjudged",
        }
    }
}

/// One run's verdict, with its reason and whether its measure was within noise of the limit.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// The point name the run was recorded under.
    pub point: String,
    /// Met, missed or unjudged.
    pub verdict: Verdict,
    /// Why, in words.
    pub why: String,
    /// Its measure lay within noise of an SLO limit: worth running again.
    pub near: bool,
}

/// Rounds a rate to 3 significant digits (the steps' names and the bisection points stay
/// readable; 0.1 % resolution is far finer than any tolerance allowed).
pub fn round_rate(r: f64) -> f64 {
    if r <= 0.0 || !r.is_finite() {
        return r;
    }
    let scale = 10f64.powi(r.log10().floor() as i32 - 2);
    (r / scale).round() * scale
}

/// Runs the search. `probe(rate, attempt)` runs one step (`None`: interrupted, stop).
pub fn search(
    spec: &SearchSpec,
    transport: &str,
    series: &str,
    slo: &[String],
    mut probe: impl FnMut(f64, u32) -> Option<Probe>,
) -> CapacityRecord {
    let mut record = CapacityRecord {
        transport: transport.to_owned(),
        series: series.to_owned(),
        slo: slo.to_vec(),
        outcome: String::new(),
        knee_per_s: None,
        missed_per_s: None,
        bracket: None,
        tolerance: spec.tolerance,
        verdict: String::new(),
        steps: Vec::new(),
        slo_line: None,
        min_rate_per_s: None,
    };
    let mut met: Option<f64> = None;
    let mut missed: Option<f64> = None;
    let start = round_rate(spec.start.clamp(spec.floor, spec.ceiling));
    let mut rate = start;
    // A miss at the first rate is checked once against the next rate up: on a small VM a low
    // rate leaves the CPUs idle, and waking them on every hop can break a tight SLO that a
    // busier rate keeps. The knee is the highest rate that meets the SLO, so the search
    // climbs from there, and the verdict says the start missed.
    let mut low_miss: Option<f64> = None;
    let mut checking_low = false;
    let mut skipped: Option<f64> = None;
    let mut skipping = false;
    let outcome = loop {
        let Some(v) = decide(spec, rate, &mut probe, &mut record.steps) else {
            break "interrupted";
        };
        match v {
            // Below any miss, an unjudged step is checked one rate up: an idle generator at a
            // low rate can lag for the host's wake-ups, and a busier one keep its schedule. If
            // the rate above meets the SLO, the knee is above both and the unjudged step was
            // never a candidate; if not, the search stops there.
            Verdict::Unjudged if missed.is_none() && !skipping && rate < spec.ceiling => {
                skipped = Some(rate);
                skipping = true;
                rate = round_rate((rate * spec.factor).min(spec.ceiling));
                continue;
            }
            Verdict::Unjudged => break "generator-limited",
            Verdict::Met => {
                if checking_low {
                    low_miss = missed.take();
                }
                met = Some(rate);
            }
            Verdict::Missed if rate == start && met.is_none() && start < spec.ceiling => {
                missed = Some(rate);
                checking_low = true;
                rate = round_rate((start * spec.factor).min(spec.ceiling));
                continue;
            }
            Verdict::Missed if checking_low => {
                // Missed above too: the start's miss stands, and the search goes down from it.
                missed = Some(start);
            }
            Verdict::Missed => missed = Some(rate),
        }
        checking_low = false;
        skipping = false;
        let next = match (met, missed) {
            (Some(lo), Some(hi)) => {
                if (hi - lo) / lo <= spec.tolerance {
                    break "found";
                }
                round_rate((lo + hi) / 2.0)
            }
            (Some(lo), None) if lo >= spec.ceiling => break "above-ceiling",
            (Some(lo), None) => round_rate((lo * spec.factor).min(spec.ceiling)),
            (None, Some(hi)) if hi <= spec.floor => break "below-floor",
            (None, Some(hi)) => round_rate((hi / spec.factor).max(spec.floor)),
            (None, None) => unreachable!("a step was decided"),
        };
        // Rounding can land on a rate already decided: the bracket is as fine as it gets.
        if Some(next) == met || Some(next) == missed {
            break "found";
        }
        rate = next;
    };
    record.outcome = outcome.to_owned();
    record.knee_per_s = met;
    record.missed_per_s = missed;
    record.bracket = met.zip(missed).map(|(lo, hi)| (hi - lo) / lo);
    record.verdict = verdict_text(&record);
    if let (Some(rate), Some(knee)) = (skipped, met)
        && knee > rate
    {
        record.verdict.push_str(&format!(
            "; the step at {} could not be judged (the generator lagged), and a higher rate \
             met the SLO",
            rate_text(rate)
        ));
    }
    if let Some(low) = low_miss {
        record.verdict.push_str(&format!(
            "; the SLO also broke at {}, a lower rate (an idle host's wake-ups at low rates)",
            rate_text(low)
        ));
    }
    record
}

/// Runs the step at `rate` (again, when within noise) and decides it.
fn decide(
    spec: &SearchSpec,
    rate: f64,
    probe: &mut impl FnMut(f64, u32) -> Option<Probe>,
    steps: &mut Vec<CapacityStep>,
) -> Option<Verdict> {
    let first = probe(rate, 0)?;
    let mut runs = vec![first];
    // An unjudged run may be a moment of someone else's load: one more try before the search
    // gives up on this rate.
    if runs[0].verdict == Verdict::Unjudged {
        runs.push(probe(rate, 1)?);
    } else if runs[0].near {
        for attempt in 1..=spec.repeats {
            runs.push(probe(rate, attempt)?);
        }
    }
    let count = |v: Verdict| runs.iter().filter(|p| p.verdict == v).count();
    let (met, missed) = (count(Verdict::Met), count(Verdict::Missed));
    let verdict = if met + missed == 0 {
        Verdict::Unjudged
    } else if met > missed {
        Verdict::Met
    } else {
        // A tie is a miss: a knee is claimed only where the SLO held more often than not.
        Verdict::Missed
    };
    let last = runs
        .iter()
        .rev()
        .find(|p| p.verdict == verdict)
        .unwrap_or(&runs[runs.len() - 1]);
    let why = if runs.len() > 1 {
        format!(
            "{} ({} of {} runs met it, {} missed)",
            last.why,
            met,
            runs.len(),
            missed
        )
    } else {
        last.why.clone()
    };
    steps.push(CapacityStep {
        rate_per_s: rate,
        point: last.point.clone(),
        verdict: verdict.name().to_owned(),
        why,
        runs: runs.len() as u32,
    });
    Some(verdict)
}

/// A rate as people write it: `850/s`, `12.3k/s`, `1.25M/s` (the project's one rate format).
pub use wirebench_core::units::format_rate as rate_text;

/// The answer in words, with how far it can be trusted.
fn verdict_text(r: &CapacityRecord) -> String {
    let slo = r.slo.join(", ");
    let last_unjudged = r
        .steps
        .iter()
        .rev()
        .find(|s| s.verdict == "unjudged")
        .map(|s| format!("{} ({})", rate_text(s.rate_per_s), s.why));
    match (r.outcome.as_str(), r.knee_per_s, r.missed_per_s) {
        ("found", Some(lo), Some(hi)) => format!(
            "knee {}: {slo} held at {} and broke at {} (bracket +{:.1}%, tolerance {:.0}%)",
            rate_text(lo),
            rate_text(lo),
            rate_text(hi),
            100.0 * (hi - lo) / lo,
            100.0 * r.tolerance
        ),
        ("above-ceiling", Some(lo), _) => format!(
            "at least {}: {slo} still held at the highest rate allowed (raise --max-rate)",
            rate_text(lo)
        ),
        ("below-floor", _, Some(hi)) => format!(
            "below {}: {slo} broke even at the lowest rate allowed (lower --min-probe)",
            rate_text(hi)
        ),
        ("generator-limited", lo, hi) => {
            let held = lo.map_or("no rate tried held the SLO".to_owned(), |lo| {
                format!("{slo} held at {}", rate_text(lo))
            });
            let broke = hi.map_or(String::new(), |hi| format!(", broke at {}", rate_text(hi)));
            format!(
                "not decided: {held}{broke}; the step at {} could not be judged, so the knee \
                 is not claimed beyond what held",
                last_unjudged.unwrap_or_else(|| "the last rate".into())
            )
        }
        ("interrupted", lo, _) => format!(
            "interrupted{}",
            lo.map_or(String::new(), |lo| format!(
                ": {slo} held at {} so far",
                rate_text(lo)
            ))
        ),
        _ => "no step was decided".to_owned(),
    }
}

/// What searching one transport gave.
#[derive(Debug)]
pub struct Searched {
    /// The knee and every step's verdict.
    pub record: CapacityRecord,
    /// Every step's run, in the order run.
    pub runs: Vec<RunRecord>,
    /// The step (or the server) that could not run, which ended the search.
    pub failure: Option<RunFailure>,
}

/// Searches `point` on `transport`: places its server once and runs the steps on it, each a
/// run of its own. `each` is told of every step as it finishes (to print it, or save the
/// results so far); an error from it ends the search as a failure.
pub fn search_transport(
    point: &CapacityPoint,
    transport: AnyTransport,
    ctx: &RunContext,
    mut each: impl FnMut(&RunRecord, &Probe) -> anyhow::Result<()>,
) -> Searched {
    let name = transport.name();
    let texts: Vec<String> = point.slo.iter().map(|t| t.text.clone()).collect();
    let fail = |e: &anyhow::Error| RunFailure {
        transport: name.to_owned(),
        point: point.name.clone(),
        error: format!("{e:#}"),
    };
    let server = match PlacedServer::start(transport, point.spec.tls, ctx) {
        Ok(s) => s,
        Err(e) => {
            return Searched {
                record: CapacityRecord {
                    transport: name.to_owned(),
                    series: point.name.clone(),
                    slo: texts,
                    outcome: "failed".into(),
                    tolerance: point.search.tolerance,
                    verdict: format!("the server could not start: {e:#}"),
                    ..CapacityRecord::default()
                },
                runs: Vec::new(),
                failure: Some(fail(&e)),
            };
        }
    };
    let mut failure: Option<anyhow::Error> = None;
    let mut runs = Vec::new();
    let mut record = search(&point.search, name, &point.name, &texts, |rate, attempt| {
        if ctx.interrupted.load(Ordering::SeqCst) {
            return None;
        }
        let mut step = point.step(rate);
        if attempt > 0 {
            step.name = format!("{}#{}", step.name, attempt + 1);
        }
        // A different seed per attempt: a repeat is a new draw of the schedule.
        step.seed = point.spec.seed.wrapping_add(u64::from(attempt));
        let mut run = match run_on(&server, &step, ctx) {
            Ok(r) => r,
            Err(e) => {
                failure = Some(e);
                return None;
            }
        };
        run.step = Some(StepInfo {
            series: point.name.clone(),
            knob: "rate".into(),
            value: rate,
            index: runs.len() as u32,
        });
        // The SLO's outcomes decide the step; they are not the run's thresholds (a step that
        // misses is how a search finds its knee, not a breach that fails the command).
        let outcomes = crate::thresholds::check(&point.slo, &run.summary);
        let probe = judge(&run, &point.slo, &outcomes);
        if let Err(e) = each(&run, &probe) {
            failure = Some(e);
            return None;
        }
        runs.push(run);
        Some(probe)
    });
    record.min_rate_per_s = point.min_rate;
    record.slo_line = point.slo.iter().find_map(|t| match t.measure {
        Measure::Latency(q) => Some(SloLine {
            quantile: q.name().to_owned(),
            limit_ns: t.limit as u64,
        }),
        _ => None,
    });
    if let Some(e) = &failure {
        record.outcome = "failed".into();
        record.verdict = format!("a step could not run: {e:#}");
    }
    Searched {
        record,
        runs,
        failure: failure.as_ref().map(fail),
    }
}

/// A step's verdict: unjudged when the run is invalid (the tool's or the host's fault), missed
/// when the rate was not sustained or an SLO limit broke, else met.
pub fn judge(
    run: &RunRecord,
    slo: &[Threshold],
    outcomes: &[wirebench_reports::results::ThresholdOutcome],
) -> Probe {
    let v = &run.validity;
    let point = run.point.clone();
    if !v.reasons.is_empty() {
        return Probe {
            point,
            verdict: Verdict::Unjudged,
            why: v.reasons.join("; "),
            near: false,
        };
    }
    if let Some(u) = &v.unsustained {
        return Probe {
            point,
            verdict: Verdict::Missed,
            why: format!("not sustained: {u}"),
            near: false,
        };
    }
    let near = slo.iter().any(|t| {
        crate::thresholds::measured(t.measure, &run.summary)
            .is_some_and(|m| t.limit > 0.0 && (m - t.limit).abs() / t.limit < NEAR)
    });
    let text = |o: &wirebench_reports::results::ThresholdOutcome| {
        format!("{}: {}", o.threshold, o.measured)
    };
    let broke: Vec<String> = outcomes.iter().filter(|o| !o.passed).map(text).collect();
    Probe {
        point,
        verdict: if broke.is_empty() {
            Verdict::Met
        } else {
            Verdict::Missed
        },
        why: if broke.is_empty() {
            outcomes.iter().map(text).collect::<Vec<_>>().join(", ")
        } else {
            format!("broke {}", broke.join(", "))
        },
        near,
    }
}

/// Whether a capacity record's knee fell below its minimum rate, and how to say so.
pub fn below_min(c: &CapacityRecord) -> Option<String> {
    let min = c.min_rate_per_s?;
    if c.knee_per_s.is_some_and(|k| k >= min) {
        return None;
    }
    Some(format!(
        "{} {}: knee {} below the minimum {}",
        c.transport,
        c.series,
        c.knee_per_s.map_or("not found".into(), rate_text),
        rate_text(min)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A system that meets the SLO below `knee` (exclusive), runs near it within `noise` of
    /// the knee, and whose generator gives up above `gen_limit`.
    fn system(knee: f64, gen_limit: f64) -> impl FnMut(f64, u32) -> Option<Probe> {
        move |rate, _| {
            Some(Probe {
                point: format!("p@{rate}"),
                verdict: if rate > gen_limit {
                    Verdict::Unjudged
                } else if rate < knee {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                why: String::new(),
                near: (rate - knee).abs() / knee < 0.02,
            })
        }
    }

    #[test]
    fn brackets_the_knee_within_the_tolerance() {
        for knee in [37.0, 850.0, 4321.0, 77_000.0, 2.5e6] {
            let spec = SearchSpec {
                ceiling: 1e7,
                ..SearchSpec::default()
            };
            let r = search(
                &spec,
                "t",
                "s",
                &["p99 < 1ms".into()],
                system(knee, f64::MAX),
            );
            assert_eq!(r.outcome, "found", "{knee}: {}", r.verdict);
            let (lo, hi) = (r.knee_per_s.unwrap(), r.missed_per_s.unwrap());
            assert!(lo < knee && hi >= knee, "{knee}: [{lo}, {hi}]");
            assert!((hi - lo) / lo <= spec.tolerance, "{knee}: [{lo}, {hi}]");
            assert!(r.steps.len() < 25, "{}", r.steps.len());
        }
    }

    #[test]
    fn an_unjudged_low_step_below_a_met_one_is_passed_over() {
        // The generator lags at 2k/s only; everything else meets up to 50k/s.
        let probe = |rate: f64, _| {
            Some(Probe {
                point: format!("p@{rate}"),
                verdict: if rate == 2000.0 {
                    Verdict::Unjudged
                } else if rate < 50_000.0 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                why: String::new(),
                near: false,
            })
        };
        let r = search(&SearchSpec::default(), "t", "s", &[], probe);
        assert_eq!(r.outcome, "found", "{}", r.verdict);
        assert!(r.knee_per_s.unwrap() >= 47_500.0, "{:?}", r.knee_per_s);
        assert!(
            r.verdict.contains("2k/s could not be judged"),
            "{}",
            r.verdict
        );
    }

    #[test]
    fn a_miss_at_the_start_is_checked_one_rate_up() {
        // Misses at 1k/s (low-rate tail), meets from 2k/s up to 30k/s.
        let probe = |rate: f64, _| {
            Some(Probe {
                point: format!("p@{rate}"),
                verdict: if (2000.0..30_000.0).contains(&rate) {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                why: String::new(),
                near: false,
            })
        };
        let r = search(
            &SearchSpec::default(),
            "t",
            "s",
            &["p99 < 1ms".into()],
            probe,
        );
        assert_eq!(r.outcome, "found", "{}", r.verdict);
        let knee = r.knee_per_s.unwrap();
        assert!((28_000.0..30_000.0).contains(&knee), "{knee}");
        assert!(r.verdict.contains("also broke at 1k/s"), "{}", r.verdict);
        // Missing at the start and one up: the search goes down from the start.
        let r = search(
            &SearchSpec::default(),
            "t",
            "s",
            &[],
            system(400.0, f64::MAX),
        );
        assert_eq!(r.outcome, "found");
        assert!(r.knee_per_s.unwrap() < 400.0 && r.missed_per_s.unwrap() >= 400.0);
        assert!(!r.verdict.contains("also broke"), "{}", r.verdict);
    }

    #[test]
    fn near_steps_run_again_and_the_majority_decides() {
        let mut calls = 0;
        // Near the knee the first run misses, the next two meet: met.
        let probe = |rate: f64, attempt: u32| {
            calls += 1;
            Some(Probe {
                point: format!("p@{rate}#{attempt}"),
                verdict: if rate < 1000.0 || attempt > 0 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                why: "w".into(),
                near: true,
            })
        };
        let spec = SearchSpec {
            start: 1000.0,
            ceiling: 1000.0,
            ..SearchSpec::default()
        };
        let r = search(&spec, "t", "s", &[], probe);
        assert_eq!(r.outcome, "above-ceiling");
        assert_eq!(r.steps[0].runs, 3);
        assert_eq!(r.steps[0].verdict, "met");
        assert!(
            r.steps[0].why.contains("2 of 3 runs met"),
            "{}",
            r.steps[0].why
        );
        assert_eq!(calls, 3);
    }

    #[test]
    fn an_unjudged_step_is_never_the_answer() {
        let r = search(
            &SearchSpec::default(),
            "t",
            "s",
            &["p99 < 1ms".into()],
            system(50_000.0, 10_000.0),
        );
        assert_eq!(r.outcome, "generator-limited");
        // 8k held; 16k could not be judged (twice): no knee is claimed beyond 8k.
        assert_eq!(r.knee_per_s, Some(8000.0));
        assert_eq!(r.missed_per_s, None);
        let last = r.steps.last().unwrap();
        assert_eq!((last.verdict.as_str(), last.runs), ("unjudged", 2));
        assert!(r.verdict.contains("not decided"), "{}", r.verdict);
    }

    #[test]
    fn floor_ceiling_and_interruption_are_said() {
        let spec = SearchSpec {
            floor: 100.0,
            ceiling: 10_000.0,
            ..SearchSpec::default()
        };
        let r = search(&spec, "t", "s", &[], system(1.0, f64::MAX));
        assert_eq!((r.outcome.as_str(), r.knee_per_s), ("below-floor", None));
        let r = search(&spec, "t", "s", &[], system(1e9, f64::MAX));
        assert_eq!(r.outcome, "above-ceiling");
        assert_eq!(r.knee_per_s, Some(10_000.0));
        let mut n = 0;
        let r = search(&spec, "t", "s", &[], |rate, a| {
            n += 1;
            (n < 3).then(|| system(1e9, f64::MAX)(rate, a)).flatten()
        });
        assert_eq!(r.outcome, "interrupted");
        assert_eq!(r.knee_per_s, Some(2000.0));
    }

    #[test]
    fn rates_round_to_three_digits_and_read_well() {
        assert_eq!(round_rate(12_345.0), 12_300.0);
        assert_eq!(round_rate(999.6), 1000.0);
        assert_eq!(rate_text(12_300.0), "12.3k/s");
        assert_eq!(rate_text(850.0), "850/s");
        assert_eq!(rate_text(1_250_000.0), "1.25M/s");
    }
}
