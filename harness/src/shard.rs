//! Shards: one load generator's share of a run that many generators make together (a
//! Kubernetes Indexed Job, `srun -n N`, a Nomad group). A shard is a segment `[a, b)` of the
//! whole, as k6's execution segments are: shard `i` of `n` is `[i/n, (i+1)/n)`. Each whole
//! quantity (connections, calls in flight, a request count) is apportioned in integers as
//! `⌊Q·b⌋ − ⌊Q·a⌋`, so the shards' shares add up to exactly the whole; the rate is split in
//! proportion; each shard draws its own seed.
//!
//! Segments are kept as exact fractions (`1/3`, not 0.333…): a boundary computed in floating
//! point could give two neighbours the same unit, or none.

use wirebench_reports::results::ShardParams;
use wirebench_scenarios::load::{Length, LoadSpec, Mode};

/// Where the shard index comes from when `--shard-index` is absent, in order.
pub const INDEX_VARIABLES: [&str; 3] =
    ["JOB_COMPLETION_INDEX", "SLURM_PROCID", "NOMAD_ALLOC_INDEX"];

/// A fraction `num/den` in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction {
    num: u64,
    den: u64,
}

impl Fraction {
    fn new(num: u64, den: u64) -> Result<Fraction, String> {
        if den == 0 || num > den {
            return Err(format!("{num}/{den} is not a fraction between 0 and 1"));
        }
        Ok(Fraction { num, den })
    }

    /// Parses `1/3`, `0.25`, `25%`, `0` or `1`.
    pub fn parse(s: &str) -> Result<Fraction, String> {
        let t = s.trim();
        let bad = || format!("{s:?}: expected a fraction such as 1/3, 0.25 or 25%");
        if let Some((n, d)) = t.split_once('/') {
            let n = n.trim().parse().map_err(|_| bad())?;
            let d = d.trim().parse().map_err(|_| bad())?;
            return Fraction::new(n, d);
        }
        let (digits, scale) = match t.strip_suffix('%') {
            Some(p) => (p.trim(), 100u64),
            None => (t, 1),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if frac.len() > 9 || (int.is_empty() && frac.is_empty()) {
            return Err(bad());
        }
        let places = 10u64.pow(frac.len() as u32);
        let number = |d: &str| -> Result<u64, String> {
            if d.is_empty() {
                Ok(0)
            } else {
                d.parse().map_err(|_| bad())
            }
        };
        Fraction::new(number(int)? * places + number(frac)?, places * scale)
    }

    fn value(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// `⌊q · self⌋`, exactly.
    fn of(self, q: u64) -> u64 {
        (u128::from(q) * u128::from(self.num) / u128::from(self.den)) as u64
    }
}

impl std::fmt::Display for Fraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.num, self.den) {
            (0, _) => f.write_str("0"),
            (n, d) if n == d => f.write_str("1"),
            (n, d) => write!(f, "{n}/{d}"),
        }
    }
}

/// This generator's share of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Its segment's start.
    pub from: Fraction,
    /// Its segment's end.
    pub to: Fraction,
    /// Its index, when given as one of `count` equal shards.
    pub index: Option<u32>,
    /// How many equal shards, when so given.
    pub count: Option<u32>,
    /// Where the index came from: `--shard-index`, an engine's variable, or
    /// `--execution-segment`.
    pub source: String,
}

impl Shard {
    /// The shard the flags and the environment describe; `None` when the run is not sharded.
    /// `var` reads an environment variable (the real one, or a test's).
    pub fn resolve(
        index: Option<u32>,
        count: Option<u32>,
        segment: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Shard>, String> {
        if let Some(seg) = segment {
            if index.is_some() || count.is_some() {
                return Err(
                    "--execution-segment is a shard by itself: give it, or --shard-index and \
                     --shard-count, not both"
                        .into(),
                );
            }
            let (a, b) = seg.split_once(':').ok_or_else(|| {
                format!("--execution-segment {seg:?}: expected FROM:TO (1/3:2/3)")
            })?;
            let (from, to) = (Fraction::parse(a)?, Fraction::parse(b)?);
            if from.value() >= to.value() {
                return Err(format!(
                    "--execution-segment {seg:?}: the segment must be non-empty (FROM < TO)"
                ));
            }
            return Ok(Some(Shard {
                from,
                to,
                index: None,
                count: None,
                source: "--execution-segment".into(),
            }));
        }
        let Some(count) = count else {
            return match index {
                Some(_) => Err("--shard-index needs --shard-count (the count is explicit)".into()),
                None => Ok(None),
            };
        };
        if count == 0 {
            return Err("--shard-count must be at least 1".into());
        }
        let (index, source) = match index {
            Some(i) => (i, "--shard-index".to_owned()),
            None => {
                let found = INDEX_VARIABLES
                    .iter()
                    .find_map(|v| var(v).map(|value| (*v, value)));
                let Some((name, value)) = found else {
                    return Err(format!(
                        "--shard-count {count} without --shard-index: none of {} is set",
                        INDEX_VARIABLES.join(", ")
                    ));
                };
                let i = value.trim().parse::<u32>().map_err(|_| {
                    format!("{name}={value:?}: expected a shard index (0, 1, 2, ...)")
                })?;
                (i, name.to_owned())
            }
        };
        if index >= count {
            return Err(format!(
                "shard index {index} (from {source}) is not below --shard-count {count}"
            ));
        }
        Ok(Some(Shard {
            from: Fraction::new(u64::from(index), u64::from(count))?,
            to: Fraction::new(u64::from(index) + 1, u64::from(count))?,
            index: Some(index),
            count: Some(count),
            source,
        }))
    }

    /// This shard's share of a whole quantity `q`: `⌊q·to⌋ − ⌊q·from⌋`.
    pub fn share(&self, q: u64) -> u64 {
        self.to.of(q) - self.from.of(q)
    }

    /// `spec` cut to this shard: its share of the rate, connections, calls in flight and
    /// requests, and a seed of its own. A quantity whose share would be zero is an error
    /// naming it (a shard with no connection cannot run).
    pub fn apply(&self, spec: &LoadSpec) -> Result<LoadSpec, String> {
        let mut s = spec.clone();
        let part = |what: &str, q: u32| -> Result<u32, String> {
            match self.share(u64::from(q)) {
                0 => Err(format!(
                    "{what} {q} cannot be split to shard {self}: its share would be none \
                     (raise {what} to at least the shard count)"
                )),
                n => Ok(n as u32),
            }
        };
        s.connections = part("connections", spec.connections)?;
        s.workers = spec.workers.min(s.connections);
        match &mut s.mode {
            Mode::Open {
                rate,
                max_in_flight,
                ..
            } => {
                *rate *= self.to.value() - self.from.value();
                *max_in_flight = part("max_in_flight", *max_in_flight)?.max(s.workers);
            }
            Mode::Closed { concurrency } => {
                *concurrency = part("concurrency", *concurrency)?.max(s.connections);
            }
        }
        if let Length::Requests(n) = spec.length {
            s.length = Length::Requests(self.share(n).max(1));
        }
        // Shards draw independent schedules: the seed moves with the segment's start.
        s.seed = spec
            .seed
            .wrapping_add(self.from.num.wrapping_mul(0x9E37_79B9_7F4A_7C15) / self.from.den.max(1));
        if let Some(ramp) = &mut s.ramp {
            for st in &mut ramp.stages {
                st.rate *= self.to.value() - self.from.value();
            }
        }
        Ok(s)
    }

    /// As `results.json` records it.
    pub fn params(&self) -> ShardParams {
        ShardParams {
            index: self.index,
            count: self.count,
            segment: format!("{}:{}", self.from, self.to),
            source: self.source.clone(),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.index, self.count) {
            (Some(i), Some(n)) => write!(f, "{i} of {n}"),
            _ => write!(f, "{}:{}", self.from, self.to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirebench_scenarios::load::Schedule;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn shares_of_equal_shards_add_up_to_the_whole() {
        for n in 1..=7u32 {
            for q in [1u64, 2, 3, 7, 10, 64, 1000, 1023] {
                let total: u64 = (0..n)
                    .map(|i| {
                        Shard::resolve(Some(i), Some(n), None, none)
                            .unwrap()
                            .unwrap()
                            .share(q)
                    })
                    .sum();
                assert_eq!(total, q, "{q} over {n}");
            }
        }
    }

    #[test]
    fn segments_parse_exactly_and_contiguous_ones_add_up() {
        assert_eq!(Fraction::parse("1/3").unwrap().to_string(), "1/3");
        assert_eq!(
            Fraction::parse("0.25").unwrap(),
            Fraction::new(25, 100).unwrap()
        );
        assert_eq!(
            Fraction::parse("25%").unwrap(),
            Fraction::new(25, 100).unwrap()
        );
        assert_eq!(Fraction::parse("1").unwrap().to_string(), "1");
        assert!(Fraction::parse("3/2").is_err());
        assert!(Fraction::parse("half").is_err());
        let seg = |s: &str| Shard::resolve(None, None, Some(s), none).unwrap().unwrap();
        let parts = ["0:1/3", "1/3:0.5", "0.5:1"];
        for q in [1u64, 5, 6, 1000] {
            let total: u64 = parts.iter().map(|p| seg(p).share(q)).sum();
            assert_eq!(total, q);
        }
        assert!(Shard::resolve(None, None, Some("1/2:1/2"), none).is_err());
    }

    #[test]
    fn the_index_comes_from_the_flag_then_an_engine_variable() {
        let env = |name: &str| (name == "SLURM_PROCID").then(|| "2".to_owned());
        let s = Shard::resolve(None, Some(3), None, env).unwrap().unwrap();
        assert_eq!((s.index, s.source.as_str()), (Some(2), "SLURM_PROCID"));
        let k8s = |name: &str| match name {
            "JOB_COMPLETION_INDEX" => Some("0".to_owned()),
            "SLURM_PROCID" => Some("2".to_owned()),
            _ => None,
        };
        let s = Shard::resolve(None, Some(3), None, k8s).unwrap().unwrap();
        assert_eq!(s.source, "JOB_COMPLETION_INDEX");
        let s = Shard::resolve(Some(1), Some(3), None, k8s)
            .unwrap()
            .unwrap();
        assert_eq!((s.index, s.source.as_str()), (Some(1), "--shard-index"));
        // Not sharded at all without a count, whatever the environment says.
        assert_eq!(Shard::resolve(None, None, None, k8s), Ok(None));
        let e = Shard::resolve(None, Some(3), None, none).unwrap_err();
        assert!(e.contains("none of JOB_COMPLETION_INDEX"), "{e}");
        let e = Shard::resolve(Some(3), Some(3), None, none).unwrap_err();
        assert!(e.contains("not below --shard-count 3"), "{e}");
        let bad = |name: &str| (name == "NOMAD_ALLOC_INDEX").then(|| "x".to_owned());
        let e = Shard::resolve(None, Some(3), None, bad).unwrap_err();
        assert!(e.contains("NOMAD_ALLOC_INDEX=\"x\""), "{e}");
    }

    #[test]
    fn a_spec_is_cut_to_the_shard_and_the_cuts_add_up() {
        let spec = LoadSpec {
            mode: Mode::Open {
                rate: 1000.0,
                schedule: Schedule::Poisson,
                max_in_flight: 64,
            },
            connections: 4,
            workers: 2,
            ..LoadSpec::default()
        };
        let shards: Vec<LoadSpec> = (0..3)
            .map(|i| {
                Shard::resolve(Some(i), Some(3), None, none)
                    .unwrap()
                    .unwrap()
                    .apply(&spec)
                    .unwrap()
            })
            .collect();
        let rate: f64 = shards
            .iter()
            .map(|s| match s.mode {
                Mode::Open { rate, .. } => rate,
                Mode::Closed { .. } => 0.0,
            })
            .sum();
        assert!((rate - 1000.0).abs() < 1e-9, "{rate}");
        assert_eq!(shards.iter().map(|s| s.connections).sum::<u32>(), 4);
        let seeds: Vec<u64> = shards.iter().map(|s| s.seed).collect();
        assert!(seeds[0] != seeds[1] && seeds[1] != seeds[2], "{seeds:?}");
        for s in &shards {
            assert_eq!(s.validate(), Ok(()), "{s:?}");
        }
        // Too few connections for the shards is said, not run.
        let two = LoadSpec {
            connections: 2,
            ..spec.clone()
        };
        let e = Shard::resolve(Some(0), Some(3), None, none)
            .unwrap()
            .unwrap()
            .apply(&two)
            .unwrap_err();
        assert!(
            e.contains("connections 2 cannot be split to shard 0 of 3"),
            "{e}"
        );
    }
}
