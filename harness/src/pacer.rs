//! A precise sleep, for open-loop pacing and for the fault proxy's delay lines. tokio's timer
//! wheel has millisecond resolution, far coarser than the gaps of a 10k/s schedule (and a
//! `latency:1ms` fault would become 1 to 2 ms), so the pacer arms a `timerfd` (nanosecond
//! resolution; the thread's timer slack is set to 1 ns) registered with the runtime to fire a
//! little early, then yields to the runtime (which polls I/O each time) through the last
//! stretch: waking a halted vCPU takes tens of microseconds on small VMs, and that would
//! otherwise land in every request's lag.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

/// The timer fires this long before the due time; the rest is spent yielding to the runtime
/// (other tasks and I/O keep running meanwhile). It costs at most this much CPU per request
/// and removes the wake-up latency from the lag.
const SPIN_WINDOW: Duration = Duration::from_micros(50);

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A one-shot timer of the current worker's runtime.
pub struct Pacer {
    fd: AsyncFd<Fd>,
    /// Never arm the timer: yield to the runtime until each due time (`Pacing::Spin`).
    spin: bool,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pacer")
    }
}

impl Pacer {
    /// A pacer for the calling thread's runtime; also sets the thread's timer slack to 1 ns
    /// (the default 50 µs slack would delay every wake-up by up to that much).
    pub fn new() -> std::io::Result<Pacer> {
        let _ = nix::sys::prctl::set_timerslack(1);
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        // `AsyncFd::new` is deprecated in tokio 1.54 because a caller could hand it an object
        // whose `as_raw_fd` changes or closes while registered; `Fd` owns its timerfd for its
        // whole life and always returns that one descriptor, which is the condition the
        // replacement (`unsafe fn register`) asks callers to uphold. The workspace forbids
        // `unsafe`, so the safe, deprecated constructor is used knowingly.
        #[allow(deprecated)]
        let fd = AsyncFd::new(Fd(fd))?;
        Ok(Pacer { fd, spin: false })
    }

    /// A pacer that never sleeps: it yields to the runtime (which keeps polling I/O) until
    /// each due time. The host's timer wake-up latency leaves the lag, and the thread stays
    /// on its CPU the whole time.
    pub fn spinning() -> std::io::Result<Pacer> {
        let mut p = Pacer::new()?;
        p.spin = true;
        Ok(p)
    }

    /// Returns at `at` or just after it.
    pub async fn sleep_until(&self, at: Instant) -> std::io::Result<()> {
        loop {
            let now = Instant::now();
            if now >= at {
                return Ok(());
            }
            let left = at - now;
            if self.spin || left <= SPIN_WINDOW {
                tokio::task::yield_now().await;
                continue;
            }
            let left = left - SPIN_WINDOW;
            self.fd
                .get_ref()
                .0
                .set(
                    Expiration::OneShot(TimeSpec::from_duration(left)),
                    TimerSetTimeFlags::empty(),
                )
                .map_err(std::io::Error::from)?;
            loop {
                let mut guard = self.fd.readable().await?;
                // Re-arming reset the expiry count, so a stale readiness reads EAGAIN and
                // clears itself; a real expiry reads 8 bytes.
                match guard.try_io(|fd| fd.get_ref().0.wait().map_err(std::io::Error::from)) {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_returns_early() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let p = Pacer::new().unwrap();
            for us in [0u64, 3, 50, 800, 2500] {
                let at = Instant::now() + Duration::from_micros(us);
                tokio::time::timeout(Duration::from_secs(5), p.sleep_until(at))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(Instant::now() >= at);
            }
            let p = Pacer::spinning().unwrap();
            let at = Instant::now() + Duration::from_micros(300);
            p.sleep_until(at).await.unwrap();
            assert!(Instant::now() >= at);
        });
    }
}
