//! Resilience policies — timeout, retry with a budget and backoff, circuit breaker,
//! concurrency limit, reconnect — written once as a layer around any [`Connection`], the way
//! tower's middleware wraps any `Service`. [`Layered<C>`] is itself a `Connection`, so every
//! transport (and the registry's `AnyConnection`) gets the policies unchanged. Depends on
//! `wirebench-core` only.
//!
//! ```no_run
//! # use wirebench_core::{ClientConfig, Connection, EchoRequest, CallOptions, inproc::Inproc};
//! # use wirebench_policy as policy;
//! # async fn demo(endpoint: String) -> Result<(), Box<dyn std::error::Error>> {
//! let config: policy::PolicyConfig = toml::from_str(r#"
//!     timeout = "200ms"
//!     retry = { max_attempts = 3, initial_backoff = "10ms", max_backoff = "200ms" }
//!     reconnect = { initial_backoff = "20ms", max_backoff = "1s" }
//! "#)?;
//! let connector = policy::TransportConnector::new(Inproc, ClientConfig::default(), endpoint);
//! let conn = policy::layer(&config, connector, 42).await?;
//! let options = CallOptions { replay_safe: true, ..CallOptions::default() };
//! let _reply = conn.unary(EchoRequest::new(&b"hi"[..]), &options).await?;
//! println!("{:?}", conn.stats());
//! # Ok(()) }
//! ```
//!
//! # The layers, outermost first
//!
//! 1. **Concurrency limit** (`concurrency_limit`): at most `max_in_flight` calls at once
//!    through this layer; the others wait in FIFO order. With `max_queued`, a call that
//!    finds the queue full fails at once with `RESOURCE_EXHAUSTED`. A unary call holds its
//!    slot until it returns, a stream until its receiver sees the end or is dropped. It sits
//!    outermost so a waiting call has not yet been judged by the breaker nor started its
//!    attempts' clocks.
//! 2. **Circuit breaker** (`circuit_breaker`): judges each *call* (after its retries), so one
//!    call counts once. It opens after `consecutive_failures` failures in a row, or when the
//!    failures in a tumbling `failure_rate.window` reach `threshold` of at least `min_calls`
//!    calls. Open: calls fail fast with `UNAVAILABLE` "circuit open" and nothing is sent.
//!    After `open_for` it is half-open: `half_open_probes` calls go through; if all succeed it
//!    closes, if any fails it opens again. Failures are the `failure_codes` (default
//!    `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`: the peer or the path is sick); any other
//!    answer — `INVALID_ARGUMENT`, `NOT_FOUND`, ... — shows the peer is alive and counts as
//!    a success. A stream is judged by its open alone.
//! 3. **Retry** (`retry`): a failed attempt is retried when (a) its code is in
//!    `retryable_codes` (default `UNAVAILABLE` only; `DEADLINE_EXCEEDED` never unless listed,
//!    since the attempt may have run and used the caller's budget), (b) the call is
//!    replay-safe — `CallOptions::replay_safe` is set, or the config says
//!    `retry_non_idempotent = true`, (c) attempts remain (`max_attempts` counts the first),
//!    (d) the pause fits before the caller's deadline, and (e) the budget grants it. The pause
//!    before retry `n` is uniform in `[0, min(max_backoff, initial_backoff *
//!    multiplier^(n-1))]` ("full jitter"), drawn from an RNG seeded by the layer's seed.
//!    **Budget** (token bucket, as Finagle's `RetryBudget` and gRPC's retry throttling): each
//!    call deposits `budget_percent / 100` of a retry, `budget_min_per_sec` retries accrue per
//!    second (the floor; the bucket starts with one second's worth), each retry withdraws 1,
//!    and the balance is capped at `10 * budget_min_per_sec + budget_percent` — so over any
//!    time `t` with `n` calls, retries ≤ `n * budget_percent/100 + budget_min_per_sec * t +
//!    cap`. **Streams**: only the open is retried — it fails before any request message was
//!    sent, so nothing can be duplicated; once `open` has returned the halves nothing is
//!    retried (a stream failing after its first message was sent surfaces to the caller),
//!    and the replay-safe rule above applies to opens too.
//! 4. **Timeout** (`timeout`): each attempt's deadline is the policy's timeout, or what is
//!    left of the caller's deadline if that is sooner; it is passed down as
//!    `CallOptions::timeout`, so the transport enforces it and the server sees it. A caller's
//!    deadline bounds the whole call, retries and pauses included. For a stream the deadline
//!    covers its whole life.
//! 5. **Reconnect** (`reconnect`): a call failing with `UNAVAILABLE` marks its connection
//!    broken and starts one coalesced background re-dial through the [`Connector`], with
//!    backoff and jitter, until a dial succeeds; the new connection is swapped in
//!    atomically. See [`reconnect`](self::reconnect) for the details. The failed call is not
//!    replayed by this layer (the retry layer above decides that).
//! 6. The inner connection.
//!
//! Every layer counts what it did in [`PolicyStats`] (relaxed atomics: no lock on the call
//! path). A layer built from `PolicyConfig::default()` is a pass-through that counts nothing
//! and allocates nothing; callers can skip wrapping when [`PolicyConfig::is_none`].

mod breaker;
mod config;
mod limit;
pub mod reconnect;
mod retry;
mod stats;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

pub use config::{
    BreakerConfig, CodeName, FailureRate, LimitConfig, PolicyConfig, ReconnectConfig, RetryConfig,
};
pub use reconnect::{Connector, TransportConnector};
pub use stats::PolicyStats;

use breaker::Breaker;
use limit::Limiter;
use reconnect::Reconnector;
use retry::Retry;
use stats::{Counters, bump};

use wirebench_core::message::{EchoRequest, EchoResponse, Method};
use wirebench_core::metadata::Metadata;
use wirebench_core::status::{Code, Status};
use wirebench_core::transport::{
    CallOptions, CallReceiver, Connection, TransportError, UnaryReply, WireBytes,
};

/// Dials a connection with `connector` and wraps it in the policies of `config`. The connector
/// is kept for re-dials when `config.reconnect` is set. `seed` seeds the backoff jitter.
pub async fn layer<C: Connection>(
    config: &PolicyConfig,
    connector: impl Connector<C>,
    seed: u64,
) -> Result<Layered<C>, TransportError> {
    config.validate()?;
    let conn = connector.connect().await?;
    Ok(Layered::build(config, conn, Some(connector), seed))
}

/// Wraps an existing connection in the policies of `config`. Fails when `config` asks for
/// `reconnect`, which needs a [`Connector`]: use [`layer`] then.
pub fn wrap<C: Connection>(
    config: &PolicyConfig,
    connection: C,
    seed: u64,
) -> Result<Layered<C>, TransportError> {
    config.validate()?;
    if config.reconnect.is_some() {
        return Err(TransportError::Config(
            "policy.reconnect needs a connector: build the layer with policy::layer".into(),
        ));
    }
    Ok(Layered::build(
        config,
        connection,
        None::<fn() -> std::future::Ready<Result<C, TransportError>>>,
        seed,
    ))
}

enum Inner<C> {
    Direct(C),
    Reconnecting(Arc<Reconnector<C>>),
}

/// A connection wrapped in resilience policies; a [`Connection`] itself.
pub struct Layered<C: Connection> {
    inner: Inner<C>,
    /// No policy at all: every call goes straight to the inner connection.
    passthrough: bool,
    limiter: Option<Limiter>,
    breaker: Option<Breaker>,
    retry: Option<Retry>,
    timeout: Option<Duration>,
    stats: Arc<Counters>,
}

impl<C: Connection> fmt::Debug for Layered<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layered")
            .field("passthrough", &self.passthrough)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry.is_some())
            .field("breaker", &self.breaker.is_some())
            .field("limiter", &self.limiter.is_some())
            .field("reconnect", &matches!(self.inner, Inner::Reconnecting(_)))
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

impl<C: Connection> Layered<C> {
    fn build(
        config: &PolicyConfig,
        conn: C,
        connector: Option<impl Connector<C>>,
        seed: u64,
    ) -> Layered<C> {
        let stats = Arc::new(Counters::default());
        let inner = match (&config.reconnect, connector) {
            (Some(rc), Some(k)) => Inner::Reconnecting(Arc::new(Reconnector::new(
                conn,
                k,
                rc,
                // A different stream than the retry jitter's, from the same seed.
                seed ^ 0xC0FF_EE00_5EED_0001,
                Arc::clone(&stats),
            ))),
            _ => Inner::Direct(conn),
        };
        Layered {
            inner,
            passthrough: config.is_none(),
            limiter: config.concurrency_limit.as_ref().map(Limiter::new),
            breaker: config.circuit_breaker.as_ref().map(Breaker::new),
            retry: config.retry.as_ref().map(|r| Retry::new(r, seed)),
            timeout: config.timeout,
            stats,
        }
    }

    /// What the layers did so far.
    pub fn stats(&self) -> PolicyStats {
        self.stats.snapshot()
    }

    /// The options for one attempt: the timeout layer. `first` attempts may reuse the
    /// caller's options untouched when the policy does not shorten the deadline.
    fn attempt_options<'o>(
        &self,
        options: &'o CallOptions,
        caller_deadline: Option<Instant>,
        first: bool,
    ) -> Result<Cow<'o, CallOptions>, Status> {
        let remaining = match caller_deadline {
            None => None,
            Some(_) if first => options.timeout,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Status::deadline_exceeded(
                        "deadline exceeded before the next attempt",
                    ));
                }
                Some(left)
            }
        };
        let timeout = match (self.timeout, remaining) {
            (Some(p), Some(r)) if p < r => {
                bump(&self.stats.deadlines_applied);
                Some(p)
            }
            (Some(p), None) => {
                bump(&self.stats.deadlines_applied);
                Some(p)
            }
            (_, r) => r,
        };
        if timeout == options.timeout {
            Ok(Cow::Borrowed(options))
        } else {
            let mut o = options.clone();
            o.timeout = timeout;
            Ok(Cow::Owned(o))
        }
    }

    /// Decides whether attempt `attempt` (1-based) that failed with `status` is retried, and
    /// sleeps the backoff if so.
    async fn before_retry(
        &self,
        retry: Option<&Retry>,
        attempt: u32,
        status: &Status,
        caller_deadline: Option<Instant>,
    ) -> bool {
        let Some(r) = retry else { return false };
        if attempt >= r.max_attempts || !r.retryable(status.code()) {
            return false;
        }
        let pause = r.pause(attempt);
        if caller_deadline.is_some_and(|d| Instant::now() + pause >= d) {
            return false;
        }
        if !r.budget.withdraw() {
            bump(&self.stats.retries_refused_by_budget);
            return false;
        }
        tokio::time::sleep(pause).await;
        bump(&self.stats.retries);
        true
    }

    /// The retry and timeout layers around `attempt`.
    async fn with_retries<'o, T, F, Fut>(
        &self,
        options: &'o CallOptions,
        mut attempt_fn: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Cow<'o, CallOptions>, bool) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let caller_deadline = options.deadline();
        if let Some(r) = &self.retry {
            r.budget.deposit();
        }
        let retry = self.retry.as_ref().filter(|r| r.eligible(options));
        let max = retry.map_or(1, |r| r.max_attempts);
        let mut attempt = 1;
        loop {
            let opts = self.attempt_options(options, caller_deadline, attempt == 1)?;
            match attempt_fn(opts, attempt >= max).await {
                Ok(v) => return Ok(v),
                Err(s) => {
                    if !self.before_retry(retry, attempt, &s, caller_deadline).await {
                        return Err(s);
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// One unary attempt: the reconnect layer, then the inner connection.
    async fn attempt_unary(
        &self,
        request: EchoRequest,
        options: &CallOptions,
    ) -> Result<UnaryReply, Status> {
        match &self.inner {
            Inner::Direct(c) => c.unary(request, options).await,
            Inner::Reconnecting(r) => {
                let (slot, options) = connection(r, options).await?;
                let result = slot.conn.unary(request, &options).await;
                if matches!(&result, Err(s) if s.code() == Code::Unavailable) {
                    r.broken(slot.generation);
                }
                result
            }
        }
    }

    /// One open attempt: the reconnect layer, then the inner connection.
    async fn attempt_open(
        &self,
        method: Method,
        options: &CallOptions,
    ) -> Result<(C::Sender, PolicyReceiver<C>), Status> {
        match &self.inner {
            Inner::Direct(c) => {
                let (s, r) = c.open(method, options).await?;
                Ok((s, PolicyReceiver::new(r, None)))
            }
            Inner::Reconnecting(r) => {
                let (slot, options) = connection(r, options).await?;
                match slot.conn.open(method, &options).await {
                    Ok((s, rx)) => Ok((
                        s,
                        PolicyReceiver::new(rx, Some((Arc::clone(r), slot.generation))),
                    )),
                    Err(e) => {
                        if e.code() == Code::Unavailable {
                            r.broken(slot.generation);
                        }
                        Err(e)
                    }
                }
            }
        }
    }
}

/// The connection to use for an attempt; when it had to wait for a reconnect, the attempt's
/// timeout is shortened by the wait, so the deadline still holds.
async fn connection<'o, C: Connection>(
    r: &Reconnector<C>,
    options: &'o CallOptions,
) -> Result<(Arc<reconnect::Slot<C>>, Cow<'o, CallOptions>), Status> {
    let start = Instant::now();
    let deadline = options.deadline();
    let slot = r.connection(deadline).await?;
    let waited = start.elapsed();
    let options = match options.timeout {
        Some(t) if !waited.is_zero() => {
            let mut o = options.clone();
            o.timeout = Some(t.saturating_sub(waited).max(Duration::from_nanos(1)));
            Cow::Owned(o)
        }
        _ => Cow::Borrowed(options),
    };
    Ok((slot, options))
}

impl<C: Connection> Connection for Layered<C> {
    type Sender = C::Sender;
    type Receiver = PolicyReceiver<C>;

    async fn unary(
        &self,
        request: EchoRequest,
        options: &CallOptions,
    ) -> Result<UnaryReply, Status> {
        if self.passthrough
            && let Inner::Direct(c) = &self.inner
        {
            return c.unary(request, options).await;
        }
        bump(&self.stats.calls);
        let _slot = match &self.limiter {
            Some(l) => Some(l.acquire(&self.stats).await?),
            None => None,
        };
        let admission = match &self.breaker {
            Some(b) => Some(b.admit(&self.stats)?),
            None => None,
        };
        // The request is cloned for every attempt but the last, which takes it.
        let mut request = Some(request);
        let result = self
            .with_retries(options, |opts, last| {
                let req = if last {
                    request.take().unwrap_or_default()
                } else {
                    request.clone().unwrap_or_default()
                };
                async move { self.attempt_unary(req, &opts).await }
            })
            .await;
        if let Some(a) = admission {
            a.record(result.as_ref().err().map(Status::code), &self.stats);
        }
        result
    }

    async fn open(
        &self,
        method: Method,
        options: &CallOptions,
    ) -> Result<(C::Sender, PolicyReceiver<C>), Status> {
        if self.passthrough
            && let Inner::Direct(c) = &self.inner
        {
            let (s, r) = c.open(method, options).await?;
            return Ok((s, PolicyReceiver::new(r, None)));
        }
        bump(&self.stats.calls);
        let slot = match &self.limiter {
            Some(l) => Some(l.acquire_owned(&self.stats).await?),
            None => None,
        };
        let admission = match &self.breaker {
            Some(b) => Some(b.admit(&self.stats)?),
            None => None,
        };
        let result = self
            .with_retries(options, |opts, _| async move {
                self.attempt_open(method, &opts).await
            })
            .await;
        if let Some(a) = admission {
            a.record(result.as_ref().err().map(Status::code), &self.stats);
        }
        let (s, mut r) = result?;
        r.slot = slot;
        Ok((s, r))
    }

    async fn close(&self) {
        if let Some(l) = &self.limiter {
            l.close();
        }
        match &self.inner {
            Inner::Direct(c) => c.close().await,
            Inner::Reconnecting(r) => r.close().await,
        }
    }

    fn wire_bytes(&self) -> Option<WireBytes> {
        match &self.inner {
            Inner::Direct(c) => c.wire_bytes(),
            Inner::Reconnecting(r) => r.wire_bytes(),
        }
    }
}

/// The receiving half of a stream opened through a [`Layered`] connection: the inner
/// receiver, plus the concurrency-limit slot it holds until the call ends, plus the hook
/// that starts a reconnect when the stream fails with `UNAVAILABLE`.
pub struct PolicyReceiver<C: Connection> {
    inner: C::Receiver,
    slot: Option<OwnedSemaphorePermit>,
    reconnect: Option<(Arc<Reconnector<C>>, u64)>,
}

impl<C: Connection> fmt::Debug for PolicyReceiver<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyReceiver")
            .field("holds_slot", &self.slot.is_some())
            .finish_non_exhaustive()
    }
}

impl<C: Connection> PolicyReceiver<C> {
    fn new(inner: C::Receiver, reconnect: Option<(Arc<Reconnector<C>>, u64)>) -> Self {
        PolicyReceiver {
            inner,
            slot: None,
            reconnect,
        }
    }

    /// The call ended (or failed): free the limiter slot, report a broken connection.
    fn ended(&mut self, failure: Option<&Status>) {
        self.slot = None;
        if let (Some(s), Some((r, generation))) = (failure, &self.reconnect)
            && s.code() == Code::Unavailable
        {
            r.broken(*generation);
        }
        self.reconnect = None;
    }
}

impl<C: Connection> CallReceiver for PolicyReceiver<C> {
    async fn headers(&mut self) -> Result<Metadata, Status> {
        let r = self.inner.headers().await;
        if let Err(s) = &r {
            self.ended(Some(s));
        }
        r
    }

    async fn recv(&mut self) -> Result<Option<EchoResponse>, Status> {
        let r = self.inner.recv().await;
        match &r {
            Ok(Some(_)) => {}
            Ok(None) => self.ended(None),
            Err(s) => self.ended(Some(s)),
        }
        r
    }

    fn trailers(&self) -> &Metadata {
        self.inner.trailers()
    }

    fn cancel(&mut self) {
        self.inner.cancel();
        self.ended(None);
    }
}
