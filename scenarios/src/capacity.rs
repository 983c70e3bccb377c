//! Capacity searches: what `wirebench capacity` and a suite's `[[capacity]]` entry ask for.
//! The shape of the load (method, payload, connections, ...), the SLO every step must meet,
//! and how the search walks the rates. The search itself runs in the harness.

use std::time::Duration;

use crate::load::{LoadSpec, Mode, Schedule};
use crate::threshold::{Measure, Op, Threshold};

/// How the search walks the rates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchSpec {
    /// The first rate tried, requests/s.
    pub start: f64,
    /// The lowest rate the search may try.
    pub floor: f64,
    /// The highest rate the search may try.
    pub ceiling: f64,
    /// Growth (and shrink) factor of the exponential phase.
    pub factor: f64,
    /// Bisect until the bracket `(missed - met) / met` is at most this.
    pub tolerance: f64,
    /// Extra runs of a step whose measure lies within noise of the SLO (majority decides).
    pub repeats: u32,
}

impl Default for SearchSpec {
    fn default() -> SearchSpec {
        SearchSpec {
            start: 1000.0,
            floor: 10.0,
            ceiling: 2e6,
            factor: 2.0,
            tolerance: 0.05,
            repeats: 2,
        }
    }
}

/// The tolerance's bounds: a bracket finer than 1 % is below the noise of one step, and one
/// wider than 50 % answers nothing.
pub const TOLERANCE: std::ops::RangeInclusive<f64> = 0.01..=0.5;

/// The most extra runs of a step near the SLO.
pub const MAX_REPEATS: u32 = 4;

impl SearchSpec {
    /// What is wrong with the search, if anything.
    pub fn validate(&self) -> Result<(), String> {
        let r = |v: f64| wirebench_core::units::format_rate(v);
        if !(self.floor > 0.0 && self.floor <= self.start && self.start <= self.ceiling) {
            return Err(format!(
                "the rates must satisfy 0 < min_probe ({}) <= start_rate ({}) <= max_rate ({})",
                r(self.floor),
                r(self.start),
                r(self.ceiling)
            ));
        }
        if !TOLERANCE.contains(&self.tolerance) {
            return Err(format!(
                "tolerance {:.1}%: it must be between 1% and 50%",
                self.tolerance * 100.0
            ));
        }
        if self.repeats > MAX_REPEATS {
            return Err(format!(
                "repeats {}: at most {MAX_REPEATS} extra runs of a step",
                self.repeats
            ));
        }
        Ok(())
    }
}

/// A capacity search: its series name, the load it steps, the SLO and the search.
#[derive(Clone, Debug, PartialEq)]
pub struct CapacityPoint {
    /// The series' name: its steps are runs named `NAME@RATE`.
    pub name: String,
    /// The load of every step (an open loop; its rate is the step's).
    pub spec: LoadSpec,
    /// What a step must meet: latency limits and the error share.
    pub slo: Vec<Threshold>,
    /// How the rates are walked.
    pub search: SearchSpec,
    /// Below this knee the command (or `run`) fails: a capacity gate for CI.
    pub min_rate: Option<f64>,
    /// Only against these transports (`None`: all selected).
    pub transports: Option<Vec<String>>,
}

impl CapacityPoint {
    /// The step at `rate`, named `NAME@RATE`.
    pub fn step(&self, rate: f64) -> LoadSpec {
        let mut s = self.spec.clone();
        if let Mode::Open { rate: r, .. } = &mut s.mode {
            *r = rate;
        }
        s.name = format!("{}@{}", self.name, wirebench_core::units::format_rate(rate));
        s
    }

    /// The SLO in one line.
    pub fn slo_text(&self) -> String {
        self.slo
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A rough time for the search: about fifteen steps of warm-up and measurement each.
    pub fn estimate(&self) -> Duration {
        self.spec.estimate() * 15
    }
}

/// The SLO of latency limits `limits` and an error share `max_errors` (0.001 = 0.1 %); each
/// limit must be a latency percentile.
pub fn slo(limits: &[Threshold], max_errors: f64) -> Result<Vec<Threshold>, String> {
    if let Some(t) = limits
        .iter()
        .find(|t| !matches!(t.measure, Measure::Latency(_)))
    {
        return Err(format!(
            "SLO {:?}: the SLO limits latency (p50 … p99.99, max); errors have max_errors, and \
             throughput is what the search finds",
            t.text
        ));
    }
    if !(0.0..=1.0).contains(&max_errors) {
        return Err(format!(
            "max_errors {}%: expected 0% to 100%",
            max_errors * 100.0
        ));
    }
    let mut slo = limits.to_vec();
    let pct = format!("{:.6}", max_errors * 100.0);
    slo.push(Threshold {
        measure: Measure::Errors,
        op: Op::LessOrEqual,
        limit: max_errors,
        text: format!(
            "errors <= {}%",
            pct.trim_end_matches('0').trim_end_matches('.')
        ),
    });
    Ok(slo)
}

/// The open loop every step runs: `schedule`, at most `max_in_flight` calls in flight.
pub fn open_loop(spec: &mut LoadSpec, schedule: Schedule, max_in_flight: u32, start: f64) {
    spec.mode = Mode::Open {
        rate: start,
        schedule,
        max_in_flight,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slo_takes_latency_limits_and_adds_the_error_share() {
        let p99 = Threshold::parse("p99 < 2ms").unwrap();
        let slo = slo(&[p99], 0.001).unwrap();
        assert_eq!(slo[1].text, "errors <= 0.1%");
        let tput = Threshold::parse("throughput > 5k/s").unwrap();
        assert!(
            super::slo(&[tput], 0.001)
                .unwrap_err()
                .contains("limits latency")
        );
    }

    #[test]
    fn searches_are_checked() {
        let ok = SearchSpec::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = SearchSpec { start: 5.0, ..ok };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("min_probe (10/s) <= start_rate (5/s)")
        );
        let bad = SearchSpec {
            tolerance: 0.001,
            ..ok
        };
        assert!(bad.validate().unwrap_err().contains("between 1% and 50%"));
    }
}
