//! Open-loop schedules: the intended start of every request, as offsets from the start of
//! the run. Deterministic for a given seed, so a run can be repeated exactly.
//!
//! A schedule counts requests in "due units": request k of a worker is due when the integral of
//! the rate since the start reaches its k-th mark (every `workers` units, offset by the
//! worker's index, for a constant schedule; exponential gaps of mean `workers` for Poisson).
//! A fixed rate makes that integral a straight line; a ramp (`Ramp`) makes it piecewise
//! quadratic, inverted exactly within each linear segment.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wirebench_scenarios::load::{Schedule, Segment};

/// Yields intended start offsets for one worker.
#[derive(Debug)]
pub struct Starts {
    kind: Schedule,
    /// Due units between this worker's requests (the number of workers).
    gap: f64,
    /// The next request's mark, in due units.
    next: f64,
    /// The rate over time: segments in order, the last one's end rate holding after it.
    profile: Vec<Segment>,
    rng: SmallRng,
}

impl Starts {
    /// Starts for worker `index` of `workers`, sharing `rate` (requests/s in total).
    ///
    /// Constant schedules interleave the workers (worker `i` is offset by `i/rate`), so the
    /// merged stream is evenly spaced; Poisson workers draw independent streams (the sum of
    /// independent Poisson processes is Poisson at the summed rate).
    pub fn new(kind: Schedule, rate: f64, index: u32, workers: u32, seed: u64) -> Starts {
        Starts::ramped(kind, &[], rate, index, workers, seed)
    }

    /// Starts whose rate follows `profile` (then holds its last rate; `rate` when empty).
    pub fn ramped(
        kind: Schedule,
        profile: &[Segment],
        rate: f64,
        index: u32,
        workers: u32,
        seed: u64,
    ) -> Starts {
        let gap = f64::from(workers);
        let mut rng =
            SmallRng::seed_from_u64(seed ^ u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let next = match kind {
            Schedule::Constant => f64::from(index),
            Schedule::Poisson => exponential(&mut rng, gap),
        };
        let profile = if profile.is_empty() {
            vec![Segment {
                start: Duration::ZERO,
                length: Duration::ZERO,
                from: rate,
                to: rate,
            }]
        } else {
            profile.to_vec()
        };
        Starts {
            kind,
            gap,
            next,
            profile,
            rng,
        }
    }

    /// The next intended start offset.
    pub fn next_offset(&mut self) -> Duration {
        let at = self.time_of(self.next);
        self.next += match self.kind {
            Schedule::Constant => self.gap,
            Schedule::Poisson => exponential(&mut self.rng, self.gap),
        };
        at
    }

    /// When the integral of the rate reaches `units` (far in the future when it never does).
    fn time_of(&self, mut units: f64) -> Duration {
        for (i, seg) in self.profile.iter().enumerate() {
            let last = i + 1 == self.profile.len();
            let len = seg.length.as_secs_f64();
            if !last {
                let due = seg.due();
                if units > due {
                    units -= due;
                    continue;
                }
            }
            // Within this segment (or past the last one's end, where its end rate holds).
            let t = if last && units > seg.due() {
                let rest = units - seg.due();
                if seg.to <= 0.0 {
                    return Duration::MAX;
                }
                len + rest / seg.to
            } else {
                // r(t) = from + k t; ∫ = from t + k t² / 2 = units.
                let k = if len > 0.0 {
                    (seg.to - seg.from) / len
                } else {
                    0.0
                };
                if k.abs() < 1e-12 {
                    if seg.from <= 0.0 {
                        return Duration::MAX;
                    }
                    units / seg.from
                } else {
                    let disc = (seg.from * seg.from + 2.0 * k * units).max(0.0);
                    // The root in [0, len]: the numerically stable form of (-from + √disc) / k.
                    2.0 * units / (seg.from + disc.sqrt())
                }
            };
            return seg.start + Duration::from_secs_f64(t.max(0.0));
        }
        Duration::MAX
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
    fn a_linear_ramp_places_its_requests_where_the_rate_integrates_to_them() {
        // 0 → 1000/s over 2 s: request k is due at t with 250 t² = k, i.e. t = √(k/250).
        let ramp = [Segment {
            start: Duration::ZERO,
            length: Duration::from_secs(2),
            from: 0.0,
            to: 1000.0,
        }];
        let mut s = Starts::ramped(Schedule::Constant, &ramp, 1.0, 0, 1, 1);
        let ts: Vec<f64> = (0..1200).map(|_| s.next_offset().as_secs_f64()).collect();
        for (k, t) in ts.iter().enumerate().take(1000) {
            let want = (k as f64 / 250.0).sqrt();
            assert!((t - want).abs() < 1e-6, "request {k}: {t} against {want}");
        }
        // 1000 requests in the ramp, then 1000/s holds: request 1100 at 2.1 s.
        assert!((ts[1100] - 2.1).abs() < 1e-6, "{}", ts[1100]);
        // A step ramp: 100/s for 1 s, then 1000/s.
        let steps = [
            Segment {
                start: Duration::ZERO,
                length: Duration::from_secs(1),
                from: 100.0,
                to: 100.0,
            },
            Segment {
                start: Duration::from_secs(1),
                length: Duration::from_secs(1),
                from: 1000.0,
                to: 1000.0,
            },
        ];
        let mut s = Starts::ramped(Schedule::Constant, &steps, 1.0, 0, 1, 1);
        let ts: Vec<Duration> = (0..110).map(|_| s.next_offset()).collect();
        assert_eq!(ts[99], Duration::from_millis(990));
        assert_eq!(ts[100], Duration::from_secs(1));
        assert_eq!(ts[109], Duration::from_millis(1009));
        // A stage at rate 0 is a pause: nothing is due in it.
        let pause = [
            Segment {
                start: Duration::ZERO,
                length: Duration::from_secs(1),
                from: 10.0,
                to: 10.0,
            },
            Segment {
                start: Duration::from_secs(1),
                length: Duration::from_secs(1),
                from: 0.0,
                to: 0.0,
            },
            Segment {
                start: Duration::from_secs(2),
                length: Duration::from_secs(1),
                from: 10.0,
                to: 10.0,
            },
        ];
        let mut s = Starts::ramped(Schedule::Constant, &pause, 1.0, 0, 1, 1);
        let ts: Vec<Duration> = (0..12).map(|_| s.next_offset()).collect();
        assert_eq!(ts[9], Duration::from_millis(900));
        assert_eq!(ts[10], Duration::from_secs(1));
        assert_eq!(ts[11], Duration::from_millis(2100));
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
