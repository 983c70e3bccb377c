//! Absolute thresholds, as k6 users write them: `p99 < 1ms`, `errors < 0.1%`,
//! `throughput > 4500/s`. A suite lists them globally or per load point, `run` and `load` take
//! them with `--threshold`; each is checked against every run, and a breach fails the command.
//! Units are the project's own (`wirebench_core::units`): `1ms`, `4.5k/s`, `0.1%`.

use std::fmt;

use wirebench_core::units::{parse_duration, parse_rate};

/// What a threshold limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Completed calls per second.
    Throughput,
    /// A latency percentile (`p50`, `p90`, `p99`, `p99.9`, `p99.99`) or the maximum, as the
    /// quantile in [0, 1] (1 = max).
    Latency(Quantile),
    /// The share of completed calls that failed.
    Errors,
    /// Client CPU per call.
    CpuClient,
    /// Server CPU per call.
    CpuServer,
}

/// A latency quantile a threshold may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantile {
    /// `p50`.
    P50,
    /// `p90`.
    P90,
    /// `p99`.
    P99,
    /// `p99.9`.
    P999,
    /// `p99.99`.
    P9999,
    /// `max`.
    Max,
}

impl Quantile {
    /// As a threshold writes it: `p99`, `p99.9`, `max`.
    pub fn name(self) -> &'static str {
        match self {
            Quantile::P50 => "p50",
            Quantile::P90 => "p90",
            Quantile::P99 => "p99",
            Quantile::P999 => "p99.9",
            Quantile::P9999 => "p99.99",
            Quantile::Max => "max",
        }
    }
}

/// The names a threshold's left side may take.
pub const MEASURES: [&str; 10] = [
    "throughput",
    "p50",
    "p90",
    "p99",
    "p99.9",
    "p99.99",
    "max",
    "errors",
    "cpu-client",
    "cpu-server",
];

impl Measure {
    fn parse(s: &str) -> Option<Measure> {
        Some(match s {
            "throughput" => Measure::Throughput,
            "p50" => Measure::Latency(Quantile::P50),
            "p90" => Measure::Latency(Quantile::P90),
            "p99" => Measure::Latency(Quantile::P99),
            "p99.9" => Measure::Latency(Quantile::P999),
            "p99.99" => Measure::Latency(Quantile::P9999),
            "max" => Measure::Latency(Quantile::Max),
            "errors" => Measure::Errors,
            "cpu-client" => Measure::CpuClient,
            "cpu-server" => Measure::CpuServer,
            _ => return None,
        })
    }
}

/// The comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
}

impl Op {
    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Less => value < limit,
            Op::LessOrEqual => value <= limit,
            Op::Greater => value > limit,
            Op::GreaterOrEqual => value >= limit,
        }
    }
}

/// One threshold: `measure op limit`, in the measure's unit — nanoseconds for latencies,
/// calls per second for throughput, a fraction for errors, microseconds for CPU per call.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// What it limits.
    pub measure: Measure,
    /// How.
    pub op: Op,
    /// The limit.
    pub limit: f64,
    /// As written, trimmed (`p99 < 1ms`).
    pub text: String,
}

/// A threshold that does not parse, with what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("threshold {text:?}: {why}")]
pub struct BadThreshold {
    /// As given.
    pub text: String,
    /// What is wrong.
    pub why: String,
}

impl Threshold {
    /// Parses `MEASURE OP LIMIT` (`p99 < 1ms`, `errors <= 0.1%`, `throughput > 4.5k/s`,
    /// `cpu-server < 20us`).
    pub fn parse(text: &str) -> Result<Threshold, BadThreshold> {
        let bad = |why: String| BadThreshold {
            text: text.to_owned(),
            why,
        };
        let t = text.trim();
        let (at, op, len) = [
            ("<=", Op::LessOrEqual),
            (">=", Op::GreaterOrEqual),
            ("<", Op::Less),
            (">", Op::Greater),
        ]
        .iter()
        .find_map(|(sym, op)| t.find(sym).map(|i| (i, *op, sym.len())))
        .ok_or_else(|| {
            bad("expected MEASURE < LIMIT or MEASURE > LIMIT (e.g. \"p99 < 1ms\")".into())
        })?;
        let name = t[..at].trim().to_ascii_lowercase();
        let limit = t[at + len..].trim();
        let measure = Measure::parse(&name).ok_or_else(|| {
            bad(format!(
                "unknown measure {name:?}; expected one of {}",
                MEASURES.join(", ")
            ))
        })?;
        let limit = Threshold::limit(measure, limit).map_err(bad)?;
        Ok(Threshold {
            measure,
            op,
            limit,
            text: t.to_owned(),
        })
    }

    fn limit(measure: Measure, s: &str) -> Result<f64, String> {
        match measure {
            Measure::Latency(_) => parse_duration(s)
                .map(|d| d.as_nanos() as f64)
                .map_err(|e| format!("a latency limit is a duration (1ms, 250us): {e}")),
            Measure::CpuClient | Measure::CpuServer => parse_duration(s)
                .map(|d| d.as_secs_f64() * 1e6)
                .map_err(|e| format!("a CPU-per-call limit is a duration (20us): {e}")),
            Measure::Throughput => {
                let r = s.strip_suffix("/s").unwrap_or(s).trim();
                parse_rate(r).map_err(|e| format!("a throughput limit is a rate (4500/s): {e}"))
            }
            Measure::Errors => {
                let p = s
                    .strip_suffix('%')
                    .ok_or_else(|| "an error limit is a percentage (0.1%)".to_owned())?;
                let v: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("{p:?} is not a number"))?;
                if !(0.0..=100.0).contains(&v) {
                    return Err(format!("{v}% is not between 0% and 100%"));
                }
                Ok(v / 100.0)
            }
        }
    }

    /// Whether `value` (in the measure's unit) keeps within the threshold.
    pub fn holds(&self, value: f64) -> bool {
        self.op.holds(value, self.limit)
    }

    /// `value` in the measure's unit, as people read it (`1.23 ms`, `4512/s`, `0.05%`).
    pub fn show(&self, value: f64) -> String {
        match self.measure {
            Measure::Latency(_) => {
                if value >= 1e9 {
                    format!("{:.2} s", value / 1e9)
                } else if value >= 1e6 {
                    format!("{:.2} ms", value / 1e6)
                } else {
                    format!("{:.1} µs", value / 1e3)
                }
            }
            Measure::Throughput => format!("{value:.0}/s"),
            Measure::Errors => format!("{:.3}%", value * 100.0),
            Measure::CpuClient | Measure::CpuServer => format!("{value:.1} µs"),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_in_each_unit() {
        let t = Threshold::parse(" p99 < 1ms ").unwrap();
        assert_eq!(t.measure, Measure::Latency(Quantile::P99));
        assert_eq!(
            (t.op, t.limit, t.text.as_str()),
            (Op::Less, 1e6, "p99 < 1ms")
        );
        let t = Threshold::parse("errors < 0.1%").unwrap();
        assert_eq!((t.measure, t.limit), (Measure::Errors, 0.001));
        let t = Threshold::parse("throughput > 4500/s").unwrap();
        assert_eq!(
            (t.measure, t.op, t.limit),
            (Measure::Throughput, Op::Greater, 4500.0)
        );
        let t = Threshold::parse("throughput>=4.5k").unwrap();
        assert_eq!((t.op, t.limit), (Op::GreaterOrEqual, 4500.0));
        let t = Threshold::parse("P99.9 <= 250us").unwrap();
        assert_eq!((t.op, t.limit), (Op::LessOrEqual, 250_000.0));
        let t = Threshold::parse("cpu-server < 20us").unwrap();
        assert_eq!((t.measure, t.limit), (Measure::CpuServer, 20.0));
    }

    #[test]
    fn bad_thresholds_say_what_was_expected() {
        for (text, expect) in [
            ("p99 1ms", "expected MEASURE < LIMIT"),
            ("p42 < 1ms", "unknown measure \"p42\""),
            ("p99 < fast", "a latency limit is a duration"),
            ("errors < 5", "an error limit is a percentage"),
            ("errors < 150%", "not between 0% and 100%"),
            ("throughput > lots", "a throughput limit is a rate"),
        ] {
            let e = Threshold::parse(text).unwrap_err().to_string();
            assert!(e.contains(expect), "{text}: {e}");
            assert!(e.contains(text), "{e}");
        }
    }

    #[test]
    fn a_threshold_holds_or_not() {
        let t = Threshold::parse("p99 < 1ms").unwrap();
        assert!(t.holds(999_999.0));
        assert!(!t.holds(1e6));
        assert_eq!(t.show(1_234_000.0), "1.23 ms");
        let t = Threshold::parse("throughput >= 100/s").unwrap();
        assert!(t.holds(100.0) && !t.holds(99.9));
    }
}
