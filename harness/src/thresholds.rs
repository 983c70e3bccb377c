//! Checks a run against its absolute thresholds (`p99 < 1ms`, `errors < 0.1%`, ...): what the
//! run measured for each, and whether it kept within it. A measure the run lacks (server CPU
//! of a server we cannot see) is a breach: a limit that cannot be checked must not pass.

use wirebench_reports::results::{RunSummary, ThresholdOutcome};
use wirebench_scenarios::threshold::{Measure, Quantile, Threshold};

/// `summary` held to each of `thresholds`.
pub fn check(thresholds: &[Threshold], summary: &RunSummary) -> Vec<ThresholdOutcome> {
    thresholds
        .iter()
        .map(|t| match measured(t.measure, summary) {
            Some(v) => ThresholdOutcome {
                threshold: t.text.clone(),
                measured: t.show(v),
                passed: t.holds(v),
            },
            None => ThresholdOutcome {
                threshold: t.text.clone(),
                measured: "not measured".into(),
                passed: false,
            },
        })
        .collect()
}

/// What the run measured for `m`, in the threshold's unit (`None`: not measured).
pub fn measured(m: Measure, s: &RunSummary) -> Option<f64> {
    let l = &s.latency;
    Some(match m {
        Measure::Throughput => s.throughput_per_s,
        Measure::Latency(_) if l.count == 0 => return None,
        Measure::Latency(q) => {
            (match q {
                Quantile::P50 => l.p50_ns,
                Quantile::P90 => l.p90_ns,
                Quantile::P99 => l.p99_ns,
                Quantile::P999 => l.p999_ns,
                Quantile::P9999 => l.p9999_ns,
                Quantile::Max => l.max_ns,
            }) as f64
        }
        // Calls left unanswered count as failed.
        Measure::Errors => {
            let all = s.calls + s.incomplete;
            if all == 0 {
                return None;
            }
            (s.errors + s.incomplete) as f64 / all as f64
        }
        Measure::CpuClient => s.client.cpu_us_per_call,
        Measure::CpuServer => s.server.as_ref()?.cpu_us_per_call,
    })
}

#[cfg(test)]
mod tests {
    use wirebench_reports::results::LatencySummary;

    use super::*;

    fn summary() -> RunSummary {
        RunSummary {
            calls: 1000,
            ok: 998,
            errors: 2,
            throughput_per_s: 5000.0,
            latency: LatencySummary {
                count: 1000,
                p50_ns: 400_000,
                p99_ns: 1_200_000,
                ..LatencySummary::default()
            },
            ..RunSummary::default()
        }
    }

    fn check_one(text: &str, s: &RunSummary) -> ThresholdOutcome {
        let t = Threshold::parse(text).unwrap();
        check(std::slice::from_ref(&t), s).remove(0)
    }

    #[test]
    fn each_measure_is_read_from_the_summary() {
        let s = summary();
        let o = check_one("p99 < 1ms", &s);
        assert!(!o.passed);
        assert_eq!(o.measured, "1.20 ms");
        assert!(check_one("p50 < 1ms", &s).passed);
        assert!(check_one("throughput > 4500/s", &s).passed);
        assert!(!check_one("throughput > 6k/s", &s).passed);
        // 2 failed of 1000: 0.2 %.
        let o = check_one("errors < 0.1%", &s);
        assert_eq!((o.passed, o.measured.as_str()), (false, "0.200%"));
        assert!(check_one("errors <= 0.2%", &s).passed);
    }

    #[test]
    fn what_was_not_measured_is_a_breach() {
        let o = check_one("cpu-server < 20us", &summary());
        assert_eq!((o.passed, o.measured.as_str()), (false, "not measured"));
        let empty = RunSummary::default();
        assert!(!check_one("p99 < 1ms", &empty).passed);
    }
}
