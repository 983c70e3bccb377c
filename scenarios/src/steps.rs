//! Stepped schedules: one knob of a load point (the open loop's rate, or the closed loop's
//! concurrency) run at a series of values, `1k..20k` by `5k` or `1..64` by `x2`. Each step is
//! a load point of its own, named `POINT@VALUE`, so it has its own summary and validity in
//! `results.json`, and `compare` matches steps by name like any point.
//!
//! Why steps and not one run whose rate ramps: a step's figures (its percentiles, whether the
//! generator kept its schedule, whether the system sustained the rate) describe one load level,
//! and a warm-up at that level keeps the previous level's backlog out of them. A continuous
//! ramp mixes levels within every interval.

use std::fmt;

use wirebench_core::units::{format_rate, parse_rate};

use crate::load::{LoadSpec, Mode};

/// The most steps a series may have.
pub const MAX_STEPS: usize = 100;

/// Which knob is stepped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Knob {
    /// The open loop's rate, requests/s.
    Rate,
    /// The closed loop's calls in flight.
    Concurrency,
}

impl Knob {
    /// `rate` or `concurrency`.
    pub fn name(self) -> &'static str {
        match self {
            Knob::Rate => "rate",
            Knob::Concurrency => "concurrency",
        }
    }

    /// A value as a step's name shows it: `5k/s`, `16` (in flight).
    pub fn label(self, v: f64) -> String {
        match self {
            Knob::Rate => format_rate(v),
            Knob::Concurrency => format!("{v:.0}"),
        }
    }
}

/// How far apart the steps are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum By {
    /// Add this much each step (`5k`, `8`).
    Add(f64),
    /// Multiply by this each step (`x2`).
    Times(f64),
}

/// A stepped knob: from, to (both run), and by how much.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Steps {
    /// What is stepped.
    pub knob: Knob,
    /// The first value.
    pub from: f64,
    /// The last value (run even when the step does not land on it).
    pub to: f64,
    /// The spacing.
    pub by: By,
}

/// A stepped schedule that cannot be, with why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadSteps(pub String);

/// Whether `s` is a range (`A..B`), to be read with [`Steps::parse`].
pub fn is_range(s: &str) -> bool {
    s.contains("..")
}

impl Steps {
    /// Parses `A..B` with a step (`5k`, or `x2` to multiply). Rates take rate units
    /// (`1k..20k`), concurrency whole numbers (`1..64`).
    pub fn parse(knob: Knob, range: &str, step: Option<&str>) -> Result<Steps, BadSteps> {
        let bad = |why: String| BadSteps(why);
        let (a, b) = range
            .split_once("..")
            .ok_or_else(|| bad(format!("{range:?}: expected a range FROM..TO (1k..20k)")))?;
        let value = |s: &str| -> Result<f64, BadSteps> {
            match knob {
                Knob::Rate => parse_rate(s).map_err(|e| bad(format!("{range:?}: {e}"))),
                Knob::Concurrency => match s.trim().parse::<u32>() {
                    Ok(n) if n > 0 => Ok(f64::from(n)),
                    _ => Err(bad(format!(
                        "{range:?}: {s:?} is not a positive whole number of calls in flight"
                    ))),
                },
            }
        };
        let (from, to) = (value(a)?, value(b)?);
        if to <= from {
            return Err(bad(format!(
                "{range:?}: the range must rise (the first value below the last)"
            )));
        }
        let step = step.ok_or_else(|| {
            bad(format!(
                "{range:?} is a range: give its step too (--step 5k, or x2 to multiply; in a \
                 suite, step = \"5k\")"
            ))
        })?;
        let t = step.trim();
        let by = match t.strip_prefix(['x', '×', '*']) {
            Some(f) => match f.trim().parse::<f64>() {
                Ok(f) if f > 1.0 && f.is_finite() => By::Times(f),
                _ => return Err(bad(format!("step {step:?}: a factor must be above 1 (x2)"))),
            },
            None => By::Add(match knob {
                Knob::Rate => parse_rate(t).map_err(|e| bad(format!("step {step:?}: {e}")))?,
                Knob::Concurrency => match t.parse::<u32>() {
                    Ok(n) if n > 0 => f64::from(n),
                    _ => {
                        return Err(bad(format!(
                            "step {step:?}: expected a positive whole number (8) or a factor (x2)"
                        )));
                    }
                },
            }),
        };
        let s = Steps { knob, from, to, by };
        // Counted, not listed: a range of millions must be refused without building it.
        let n = 1 + match by {
            By::Add(d) => ((to - from) / d).ceil(),
            By::Times(f) => ((to / from).ln() / f.ln()).ceil(),
        } as usize;
        if n > MAX_STEPS {
            return Err(bad(format!(
                "{range:?} by {step}: {n} steps, more than {MAX_STEPS}; take a larger step"
            )));
        }
        Ok(s)
    }

    /// The values in order, `to` included. Concurrency steps round to whole callers.
    pub fn values(&self) -> Vec<f64> {
        let mut v = Vec::new();
        let mut x = self.from;
        // A value within a thousandth of `to` is `to` (fractional steps accumulate error).
        while x < self.to * (1.0 - 1e-9) && v.len() <= MAX_STEPS {
            let x_ = match self.knob {
                Knob::Concurrency => x.round(),
                Knob::Rate => x,
            };
            if v.last() != Some(&x_) {
                v.push(x_);
            }
            x = match self.by {
                By::Add(d) => x + d,
                By::Times(f) => x * f,
            };
        }
        v.push(self.to);
        v
    }
}

impl fmt::Display for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = match self.by {
            By::Add(d) => self.knob.label(d),
            By::Times(x) => format!("x{x}"),
        };
        write!(
            f,
            "{} {}..{} by {by}",
            self.knob.name(),
            self.knob.label(self.from),
            self.knob.label(self.to)
        )
    }
}

/// A step's place in its series.
#[derive(Clone, Debug, PartialEq)]
pub struct Place {
    /// The stepped point's name.
    pub series: String,
    /// What was stepped.
    pub knob: Knob,
    /// This step's value.
    pub value: f64,
    /// Its position, from 0.
    pub index: u32,
}

/// One step of a stepped point: its spec (named `SERIES@VALUE`) and its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The step's load point.
    pub spec: LoadSpec,
    /// Where it stands in the series.
    pub place: Place,
}

/// The steps of `spec` (whose loop must be the knob's: open for a rate, closed for
/// concurrency).
pub fn expand(spec: &LoadSpec, steps: &Steps) -> Result<Vec<Step>, BadSteps> {
    match (&spec.mode, steps.knob) {
        (Mode::Open { .. }, Knob::Rate) | (Mode::Closed { .. }, Knob::Concurrency) => {}
        _ => {
            return Err(BadSteps(format!(
                "{}: a stepped {} needs the {} loop",
                spec.name,
                steps.knob.name(),
                if steps.knob == Knob::Rate {
                    "open"
                } else {
                    "closed"
                }
            )));
        }
    }
    Ok(steps
        .values()
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let mut s = spec.clone();
            match &mut s.mode {
                Mode::Open { rate, .. } => *rate = value,
                Mode::Closed { concurrency } => *concurrency = value as u32,
            }
            s.name = format!("{}@{}", spec.name, steps.knob.label(value));
            Step {
                spec: s,
                place: Place {
                    series: spec.name.clone(),
                    knob: steps.knob,
                    value,
                    index: i as u32,
                },
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(range: &str, step: &str) -> Vec<f64> {
        Steps::parse(Knob::Rate, range, Some(step))
            .unwrap()
            .values()
    }

    #[test]
    fn ranges_step_by_adding_or_multiplying_and_end_on_the_last_value() {
        assert_eq!(
            rates("1k..20k", "5k"),
            [1000.0, 6000.0, 11000.0, 16000.0, 20000.0]
        );
        assert_eq!(rates("1k..4k", "1k"), [1000.0, 2000.0, 3000.0, 4000.0]);
        assert_eq!(rates("500..4k", "x2"), [500.0, 1000.0, 2000.0, 4000.0]);
        let c = Steps::parse(Knob::Concurrency, "1..64", Some("x2")).unwrap();
        assert_eq!(c.values(), [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]);
        let c = Steps::parse(Knob::Concurrency, "1..10", Some("x1.5")).unwrap();
        assert_eq!(c.values(), [1.0, 2.0, 3.0, 5.0, 8.0, 10.0]);
        assert_eq!(c.to_string(), "concurrency 1..10 by x1.5");
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        let e = |knob, r: &str, s: Option<&str>| Steps::parse(knob, r, s).unwrap_err().0;
        assert!(e(Knob::Rate, "20k..1k", Some("1k")).contains("must rise"));
        assert!(e(Knob::Rate, "1k..20k", None).contains("give its step"));
        assert!(e(Knob::Rate, "1k..20k", Some("x1")).contains("above 1"));
        assert!(e(Knob::Rate, "1k..1M", Some("1k")).contains("1000 steps, more than 100"));
        assert!(e(Knob::Concurrency, "0..8", Some("1")).contains("positive whole"));
        assert!(e(Knob::Rate, "1k-20k", Some("1k")).contains("FROM..TO"));
    }

    #[test]
    fn expansion_names_each_step_after_its_value() {
        let spec = LoadSpec {
            name: "ramp".into(),
            mode: Mode::Open {
                rate: 1.0,
                schedule: crate::load::Schedule::Poisson,
                max_in_flight: 64,
            },
            ..LoadSpec::default()
        };
        let s = Steps::parse(Knob::Rate, "1k..2k", Some("500")).unwrap();
        let steps = expand(&spec, &s).unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s.spec.name.as_str()).collect();
        assert_eq!(names, ["ramp@1k/s", "ramp@1.5k/s", "ramp@2k/s"]);
        assert_eq!(steps[2].place.index, 2);
        assert!(matches!(steps[1].spec.mode, Mode::Open { rate, .. } if rate == 1500.0));
        let c = Steps::parse(Knob::Concurrency, "1..4", Some("x2")).unwrap();
        assert!(expand(&spec, &c).unwrap_err().0.contains("closed loop"));
    }
}
