//! The UDP side of the fault proxy: one upstream socket per client address (so replies find
//! their way back), and per packet the faults of its direction: loss (random or bursty
//! Gilbert–Elliott), duplication, reordering, corruption, latency with jitter, bandwidth, and
//! blackhole. Delayed packets wait in a timer heap; UDP may reorder, so each packet keeps its
//! own release time.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::spec::{Dir, FaultKind, LossModel};
use super::{Counters, FaultSet, Release, sample_delay};

const MAX_DATAGRAM: usize = 65_536;

/// Where a packet goes.
#[derive(Clone, Debug)]
enum Sink {
    /// To the server, over the client's own upstream socket.
    Upstream(Arc<UdpSocket>),
    /// To a client, from the proxy's listening socket.
    Client(Arc<UdpSocket>, SocketAddr),
}

impl Sink {
    async fn send(&self, pkt: &[u8]) {
        // Loss is what UDP does: a failed send is just another lost packet.
        let _ = match self {
            Sink::Upstream(s) => s.send(pkt).await,
            Sink::Client(s, to) => s.send_to(pkt, to).await,
        };
    }
}

/// Per direction and flow: the Gilbert–Elliott state and the bandwidth clock.
#[derive(Debug)]
struct Shaper {
    dir: Dir,
    bad: bool,
    next_free: Instant,
    rng: SmallRng,
}

impl Shaper {
    fn new(dir: Dir, seed: u64) -> Shaper {
        Shaper {
            dir,
            bad: false,
            next_free: Instant::now(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// What to send for one packet: zero (dropped), one, or two (duplicated) copies, each
    /// with its delay.
    fn apply(&mut self, set: &FaultSet, mut pkt: Vec<u8>, c: &Counters) -> Vec<(Duration, Bytes)> {
        let d = self.dir;
        let mut delay = Duration::ZERO;
        let mut copies = 1;
        let mut reorder = None;
        for f in set.faults.iter().filter(|f| f.dir.covers(d)) {
            let hit = self.rng.random_bool(f.p);
            match f.kind {
                FaultKind::Blackhole if hit => {
                    c.add(&c.blackholed, pkt.len() as u64);
                    return Vec::new();
                }
                FaultKind::Loss(model) => {
                    let lost = match model {
                        LossModel::Random(p) => self.rng.random_bool(p),
                        LossModel::GilbertElliott { p, r, good, bad } => {
                            let flip = if self.bad { r } else { p };
                            if self.rng.random_bool(flip) {
                                self.bad = !self.bad;
                            }
                            self.rng.random_bool(if self.bad { bad } else { good })
                        }
                    };
                    if lost {
                        c.add(&c.dropped, 1);
                        return Vec::new();
                    }
                }
                FaultKind::Corrupt if hit && !pkt.is_empty() => {
                    let bit = self.rng.random_range(0..pkt.len() * 8);
                    pkt[bit / 8] ^= 1 << (bit % 8);
                    c.add(&c.corrupted, 1);
                }
                FaultKind::Duplicate if hit => {
                    copies = 2;
                    c.add(&c.duplicated, 1);
                }
                FaultKind::Reorder(hold) if hit => {
                    reorder = Some(hold);
                    c.add(&c.reordered, 1);
                }
                FaultKind::Latency { base, jitter } if hit => {
                    delay += sample_delay(base, jitter, &mut self.rng);
                }
                FaultKind::Bandwidth(bps) if hit => {
                    let now = Instant::now();
                    self.next_free = self.next_free.max(now);
                    delay += self.next_free - now;
                    self.next_free += Duration::from_secs_f64(pkt.len() as f64 / bps as f64);
                }
                _ => {}
            }
        }
        if !delay.is_zero() {
            c.add(&c.delayed, 1);
        }
        let pkt = Bytes::from(pkt);
        let mut out = Vec::with_capacity(copies);
        out.push((delay + reorder.unwrap_or_default(), pkt.clone()));
        if copies == 2 {
            out.push((delay, pkt));
        }
        out
    }
}

/// Packets waiting for their release time, sent by one task in time order.
async fn delay_line(mut rx: mpsc::UnboundedReceiver<(Instant, Bytes, Sink)>) {
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut waiting: HashMap<u64, (Bytes, Sink)> = HashMap::new();
    let mut seq = 0u64;
    let pace = Release::new();
    loop {
        let next = heap.peek().map(|Reverse((t, _))| *t);
        tokio::select! {
            item = rx.recv() => match item {
                Some((at, pkt, sink)) => {
                    seq += 1;
                    heap.push(Reverse((at, seq)));
                    waiting.insert(seq, (pkt, sink));
                }
                None => return,
            },
            _ = async {
                match next {
                    Some(t) => pace.until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                while let Some(Reverse((t, id))) = heap.peek().copied() {
                    if t > now {
                        break;
                    }
                    heap.pop();
                    if let Some((pkt, sink)) = waiting.remove(&id) {
                        sink.send(&pkt).await;
                    }
                }
            }
        }
    }
}

async fn forward(
    out: Vec<(Duration, Bytes)>,
    sink: &Sink,
    delayed: &mpsc::UnboundedSender<(Instant, Bytes, Sink)>,
) {
    for (delay, pkt) in out {
        if delay.is_zero() {
            sink.send(&pkt).await;
        } else {
            let _ = delayed.send((Instant::now() + delay, pkt, sink.clone()));
        }
    }
}

pub(super) async fn run(
    socket: UdpSocket,
    upstream: SocketAddr,
    faults: watch::Receiver<Arc<FaultSet>>,
    counters: Arc<Counters>,
    stop: CancellationToken,
    seed: u64,
) {
    let socket = Arc::new(socket);
    let (delayed_tx, delayed_rx) = mpsc::unbounded_channel();
    let line = tokio::spawn(delay_line(delayed_rx));
    let mut sessions: HashMap<SocketAddr, (Sink, Shaper)> = HashMap::new();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let Ok((n, client)) = received else { continue };
        counters.add(counters.packets(Dir::Up), 1);
        counters.add(counters.bytes(Dir::Up), n as u64);
        let (sink, shaper) = match sessions.entry(client) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let bind = if upstream.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let Ok(up) = UdpSocket::bind(bind).await else {
                    continue;
                };
                if up.connect(upstream).await.is_err() {
                    continue;
                }
                counters.add(&counters.connections, 1);
                let up = Arc::new(up);
                tokio::spawn(downstream(
                    up.clone(),
                    Sink::Client(socket.clone(), client),
                    Shaper::new(Dir::Down, rng.random()),
                    faults.clone(),
                    counters.clone(),
                    delayed_tx.clone(),
                    stop.clone(),
                ));
                e.insert((Sink::Upstream(up), Shaper::new(Dir::Up, rng.random())))
            }
        };
        let set = faults.borrow().clone();
        let out = shaper.apply(&set, buf[..n].to_vec(), &counters);
        forward(out, sink, &delayed_tx).await;
    }
    line.abort();
}

/// Server → client for one flow.
async fn downstream(
    up: Arc<UdpSocket>,
    sink: Sink,
    mut shaper: Shaper,
    faults: watch::Receiver<Arc<FaultSet>>,
    counters: Arc<Counters>,
    delayed: mpsc::UnboundedSender<(Instant, Bytes, Sink)>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = up.recv(&mut buf) => r,
        };
        // ICMP "port unreachable" surfaces as an error on a connected socket: keep going,
        // the server may come back.
        let Ok(n) = received else { continue };
        counters.add(counters.packets(Dir::Down), 1);
        counters.add(counters.bytes(Dir::Down), n as u64);
        let set = faults.borrow().clone();
        let out = shaper.apply(&set, buf[..n].to_vec(), &counters);
        forward(out, &sink, &delayed).await;
    }
}
