//! The TCP side of the fault proxy: each accepted connection is paired with one to the
//! upstream, and each direction runs a reader, a delay line and a writer that apply the
//! direction's faults. Faults are read from a watch, so they change while traffic flows.

use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::spec::{Dir, FaultKind};
use super::{Counters, FaultSet, Release, sample_delay};

/// Chunks queued in one direction's delay line before the reader waits (backpressure).
const DELAY_LINE: usize = 1024;
const READ_BUF: usize = 64 * 1024;

pub(super) async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<Arc<FaultSet>>,
    counters: Arc<Counters>,
    stop: CancellationToken,
    seed: u64,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else { continue };
        counters.add(&counters.connections, 1);
        let refused = faults
            .borrow()
            .faults
            .iter()
            .any(|f| matches!(f.kind, FaultKind::Refuse) && rng.random_bool(f.p));
        if refused {
            counters.add(&counters.refused, 1);
            // An RST right away: what a client sees from a port nobody listens on.
            let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
            drop(client);
            continue;
        }
        let conn = Connection {
            faults: faults.clone(),
            counters: counters.clone(),
            rng: SmallRng::seed_from_u64(rng.random()),
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn.run(client, upstream) => {}
            }
        });
    }
}

struct Connection {
    faults: watch::Receiver<Arc<FaultSet>>,
    counters: Arc<Counters>,
    rng: SmallRng,
}

/// Per-connection decisions, drawn again whenever the fault set changes.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    reset_at: Option<Instant>,
    blackhole: [bool; 2],
    limit: [Option<u64>; 2],
    slow_close: [Option<Duration>; 2],
}

fn slot(d: Dir) -> usize {
    usize::from(d == Dir::Down)
}

impl Plan {
    fn draw(set: &FaultSet, rng: &mut SmallRng, now: Instant) -> Plan {
        let mut plan = Plan::default();
        for f in &set.faults {
            if !rng.random_bool(f.p) {
                continue;
            }
            for d in [Dir::Up, Dir::Down] {
                if !f.dir.covers(d) {
                    continue;
                }
                match f.kind {
                    FaultKind::Blackhole => plan.blackhole[slot(d)] = true,
                    FaultKind::Limit(n) => plan.limit[slot(d)] = Some(n),
                    FaultKind::SlowClose(t) => plan.slow_close[slot(d)] = Some(t),
                    _ => {}
                }
            }
            if let FaultKind::Reset(after) = f.kind {
                plan.reset_at = Some(now + after);
            }
        }
        plan
    }
}

/// How a direction ended.
enum End {
    /// EOF forwarded (half-close).
    Eof,
    /// The data limit was reached: close the whole connection.
    Limit,
    /// A socket error.
    Broken,
}

impl Connection {
    async fn run(mut self, client: TcpStream, upstream: SocketAddr) {
        let Ok(server) = TcpStream::connect(upstream).await else {
            // Upstream refused: refuse the client the same way.
            let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (plan_tx, plan_rx) = watch::channel(Plan::draw(
            &self.faults.borrow_and_update(),
            &mut self.rng,
            Instant::now(),
        ));
        let up = direction(
            &client,
            &server,
            Dir::Up,
            self.faults.clone(),
            plan_rx.clone(),
            self.counters.clone(),
            SmallRng::seed_from_u64(self.rng.random()),
        );
        let down = direction(
            &server,
            &client,
            Dir::Down,
            self.faults.clone(),
            plan_rx,
            self.counters.clone(),
            SmallRng::seed_from_u64(self.rng.random()),
        );
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let reset_at = plan_tx.borrow().reset_at;
            tokio::select! {
                changed = self.faults.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let plan = Plan::draw(&self.faults.borrow_and_update(), &mut self.rng, Instant::now());
                    let _ = plan_tx.send(plan);
                }
                _ = sleep_until_opt(reset_at) => {
                    self.counters.add(&self.counters.resets, 1);
                    let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
                    let _ = SockRef::from(&server).set_linger(Some(Duration::ZERO));
                    return;
                }
                end = &mut up, if !up_done => {
                    up_done = true;
                    if !matches!(end, End::Eof) { return; }
                }
                end = &mut down, if !down_done => {
                    down_done = true;
                    if !matches!(end, End::Eof) { return; }
                }
            }
            if up_done && down_done {
                return;
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The delay the latency faults in force add to one chunk going `d`.
fn latency_of(set: &FaultSet, d: Dir, rng: &mut SmallRng) -> Duration {
    set.faults
        .iter()
        .filter(|f| f.dir.covers(d))
        .filter_map(|f| match f.kind {
            FaultKind::Latency { base, jitter } if rng.random_bool(f.p) => {
                Some(sample_delay(base, jitter, rng))
            }
            _ => None,
        })
        .sum()
}

/// How one chunk going `d` is written: sliced into pieces of at most this size with a pause
/// between them, and/or paced at this many bytes per second.
fn pacing_of(set: &FaultSet, d: Dir, rng: &mut SmallRng) -> (Option<usize>, Duration, Option<u64>) {
    let mut slice = None;
    let mut pause = Duration::ZERO;
    let mut rate = None;
    for f in set.faults.iter().filter(|f| f.dir.covers(d)) {
        match f.kind {
            FaultKind::Slicer { size, delay } if rng.random_bool(f.p) => {
                slice = Some(size);
                pause = delay;
            }
            FaultKind::Bandwidth(bps) if rng.random_bool(f.p) => rate = Some(bps),
            _ => {}
        }
    }
    (slice, pause, rate)
}

/// One direction: read from `src`, apply faults, write to `dst`.
async fn direction(
    src: &TcpStream,
    dst: &TcpStream,
    d: Dir,
    faults: watch::Receiver<Arc<FaultSet>>,
    plan: watch::Receiver<Plan>,
    counters: Arc<Counters>,
    mut rng: SmallRng,
) -> End {
    let (tx, rx) = mpsc::channel::<(Instant, Bytes)>(DELAY_LINE);
    let mut writer_rng = SmallRng::seed_from_u64(rng.random());
    let reader = async {
        // Owned by the reader: when it ends, the writer sees the delay line close.
        let tx = tx;
        let mut buf = vec![0u8; READ_BUF];
        let mut last_release = Instant::now();
        let mut forwarded = 0u64;
        loop {
            let n = match read(src, &mut buf).await {
                Ok(0) => return End::Eof,
                Ok(n) => n,
                Err(_) => return End::Broken,
            };
            counters.add(counters.bytes(d), n as u64);
            let p = *plan.borrow();
            if p.blackhole[slot(d)] {
                counters.add(&counters.blackholed, n as u64);
                continue;
            }
            let mut take = n;
            let mut limited = false;
            if let Some(limit) = p.limit[slot(d)] {
                let room = limit.saturating_sub(forwarded);
                if (n as u64) >= room {
                    take = room as usize;
                    limited = true;
                }
            }
            forwarded += take as u64;
            let now = Instant::now();
            let delay = latency_of(&faults.borrow(), d, &mut rng);
            if !delay.is_zero() {
                counters.add(&counters.delayed, 1);
            }
            // TCP keeps order: a chunk never leaves before the one read before it.
            let release = (now + delay).max(last_release);
            last_release = release;
            if take > 0
                && tx
                    .send((release, Bytes::copy_from_slice(&buf[..take])))
                    .await
                    .is_err()
            {
                return End::Broken;
            }
            if limited {
                counters.add(&counters.limited, 1);
                return End::Limit;
            }
        }
    };
    let writer = async {
        let mut rx = rx;
        let mut next_free = Instant::now();
        let pace = Release::new();
        while let Some((release, chunk)) = rx.recv().await {
            pace.until(release).await;
            let (slice, pause, rate) = pacing_of(&faults.borrow(), d, &mut writer_rng);
            if slice.is_some() {
                counters.add(&counters.sliced, 1);
            }
            // Bandwidth pacing writes pieces of at most 10 ms worth of bytes.
            let piece = match (slice, rate) {
                (Some(s), _) => s,
                (None, Some(r)) => ((r / 100) as usize).max(1),
                (None, None) => chunk.len().max(1),
            };
            for part in chunk.chunks(piece) {
                if let Some(r) = rate {
                    let now = Instant::now();
                    next_free = next_free.max(now);
                    tokio::time::sleep_until(next_free).await;
                    next_free += Duration::from_secs_f64(part.len() as f64 / r as f64);
                }
                if write_all(dst, part).await.is_err() {
                    return false;
                }
                if slice.is_some() && !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }
        true
    };
    let (end, wrote) = tokio::join!(reader, writer);
    if matches!(end, End::Eof) && wrote {
        let hold = plan.borrow().slow_close[slot(d)];
        if let Some(hold) = hold {
            counters.add(&counters.slow_closed, 1);
            tokio::time::sleep(hold).await;
        }
        let _ = SockRef::from(dst).shutdown(Shutdown::Write);
    }
    if wrote { end } else { End::Broken }
}

async fn read(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

async fn write_all(s: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        s.writable().await?;
        match s.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
