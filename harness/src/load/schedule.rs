//! Open-loop schedules: the intended start of every request, as offsets from the start of
//! the run. Deterministic for a given seed, so a run can be repeated exactly.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wirebench_scenarios::load::Schedule;

/// Yields intended start offsets for one worker.
#[derive(Debug)]
pub struct Starts {
    kind: Schedule,
    /// Mean gap between starts, in ns (as f64 to keep fractional gaps exact over time).
    gap_ns: f64,
    /// The next start, in ns from the run start.
    next_ns: f64,
    rng: SmallRng,
}

impl Starts {
    /// Starts for worker `index` of `workers`, sharing `rate` (requests/s in total).
    ///
    /// Constant schedules interleave the workers (worker `i` is offset by `i/rate`), so the
    /// merged stream is evenly spaced; Poisson workers draw independent streams (the sum of
    /// independent Poisson processes is Poisson at the summed rate).
    pub fn new(kind: Schedule, rate: f64, index: u32, workers: u32, seed: u64) -> Starts {
        let gap_ns = 1e9 * f64::from(workers) / rate;
        let mut rng =
            SmallRng::seed_from_u64(seed ^ u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let first = match kind {
            Schedule::Constant => 1e9 * f64::from(index) / rate,
            Schedule::Poisson => exponential(&mut rng, gap_ns),
        };
        Starts {
            kind,
            gap_ns,
            next_ns: first,
            rng,
        }
    }

    /// The next intended start offset.
    pub fn next_offset(&mut self) -> Duration {
        let now = self.next_ns;
        self.next_ns += match self.kind {
            Schedule::Constant => self.gap_ns,
            Schedule::Poisson => exponential(&mut self.rng, self.gap_ns),
        };
        Duration::from_nanos(now as u64)
    }
}

/// An exponentially distributed gap with the given mean.
fn exponential(rng: &mut SmallRng, mean: f64) -> f64 {
    // 1 - u is in (0, 1]: ln is finite.
    let u: f64 = rng.random::<f64>();
    -(1.0 - u).ln() * mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_workers_interleave_evenly() {
        let mut a = Starts::new(Schedule::Constant, 1000.0, 0, 2, 1);
        let mut b = Starts::new(Schedule::Constant, 1000.0, 1, 2, 1);
        let mut all: Vec<Duration> = (0..5)
            .flat_map(|_| [a.next_offset(), b.next_offset()])
            .collect();
        all.sort();
        for (i, t) in all.iter().enumerate() {
            assert_eq!(*t, Duration::from_millis(i as u64));
        }
    }

    #[test]
    fn poisson_has_the_right_mean_and_is_seeded() {
        let n = 200_000;
        let mut s = Starts::new(Schedule::Poisson, 10_000.0, 0, 1, 7);
        let mut last = Duration::ZERO;
        for _ in 0..n {
            last = s.next_offset();
        }
        // n gaps of mean 100 µs: 20 s, within 1% (the standard error is 0.22%).
        let secs = last.as_secs_f64();
        assert!((secs - 20.0).abs() < 0.2, "{secs}");
        let mut x = Starts::new(Schedule::Poisson, 10_000.0, 0, 1, 7);
        let mut y = Starts::new(Schedule::Poisson, 10_000.0, 0, 1, 7);
        let mut z = Starts::new(Schedule::Poisson, 10_000.0, 0, 1, 8);
        let xs: Vec<_> = (0..10).map(|_| x.next_offset()).collect();
        let ys: Vec<_> = (0..10).map(|_| y.next_offset()).collect();
        let zs: Vec<_> = (0..10).map(|_| z.next_offset()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }
}
