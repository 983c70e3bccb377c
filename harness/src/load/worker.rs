//! One load worker: an OS thread with a single-threaded tokio runtime (no cross-thread
//! wake-ups), its share of the connections and callers, and its own [`Recorder`].
//!
//! Closed loop: each caller calls, waits, records, calls again. Open loop: a dispatcher walks
//! the schedule and hands each due request to an idle caller, and a caller that finishes
//! while the next request is already due starts it itself; latency runs from the
//! intended start, service time from the actual start, and the generator's lag (actual start
//! minus the later of the intended start and the moment a caller was free) is recorded
//! beside them.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use nix::time::{ClockId, clock_gettime};
use tokio::sync::Notify;
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, ClientConfig, Code, Connection, EchoRequest, Method,
    Transport, TransportError, WireBytes, pattern,
};
use wirebench_policy::{self, TransportConnector};
use wirebench_scenarios::load::{LoadSpec, Mode, Pacing, Schedule};
use wirebench_transports::AnyTransport;
use wirebench_transports::registry::AnyConnection;

use super::recorder::Recorder;
use super::schedule::Starts;
use crate::affinity::{CpusSeen, current_cpu, pin_current_thread};
use crate::pacer::Pacer;

/// What one worker is asked to do.
#[derive(Debug)]
pub struct WorkerPlan {
    /// Worker number.
    pub index: u32,
    /// Workers in total.
    pub workers: u32,
    /// The run.
    pub spec: Arc<LoadSpec>,
    /// The transport.
    pub transport: AnyTransport,
    /// Where to connect.
    pub endpoint: String,
    /// Client configuration.
    pub client: ClientConfig,
    /// Connections of this worker.
    pub connections: u32,
    /// Callers (calls in flight at most) of this worker.
    pub callers: u32,
    /// Calls this worker measures in a request-count run.
    pub requests: Option<u64>,
    /// CPU to pin this worker's thread to.
    pub pin: Option<usize>,
    /// Set on Ctrl-C: stop starting calls.
    pub interrupted: Arc<AtomicBool>,
    /// How long to wait for calls still in flight once the run ends.
    pub drain: Duration,
    /// Fault runs: phases, finer intervals, call deadlines enforced here, re-dialing.
    pub fault: Option<super::FaultMode>,
    /// Where finished intervals go for a live view of the run.
    pub live: Option<super::recorder::LiveSender>,
}

/// When to run, sent once every worker is connected.
#[derive(Clone, Copy, Debug)]
pub struct Start {
    /// Start of the warm-up.
    pub t0: Instant,
    /// Start of the measured phase.
    pub measure_start: Instant,
    /// End of the measured phase in a duration run.
    pub end: Option<Instant>,
}

/// What one worker measured.
#[derive(Debug)]
pub struct WorkerOutput {
    /// Its recorder.
    pub recorder: Recorder,
    /// Measured calls still unanswered when the worker gave up waiting.
    pub incomplete: u64,
    /// Bytes its connections moved during the measured phase.
    pub wire: Option<WireBytes>,
    /// Fraction of the measured phase its thread was on a CPU.
    pub busy: f64,
    /// CPUs its thread ran on.
    pub cpus: CpusSeen,
}

/// A worker's failure.
pub type WorkerError = String;

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Runs a worker on the current thread: connects, reports readiness on `ready`, waits for
/// `start`, runs, returns what it measured.
pub fn run_worker(
    plan: WorkerPlan,
    ready: std::sync::mpsc::Sender<Result<(), WorkerError>>,
    start: std::sync::mpsc::Receiver<Option<Start>>,
) -> Result<WorkerOutput, WorkerError> {
    if let Some(cpu) = plan.pin {
        pin_current_thread(cpu)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting worker runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    let mut plan = plan;
    // The callers are this LocalSet's tasks: the connections' own tasks join them.
    plan.client.local_tasks = true;
    local.block_on(&rt, async move {
        match plan.fault.as_ref().and_then(|f| f.policy.clone()) {
            // A fault run with a resilience policy: every connection is the policy's layer,
            // which reconnects, retries and breaks circuits by itself.
            Some(policy) => {
                let seed = plan.spec.seed ^ (u64::from(plan.index) << 32);
                let (t, c, e) = (plan.transport, plan.client.clone(), plan.endpoint.clone());
                let connect = move |i: u32| {
                    let connector = TransportConnector::new(t, c.clone(), e.clone());
                    let policy = policy.clone();
                    async move { wirebench_policy::layer(&policy, connector, seed + u64::from(i)).await }
                };
                connect_and_drive(plan, ready, start, connect, None).await
            }
            None => {
                let (t, c, e) = (plan.transport, plan.client.clone(), plan.endpoint.clone());
                // Fault runs without a policy still re-dial broken connections, so a plan
                // measures the fault, not the loss of every connection to the first reset.
                let dial: Option<Dial<AnyConnection>> = plan.fault.is_some().then(|| {
                    let (c, e) = (c.clone(), e.clone());
                    Rc::new(move || {
                        let (c, e) = (c.clone(), e.clone());
                        Box::pin(async move { t.connect(&c, &e).await })
                            as LocalBoxFuture<'static, _>
                    }) as Dial<AnyConnection>
                });
                let connect = move |_: u32| {
                    let (c, e) = (c.clone(), e.clone());
                    async move { t.connect(&c, &e).await }
                };
                connect_and_drive(plan, ready, start, connect, dial).await
            }
        }
    })
}

/// Connects the worker's connections, reports readiness, waits for the start and drives.
async fn connect_and_drive<C, F, Fut>(
    plan: WorkerPlan,
    ready: std::sync::mpsc::Sender<Result<(), WorkerError>>,
    start: std::sync::mpsc::Receiver<Option<Start>>,
    connect: F,
    dial: Option<Dial<C>>,
) -> Result<WorkerOutput, WorkerError>
where
    C: Connection,
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<C, TransportError>>,
{
    let mut conns = Vec::with_capacity(plan.connections as usize);
    for i in 0..plan.connections {
        match connect(i).await {
            Ok(c) => conns.push(c),
            Err(e) => {
                let msg = format!(
                    "cannot connect to {} endpoint {}: {e}",
                    plan.transport.name(),
                    plan.endpoint
                );
                let _ = ready.send(Err(msg.clone()));
                return Err(msg);
            }
        }
    }
    let _ = ready.send(Ok(()));
    // The coordinator answers once every worker is connected (None: abort).
    let start = tokio::task::spawn_blocking(move || start.recv().ok().flatten())
        .await
        .ok()
        .flatten();
    let Some(start) = start else {
        for c in &conns {
            c.close().await;
        }
        return Err("aborted before start".to_owned());
    };
    Ok(drive(plan, conns, dial, start).await)
}

/// How to dial a connection again (fault runs without a policy: a reset or a killed server
/// breaks them). Called only on the slow path, after a call failed `UNAVAILABLE`.
type Dial<C> = Rc<dyn Fn() -> LocalBoxFuture<'static, Result<C, TransportError>>>;

/// What every caller of a worker shares. `C` is the connection: a transport's own, or in a
/// fault run with a resilience policy, the policy's layer around it.
struct Shared<C> {
    spec: Arc<LoadSpec>,
    /// Each slot holds its current connection; a call clones the `Rc` (no allocation) so a
    /// re-dial can swap the slot while calls on the old connection finish.
    conns: Vec<RefCell<Rc<C>>>,
    /// Slots with a re-dial in progress.
    redialing: Vec<Cell<bool>>,
    /// Fault runs without a policy: re-dial broken connections (a policy's layer
    /// reconnects by itself).
    dial: Option<Dial<C>>,
    /// Fault runs: enforce each call's deadline here too.
    deadline_here: bool,
    request: EchoRequest,
    stalled_request: EchoRequest,
    options: CallOptions,
    rec: RefCell<Recorder>,
    measure_start: Instant,
    end: Option<Instant>,
    /// Measured calls still to start (request-count runs).
    remaining: Cell<Option<u64>>,
    /// When the stall is due (taken by the first call at or after it).
    stall_at: Cell<Option<Instant>>,
    /// When admission closed (the run's nominal end).
    closed_at: Cell<Option<Instant>>,
    interrupted: Arc<AtomicBool>,
    /// Measured calls in flight.
    in_flight: Cell<u64>,
    /// Callers still running (closed loop).
    active: Cell<u32>,
    changed: Notify,
}

impl<C> Shared<C> {
    /// May a call intended (or starting) at `t` start?
    fn admit(&self, t: Instant) -> bool {
        // Past the nominal end nothing more is admitted, whatever its intended start: what
        // is still due then is counted as never sent, not sent after the run ended.
        self.check_close();
        if self.closed_at.get().is_some() {
            return false;
        }
        let ok = !self.interrupted.load(Ordering::Relaxed)
            && self.end.is_none_or(|e| t < e)
            && (t < self.measure_start
                || match self.remaining.get() {
                    None => true,
                    Some(0) => false,
                    Some(n) => {
                        self.remaining.set(Some(n - 1));
                        true
                    }
                });
        if !ok {
            self.closed_at.set(Some(Instant::now()));
            self.changed.notify_waiters();
        }
        ok
    }

    /// Closes admission once the nominal end passed or the user interrupted, even while every
    /// caller is stuck in a call (so the drain timer starts).
    fn check_close(&self) {
        if self.closed_at.get().is_none() {
            let now = Instant::now();
            if self.interrupted.load(Ordering::Relaxed) {
                self.closed_at.set(Some(now));
            } else if let Some(e) = self.end
                && now >= e
            {
                self.closed_at.set(Some(e));
            }
        }
    }

    fn take_stall(&self, t: Instant) -> bool {
        match self.stall_at.get() {
            Some(at) if t >= at => {
                self.stall_at.set(None);
                true
            }
            _ => false,
        }
    }
}

struct CallResult {
    code: Code,
    sent: u64,
    received: u64,
}

/// One call on slot `slot`; in fault runs the deadline is enforced here too (a paused server
/// or a blackhole must not hang a caller whatever the transport does with deadlines), and a
/// connection that reports `UNAVAILABLE` is re-dialed in the background.
async fn call_slot<C: Connection>(
    sh: &Rc<Shared<C>>,
    slot: usize,
    measured: bool,
    stall: bool,
) -> CallResult {
    let conn = sh.conns[slot].borrow().clone();
    let r = match (sh.deadline_here, sh.spec.timeout) {
        (true, Some(t)) => match tokio::time::timeout(t, call(sh, &conn, measured, stall)).await {
            Ok(r) => r,
            Err(_) => CallResult {
                code: Code::DeadlineExceeded,
                sent: 0,
                received: 0,
            },
        },
        _ => call(sh, &conn, measured, stall).await,
    };
    if r.code == Code::Unavailable && sh.dial.is_some() && !sh.redialing[slot].get() {
        sh.redialing[slot].set(true);
        tokio::task::spawn_local(redial(sh.clone(), slot));
    }
    r
}

/// Dials slot `slot` again with capped exponential backoff until it succeeds or the run's
/// admission closes. Only the re-dial allocates; the call path does not.
async fn redial<C: Connection>(sh: Rc<Shared<C>>, slot: usize) {
    let Some(d) = sh.dial.clone() else { return };
    let mut backoff = Duration::from_millis(10);
    while sh.closed_at.get().is_none() {
        match d().await {
            Ok(c) => {
                // The old connection is dropped once its last in-flight call returns.
                *sh.conns[slot].borrow_mut() = Rc::new(c);
                break;
            }
            Err(e) => {
                tracing::debug!("re-dial of connection {slot} failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(250));
            }
        }
    }
    sh.redialing[slot].set(false);
}

/// One call of the run's method, recording per-message latency when `measured`.
async fn call<C: Connection>(sh: &Shared<C>, conn: &C, measured: bool, stall: bool) -> CallResult {
    let req = if stall {
        sh.stalled_request.clone()
    } else {
        sh.request.clone()
    };
    let method = sh.spec.method;
    let messages = u64::from(sh.spec.messages);
    if method == Method::Unary {
        let code = match conn.unary(req, &sh.options).await {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        return CallResult {
            code,
            sent: 0,
            received: 0,
        };
    }
    let mut r = CallResult {
        code: Code::Ok,
        sent: 0,
        received: 0,
    };
    let (mut tx, mut rx) = match conn.open(method, &sh.options).await {
        Ok(halves) => halves,
        Err(s) => {
            r.code = s.code();
            return r;
        }
    };
    let note = |d: Duration| {
        if measured {
            sh.rec.borrow_mut().message(d);
        }
    };
    let outcome: Result<(), wirebench_core::Status> = async {
        match method {
            Method::ServerStream => {
                let mut last = Instant::now();
                tx.send(req).await?;
                r.sent += 1;
                tx.close_send().await?;
                while rx.recv().await?.is_some() {
                    let now = Instant::now();
                    note(now - last);
                    last = now;
                    r.received += 1;
                }
            }
            Method::ClientStream => {
                for _ in 0..messages {
                    tx.send(req.clone()).await?;
                    r.sent += 1;
                }
                tx.close_send().await?;
                while rx.recv().await?.is_some() {
                    r.received += 1;
                }
            }
            _ => {
                for _ in 0..messages {
                    let t = Instant::now();
                    tx.send(req.clone()).await?;
                    r.sent += 1;
                    if rx.recv().await?.is_none() {
                        return Err(wirebench_core::Status::internal(
                            "bidi call ended before answering a request",
                        ));
                    }
                    note(t.elapsed());
                    r.received += 1;
                }
                tx.close_send().await?;
                while rx.recv().await?.is_some() {
                    r.received += 1;
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(s) = outcome {
        r.code = s.code();
    }
    r
}

fn finish_call<C>(
    sh: &Shared<C>,
    measured: bool,
    r: &CallResult,
    intended: Instant,
    service: Option<Duration>,
    done: Instant,
) {
    if measured {
        let latency = done - intended;
        let mut rec = sh.rec.borrow_mut();
        rec.call(latency, service, r.code, done);
        rec.phase_call(intended, latency, r.code, done);
        rec.messages_sent += r.sent;
        rec.messages_received += r.received;
        sh.in_flight.set(sh.in_flight.get() - 1);
    }
}

async fn closed_caller<C: Connection>(sh: Rc<Shared<C>>, conn: usize) {
    loop {
        let start = Instant::now();
        if !sh.admit(start) {
            break;
        }
        let measured = start >= sh.measure_start;
        if measured {
            sh.in_flight.set(sh.in_flight.get() + 1);
        }
        let stall = measured && sh.take_stall(start);
        if measured {
            sh.rec.borrow_mut().sent(start);
        }
        let r = call_slot(&sh, conn, measured, stall).await;
        let done = Instant::now();
        finish_call(&sh, measured, &r, start, None, done);
        // A call that completes without waiting (inproc) never yields: spend tokio's
        // cooperative budget so the other callers and the snapshot task get their turn.
        tokio::task::coop::consume_budget().await;
    }
    sh.active.set(sh.active.get() - 1);
    sh.changed.notify_waiters();
}

#[derive(Clone, Copy)]
struct Ticket {
    intended: Instant,
    /// When a caller was free for it (the later of this and `intended` starts the lag).
    ready: Instant,
    measured: bool,
    stall: bool,
}

struct Slot {
    ticket: Cell<Option<Ticket>>,
    go: Notify,
}

struct Pool {
    slots: Vec<Slot>,
    /// Idle callers, each with the moment it became idle, longest idle first.
    free: RefCell<std::collections::VecDeque<(usize, Instant)>>,
    freed: Notify,
    /// The schedule, shared: the dispatcher walks it, and a caller that finishes a call while
    /// the next request is already due starts that request itself — handing it to another
    /// caller task would put it behind every task queued meanwhile (a burst of replies), and
    /// that wait is generator lag.
    starts: RefCell<Starts>,
    t0: Instant,
    /// The next request's intended start: admitted, not yet issued (`None` once admission
    /// closed).
    next: Cell<Option<Instant>>,
    /// The first intended start admission refused (where the count of requests due but never
    /// sent begins).
    refused: Cell<Option<Instant>>,
}

impl Pool {
    /// Admits the schedule's next request as [`Pool::next`].
    fn advance<C>(&self, sh: &Shared<C>) {
        let intended = self.t0 + self.starts.borrow_mut().next_offset();
        if sh.admit(intended) {
            self.next.set(Some(intended));
        } else {
            self.next.set(None);
            self.refused.set(Some(intended));
        }
    }

    /// Issues the pending request (intended at `intended`) to a caller free since `ready`,
    /// and admits the one after it.
    fn issue<C>(&self, sh: &Shared<C>, intended: Instant, ready: Instant) -> Ticket {
        let measured = intended >= sh.measure_start;
        if measured {
            sh.in_flight.set(sh.in_flight.get() + 1);
            let mut rec = sh.rec.borrow_mut();
            rec.sent(intended);
            // The caller's idle-since time tells whether the request had to wait for it
            // (backpressure from the system under test) or was late by the generator's fault.
            if ready > intended {
                rec.backpressured += 1;
            }
        }
        let stall = measured && sh.take_stall(intended);
        self.advance(sh);
        Ticket {
            intended,
            ready,
            measured,
            stall,
        }
    }

    /// Counts (in the recorder) the measured requests whose intended start came before
    /// admission closed but that were never sent — callers all busy until the run closed, or
    /// stuck until the drain ran out — each with how long it had waited then. Consumes the
    /// schedule up to the close.
    fn count_unsent<C>(&self, sh: &Shared<C>) {
        let (Some(until), Some((mut t, mut admitted))) = (
            sh.closed_at.get(),
            self.next
                .take()
                .map(|t| (t, true))
                .or_else(|| self.refused.take().map(|t| (t, false))),
        ) else {
            return;
        };
        let mut left = sh.remaining.get();
        let mut rec = sh.rec.borrow_mut();
        // `admitted`: the pending request, already counted against a request-count run's
        // total; the ones after it were refused, and are due only while that total lasts.
        while t < until && (admitted || left != Some(0)) {
            if t >= sh.measure_start {
                if !admitted {
                    left = left.map(|l| l - 1);
                }
                rec.never_sent(t, until - t);
            }
            t = self.t0 + self.starts.borrow_mut().next_offset();
            admitted = false;
        }
    }

    /// The pending request's intended start, after dropping the warm-up requests still
    /// unsent when the measured phase began: they would be discarded anyway, and sending them
    /// late would push the measured phase's own requests back (behind a backlog of warm-up).
    fn pending<C>(&self, sh: &Shared<C>, now: Instant) -> Option<Instant> {
        while let Some(t) = self.next.get() {
            if t >= sh.measure_start || now < sh.measure_start {
                return Some(t);
            }
            self.advance(sh);
        }
        None
    }

    /// For a caller that just finished at `now`: the pending request, if it is due.
    fn take_due<C>(&self, sh: &Shared<C>, now: Instant) -> Option<Ticket> {
        let intended = self.pending(sh, now).filter(|&t| t <= now)?;
        // Another caller idle since earlier could have taken it: the delay is the generator's.
        let ready = self.free.borrow().front().map_or(now, |&(_, since)| since);
        Some(self.issue(sh, intended, ready))
    }
}

async fn open_caller<C: Connection>(sh: Rc<Shared<C>>, pool: Rc<Pool>, me: usize, conn: usize) {
    loop {
        pool.slots[me].go.notified().await;
        let Some(mut t) = pool.slots[me].ticket.take() else {
            return;
        };
        loop {
            let start = Instant::now();
            if t.measured {
                sh.rec.borrow_mut().lag(
                    t.intended,
                    start.saturating_duration_since(t.intended.max(t.ready)),
                );
            }
            let r = call_slot(&sh, conn, t.measured, t.stall).await;
            let done = Instant::now();
            finish_call(&sh, t.measured, &r, t.intended, Some(done - start), done);
            match pool.take_due(&sh, Instant::now()) {
                Some(next) => t = next,
                None => break,
            }
            // Behind schedule a call that completes without waiting (inproc) would loop here
            // for good: let the other tasks have their turn.
            tokio::task::coop::consume_budget().await;
        }
        pool.free.borrow_mut().push_back((me, Instant::now()));
        pool.freed.notify_one();
    }
}

/// Walks the schedule until admission closes, or until every caller has been stuck in a call
/// for `drain` after it closed (a server that stopped answering, with no deadline set).
async fn dispatcher<C: Connection>(
    sh: Rc<Shared<C>>,
    pool: Rc<Pool>,
    drain: Duration,
) -> std::io::Result<()> {
    let pacer = match sh.spec.pacing {
        Pacing::Sleep => Pacer::new()?,
        Pacing::Spin => Pacer::spinning()?,
    };
    pool.advance(&sh);
    loop {
        let Some(intended) = pool.pending(&sh, Instant::now()) else {
            return Ok(());
        };
        // Wait for an idle caller, then for the due time; a caller finishing meanwhile may
        // take the request itself (then look again).
        if pool.free.borrow().is_empty() {
            // Look up now and then: the nominal end or an interruption closes admission
            // without a notification, and callers that never return must not hold the run.
            let _ = tokio::time::timeout(Duration::from_millis(100), pool.freed.notified()).await;
            sh.check_close();
            if sh
                .closed_at
                .get()
                .is_some_and(|c| Instant::now() >= c + drain)
                && pool.free.borrow().is_empty()
            {
                return Ok(());
            }
            continue;
        }
        pacer.sleep_until(intended).await?;
        if pool.next.get() != Some(intended) {
            continue;
        }
        let Some((slot, ready)) = pool.free.borrow_mut().pop_front() else {
            continue;
        };
        let ticket = pool.issue(&sh, intended, ready);
        pool.slots[slot].ticket.set(Some(ticket));
        pool.slots[slot].go.notify_one();
        // When behind schedule nothing above waits: let the callers run.
        tokio::task::coop::consume_budget().await;
    }
}

/// Wire bytes, the thread's CPU time and the wall clock at the start of the measured phase.
type Snapshot = (Option<WireBytes>, Duration, Instant);

fn wire_total<C: Connection>(conns: &[RefCell<Rc<C>>]) -> Option<WireBytes> {
    let mut total = WireBytes::default();
    for c in conns {
        let w = c.borrow().wire_bytes()?;
        total.sent += w.sent;
        total.received += w.received;
    }
    Some(total)
}

async fn drive<C: Connection>(
    plan: WorkerPlan,
    conns: Vec<C>,
    dial: Option<Dial<C>>,
    start: Start,
) -> WorkerOutput {
    let sh = shared(&plan, conns, dial, &start);
    tokio::time::sleep_until(start.t0.into()).await;

    // Snapshots at the start of the measured phase, and CPU placement while running.
    let snap: Rc<Cell<Option<Snapshot>>> = Rc::new(Cell::new(None));
    let cpus = Rc::new(RefCell::new(CpusSeen::default()));
    let done_flag = Rc::new(Cell::new(false));
    {
        let (sh, snap, cpus, done_flag) =
            (sh.clone(), snap.clone(), cpus.clone(), done_flag.clone());
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(sh.measure_start.into()).await;
            snap.set(Some((wire_total(&sh.conns), thread_cpu(), Instant::now())));
            while !done_flag.get() {
                cpus.borrow_mut().note(current_cpu());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    let callers = plan.callers.max(1) as usize;
    let nconn = sh.conns.len().max(1);
    let incomplete = match &plan.spec.mode {
        Mode::Closed { .. } => {
            sh.active.set(callers as u32);
            for i in 0..callers {
                tokio::task::spawn_local(closed_caller(sh.clone(), i % nconn));
            }
            wait_drained(&sh, plan.drain, || sh.active.get() == 0).await
        }
        Mode::Open { rate, schedule, .. } => {
            open_loop(&sh, &plan, &start, (*rate, *schedule), callers).await
        }
    };
    done_flag.set(true);
    let (busy, wire) = usage_since(snap.take(), &sh);
    for c in &sh.conns {
        let c = c.borrow().clone();
        // A connection broken by a fault may never answer a graceful close.
        let _ = tokio::time::timeout(Duration::from_secs(1), c.close()).await;
    }
    let cpus = cpus.borrow().clone();
    let mut recorder = std::mem::replace(
        &mut *sh.rec.borrow_mut(),
        Recorder::new(start.measure_start, false, false),
    );
    recorder.finish();
    WorkerOutput {
        recorder,
        incomplete,
        wire,
        busy,
        cpus,
    }
}

/// What a worker's callers share: the connections, the request, the recorder, the clock.
fn shared<C: Connection>(
    plan: &WorkerPlan,
    conns: Vec<C>,
    dial: Option<Dial<C>>,
    start: &Start,
) -> Rc<Shared<C>> {
    let spec = plan.spec.clone();
    let streams = spec.method != Method::Unary;
    let open_loop = matches!(spec.mode, Mode::Open { .. });
    let mut request = EchoRequest::new(pattern(spec.payload));
    request.directives.response_size = spec.response_size.map(|s| s as u32);
    request.directives.delay = spec.server_delay;
    if spec.method == Method::ServerStream {
        request.directives.response_count = Some(spec.messages);
    }
    let mut stalled_request = request.clone();
    if let Some(s) = spec.stall {
        stalled_request.directives.delay = s.duration;
    }
    let nslots = conns.len();
    let fault = plan.fault.clone();
    let mut recorder =
        Recorder::new(start.measure_start, open_loop, streams).with_live(plan.live.clone());
    if let Some(f) = &fault {
        recorder = recorder.with_phases(f.interval, &f.phases);
    } else if let Some(r) = &spec.ramp {
        // A ramp's stages are phases: each request is charged to the stage it was due in.
        let starts: Vec<Duration> = r.segments(0.0).iter().map(|s| s.start).collect();
        recorder = recorder.with_phases(super::recorder::INTERVAL, &starts);
    }
    Rc::new(Shared {
        spec: spec.clone(),
        conns: conns
            .into_iter()
            .map(|c| RefCell::new(Rc::new(c)))
            .collect(),
        redialing: (0..nslots).map(|_| Cell::new(false)).collect(),
        dial,
        deadline_here: fault.is_some(),
        request,
        stalled_request,
        options: CallOptions {
            timeout: spec.timeout,
            ..CallOptions::default()
        },
        rec: RefCell::new(recorder),
        measure_start: start.measure_start,
        end: start.end,
        remaining: Cell::new(plan.requests),
        // Only worker 0 stalls, so a run stalls exactly once.
        stall_at: Cell::new(
            spec.stall
                .filter(|_| plan.index == 0)
                .map(|s| start.measure_start + s.at),
        ),
        closed_at: Cell::new(None),
        interrupted: plan.interrupted.clone(),
        in_flight: Cell::new(0),
        active: Cell::new(0),
        changed: Notify::new(),
    })
}

/// The open loop: a pool of callers fed by the dispatcher's schedule. Returns the measured
/// requests left unanswered (in flight when the drain ran out); those due and never sent are
/// counted in the recorder.
async fn open_loop<C: Connection>(
    sh: &Rc<Shared<C>>,
    plan: &WorkerPlan,
    start: &Start,
    (rate, schedule): (f64, Schedule),
    callers: usize,
) -> u64 {
    let nconn = sh.conns.len().max(1);
    let pool = Rc::new(Pool {
        slots: (0..callers)
            .map(|_| Slot {
                ticket: Cell::new(None),
                go: Notify::new(),
            })
            .collect(),
        free: RefCell::new((0..callers).map(|i| (i, start.t0)).collect()),
        freed: Notify::new(),
        starts: RefCell::new(Starts::ramped(
            schedule,
            &plan
                .spec
                .ramp
                .as_ref()
                .map(|r| ramp_from_start(r, rate, start))
                .unwrap_or_default(),
            rate,
            plan.index,
            plan.workers,
            plan.spec.seed,
        )),
        t0: start.t0,
        next: Cell::new(None),
        refused: Cell::new(None),
    });
    for i in 0..callers {
        tokio::task::spawn_local(open_caller(sh.clone(), pool.clone(), i, i % nconn));
    }
    if let Err(e) = dispatcher(sh.clone(), pool.clone(), plan.drain).await {
        tracing::error!("open-loop pacer failed: {e}");
        sh.closed_at.set(Some(Instant::now()));
    }
    let pool2 = pool.clone();
    let drained = wait_until(sh, &pool.freed, plan.drain, move || {
        pool2.free.borrow().len() == callers
    })
    .await;
    pool.count_unsent(sh);
    let incomplete = if drained { 0 } else { sh.in_flight.get() };
    // Wake every caller with no ticket: they return.
    for s in &pool.slots {
        s.ticket.set(None);
        s.go.notify_one();
    }
    incomplete
}

/// A ramp's segments as offsets from the schedule's origin (the start of the warm-up): the
/// warm-up runs at the ramp's starting rate, and the stages begin with the measured time.
fn ramp_from_start(
    ramp: &wirebench_scenarios::load::Ramp,
    rate: f64,
    start: &Start,
) -> Vec<wirebench_scenarios::load::Segment> {
    let warmup = start.measure_start.saturating_duration_since(start.t0);
    let mut segs = vec![wirebench_scenarios::load::Segment {
        start: Duration::ZERO,
        length: warmup,
        from: rate,
        to: rate,
    }];
    segs.extend(ramp.segments(rate).into_iter().map(|mut s| {
        s.start += warmup;
        s
    }));
    segs.retain(|s| !s.length.is_zero());
    segs
}

/// The worker thread's busy fraction and the bytes on the wire since the measured start.
fn usage_since<C: Connection>(snap: Option<Snapshot>, sh: &Shared<C>) -> (f64, Option<WireBytes>) {
    let end_wall = Instant::now();
    let end_cpu = thread_cpu();
    let end_wire = wire_total(&sh.conns);
    match snap {
        Some((w0, c0, t0)) => {
            let wall = end_wall.saturating_duration_since(t0).as_secs_f64();
            let busy = if wall > 0.0 {
                (end_cpu.saturating_sub(c0)).as_secs_f64() / wall
            } else {
                0.0
            };
            let wire = match (w0, end_wire) {
                (Some(a), Some(b)) => Some(WireBytes {
                    sent: b.sent.saturating_sub(a.sent),
                    received: b.received.saturating_sub(a.received),
                }),
                _ => None,
            };
            (busy, wire)
        }
        None => (0.0, None),
    }
}

/// Closed loop: waits until every caller returned, giving up `drain` after admission closed;
/// returns the measured calls left unanswered.
async fn wait_drained<C>(sh: &Rc<Shared<C>>, drain: Duration, done: impl Fn() -> bool) -> u64 {
    if wait_until(sh, &sh.changed, drain, done).await {
        0
    } else {
        sh.in_flight.get()
    }
}

/// Waits until `done()` holds, woken by `notify`; gives up `drain` after admission closed.
async fn wait_until<C>(
    sh: &Rc<Shared<C>>,
    notify: &Notify,
    drain: Duration,
    done: impl Fn() -> bool,
) -> bool {
    loop {
        if done() {
            return true;
        }
        sh.check_close();
        let limit = match sh.closed_at.get() {
            Some(c) => c + drain,
            // Admission still open: check again at least every 100 ms (the nominal end or
            // an interruption closes it without a notification to this waiter).
            None => Instant::now() + Duration::from_millis(100),
        };
        if sh.closed_at.get().is_some() && Instant::now() >= limit {
            return done();
        }
        let _ = tokio::time::timeout_at(limit.into(), notify.notified()).await;
    }
}
