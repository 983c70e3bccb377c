//! The one `Echo` implementation every transport's server adapts: directives, status, metadata
//! echo, deadlines, cancellation, size limits and token auth are decided here, once.
//!
//! A transport turns its wire into a [`CallHead`] and a [`ServerCall`] and sends back what
//! [`Echo::unary`] / [`Echo::handle`] decide; it never implements echo behaviour itself, so a
//! comparison measures the transport, not the handler.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::message::{Directives, EchoRequest, EchoResponse, FailWith, Method, pattern};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::transport::DEFAULT_MAX_MESSAGE_SIZE;

/// Request metadata whose key starts with this prefix is echoed back as initial metadata.
pub const ECHO_INITIAL_PREFIX: &str = "x-initial-";
/// Request metadata whose key starts with this prefix is echoed back as trailing metadata.
pub const ECHO_TRAILING_PREFIX: &str = "x-trailing-";
/// Trailing metadata key carrying the deadline budget the server saw, in microseconds
/// (`none` when the call had no deadline); sent when a request asks for it.
pub const DEADLINE_REPORT_KEY: &str = "x-wb-deadline-budget-us";
/// Initial metadata key carrying the client identity the server saw under mutual TLS.
pub const PEER_IDENTITY_KEY: &str = "x-wb-peer-identity";
/// The metadata key for token auth (`Bearer <token>`).
pub const AUTHORIZATION_KEY: &str = "authorization";

/// Server-side policy shared by every transport.
#[derive(Clone, Debug)]
pub struct EchoConfig {
    /// Largest request payload accepted; larger fail with `RESOURCE_EXHAUSTED` and the
    /// connection stays usable.
    pub max_message_size: usize,
    /// When set, every call must carry `authorization: Bearer <token>`.
    pub auth_token: Option<String>,
}

impl Default for EchoConfig {
    fn default() -> EchoConfig {
        EchoConfig {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            auth_token: None,
        }
    }
}

/// What the server observed, for tests and conformance cases that must see the server's side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Calls whose handler saw a client cancellation.
    pub cancelled: u64,
    /// Calls the server ended because their deadline passed.
    pub deadline_exceeded: u64,
    /// Calls refused for missing or wrong credentials.
    pub unauthenticated: u64,
}

/// How the transport sees the start of a call.
#[derive(Clone, Debug)]
pub struct CallHead {
    /// The method called.
    pub method: Method,
    /// Request metadata.
    pub metadata: Metadata,
    /// The deadline, converted from the wire's relative timeout on arrival.
    pub deadline: Option<Instant>,
    /// The client's certificate identity under mutual TLS (shared by every call of a
    /// connection, so a call does not copy it).
    pub peer_identity: Option<Arc<str>>,
}

impl CallHead {
    /// A head with no metadata, deadline or identity.
    pub fn new(method: Method) -> CallHead {
        CallHead {
            method,
            metadata: Metadata::new(),
            deadline: None,
            peer_identity: None,
        }
    }
}

/// A transport's server side of one streaming call.
pub trait ServerCall: Send {
    /// The next request; `Ok(None)` once the client half-closed.
    fn recv(&mut self) -> impl Future<Output = Result<Option<EchoRequest>, Status>> + Send;
    /// Sends initial metadata (called at most once, before any response).
    fn send_headers(
        &mut self,
        headers: Metadata,
    ) -> impl Future<Output = Result<(), Status>> + Send;
    /// Sends one response.
    fn send(&mut self, response: EchoResponse) -> impl Future<Output = Result<(), Status>> + Send;
}

/// The outcome of a unary call, for the transport to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnaryOutcome {
    /// Initial metadata (send only when non-empty).
    pub headers: Metadata,
    /// The response, present when `status` is OK.
    pub response: Option<EchoResponse>,
    /// The final status; its metadata is the trailing metadata.
    pub status: Status,
}

impl UnaryOutcome {
    /// A failed call: no metadata, no response.
    pub fn failed(status: Status) -> UnaryOutcome {
        UnaryOutcome {
            headers: Metadata::new(),
            response: None,
            status,
        }
    }
}

/// The shared echo service.
#[derive(Debug)]
pub struct Echo {
    config: EchoConfig,
    calls: AtomicU64,
    observed: watch::Sender<Observed>,
}

impl Default for Echo {
    fn default() -> Echo {
        Echo::new(EchoConfig::default())
    }
}

enum Wait {
    Cancelled,
    Deadline,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Echo {
    /// An echo service with `config`.
    pub fn new(config: EchoConfig) -> Echo {
        Echo {
            config,
            calls: AtomicU64::new(0),
            observed: watch::Sender::new(Observed::default()),
        }
    }

    /// The policy in force.
    pub fn config(&self) -> &EchoConfig {
        &self.config
    }

    /// Calls started so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// A watch on what the server observed (cancellations, expired deadlines, refusals).
    pub fn observed(&self) -> watch::Receiver<Observed> {
        self.observed.subscribe()
    }

    /// Waits until `pred` holds for the observations, up to `within`; returns the last value
    /// and whether `pred` held.
    pub async fn wait_observed(
        &self,
        within: Duration,
        pred: impl Fn(&Observed) -> bool,
    ) -> (Observed, bool) {
        let mut rx = self.observed();
        let held = matches!(
            tokio::time::timeout(within, rx.wait_for(|o| pred(o))).await,
            Ok(Ok(_))
        );
        let last = *rx.borrow();
        (last, held)
    }

    fn note(&self, f: impl FnOnce(&mut Observed)) {
        self.observed.send_modify(f);
    }

    /// Races `fut` against the client's cancellation and the call's deadline; whichever comes
    /// first is what the server observes.
    async fn guarded<T>(
        &self,
        head: &CallHead,
        cancel: &CancellationToken,
        fut: impl Future<Output = T>,
    ) -> Result<T, Status> {
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Wait::Cancelled),
            _ = sleep_until_opt(head.deadline) => Err(Wait::Deadline),
            v = fut => Ok(v),
        };
        outcome.map_err(|w| self.observe(w))
    }

    fn observe(&self, w: Wait) -> Status {
        match w {
            Wait::Cancelled => {
                self.note(|o| o.cancelled += 1);
                Status::cancelled("cancelled by the client")
            }
            Wait::Deadline => {
                self.note(|o| o.deadline_exceeded += 1);
                Status::deadline_exceeded("deadline exceeded (server)")
            }
        }
    }

    /// Checks credentials and the deadline at the start of a call.
    fn admit(&self, head: &CallHead) -> Result<(), Status> {
        if let Some(token) = &self.config.auth_token {
            let presented = head.metadata.get_ascii(AUTHORIZATION_KEY);
            let ok = presented
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| t == token);
            if !ok {
                self.note(|o| o.unauthenticated += 1);
                let why = if presented.is_some() {
                    "invalid bearer token"
                } else {
                    "missing authorization metadata"
                };
                return Err(Status::new(Code::Unauthenticated, why));
            }
        }
        if let Some(d) = head.deadline
            && d <= Instant::now()
        {
            return Err(self.observe(Wait::Deadline));
        }
        Ok(())
    }

    fn check_size(&self, req: &EchoRequest) -> Result<(), Status> {
        let max = self.config.max_message_size;
        if req.payload.len() > max {
            return Err(Status::resource_exhausted(format!(
                "request message of {} bytes exceeds the server's limit of {max} bytes",
                req.payload.len()
            )));
        }
        Ok(())
    }

    /// Initial and trailing metadata echoed from the request.
    fn echoed_metadata(&self, head: &CallHead) -> (Metadata, Metadata) {
        let mut initial = Metadata::new();
        let mut trailing = Metadata::new();
        for e in &head.metadata {
            if e.key().starts_with(ECHO_INITIAL_PREFIX) {
                initial.push(e.clone());
            } else if e.key().starts_with(ECHO_TRAILING_PREFIX) {
                trailing.push(e.clone());
            }
        }
        if let Some(id) = &head.peer_identity {
            // An identity that is not printable ASCII is not echoed rather than mangled.
            let _ = initial.append_ascii(PEER_IDENTITY_KEY, id.to_string());
        }
        (initial, trailing)
    }

    fn report_deadline(head: &CallHead, trailers: &mut Metadata) {
        let value = match head.deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_micros()
                .to_string(),
            None => "none".to_owned(),
        };
        // Key and value are ASCII constants/digits: cannot fail.
        let _ = trailers.append_ascii(DEADLINE_REPORT_KEY, value);
    }

    fn fail_status(f: &FailWith) -> Status {
        Status::new(f.code, f.message.clone())
    }

    fn response_for(req: &EchoRequest, size: Option<u32>) -> EchoResponse {
        match size {
            Some(n) => EchoResponse::new(pattern(n as usize)),
            None => EchoResponse::new(req.payload.clone()),
        }
    }

    /// The sizes of the responses `d` asks for (`None` = echo the payload).
    fn response_plan(d: &Directives) -> impl Iterator<Item = Option<u32>> + '_ {
        let explicit = d.response_sizes.iter().map(|s| Some(*s));
        let count = if d.response_sizes.is_empty() {
            d.response_count.unwrap_or(1)
        } else {
            0
        };
        explicit.chain(std::iter::repeat_n(d.response_size, count as usize))
    }

    /// Answers a unary call at once when it needs no waiting (no delay): the transport's
    /// fast path, with no task, timer or cancellation token. Returns the request back when
    /// the call must wait; then use [`Echo::unary`].
    // The request goes back by value (a move, not an allocation): the slow path needs it.
    #[allow(clippy::result_large_err)]
    pub fn unary_now(
        &self,
        head: &CallHead,
        request: EchoRequest,
    ) -> Result<UnaryOutcome, EchoRequest> {
        if !request.directives.delay.is_zero() {
            return Err(request);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.answer_unary(head, request))
    }

    fn answer_unary(&self, head: &CallHead, request: EchoRequest) -> UnaryOutcome {
        if head.method != Method::Unary {
            return UnaryOutcome {
                headers: Metadata::new(),
                response: None,
                status: Status::unimplemented(format!(
                    "method {} is not implemented by the echo service",
                    head.method.name()
                )),
            };
        }
        if let Err(status) = self.admit(head).and_then(|()| self.check_size(&request)) {
            return UnaryOutcome {
                headers: Metadata::new(),
                response: None,
                status,
            };
        }
        let (headers, mut trailers) = if head.metadata.is_empty() && head.peer_identity.is_none() {
            (Metadata::new(), Metadata::new())
        } else {
            self.echoed_metadata(head)
        };
        if request.directives.report_deadline {
            Self::report_deadline(head, &mut trailers);
        }
        if let Some(f) = &request.directives.fail {
            return UnaryOutcome {
                headers,
                response: None,
                status: Self::fail_status(f).with_metadata(trailers),
            };
        }
        let size = request
            .directives
            .response_sizes
            .first()
            .copied()
            .or(request.directives.response_size);
        UnaryOutcome {
            headers,
            response: Some(Self::response_for(&request, size)),
            status: Status::ok().with_metadata(trailers),
        }
    }

    /// Answers a unary call, waiting for its delay while watching for cancellation and the
    /// deadline.
    pub async fn unary(
        &self,
        head: &CallHead,
        request: EchoRequest,
        cancel: &CancellationToken,
    ) -> UnaryOutcome {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(status) = self.admit(head) {
            return UnaryOutcome {
                headers: Metadata::new(),
                response: None,
                status,
            };
        }
        let delay = request.directives.delay;
        if !delay.is_zero()
            && let Err(status) = self.guarded(head, cancel, tokio::time::sleep(delay)).await
        {
            return UnaryOutcome {
                headers: Metadata::new(),
                response: None,
                status,
            };
        }
        self.answer_unary(head, request)
    }

    /// Runs a call of any method over `call`, returning the final status (its metadata is
    /// the trailing metadata). The transport sends the status unless the client is gone.
    pub async fn handle<C: ServerCall>(
        &self,
        head: &CallHead,
        call: &mut C,
        cancel: &CancellationToken,
    ) -> Status {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(status) = self.admit(head) {
            return status;
        }
        let (headers, trailers) = self.echoed_metadata(head);
        let result = match head.method {
            Method::Unary => self.handle_unary(head, call, cancel, headers).await,
            Method::ServerStream => self.server_stream(head, call, cancel, headers).await,
            Method::ClientStream => self.client_stream(head, call, cancel, headers).await,
            Method::Bidi => self.bidi(head, call, cancel, headers).await,
            Method::Unimplemented => Err(Status::unimplemented(
                "method Unimplemented is not implemented by the echo service",
            )),
        };
        match result {
            Ok(report) => {
                let mut trailers = trailers;
                if report {
                    Self::report_deadline(head, &mut trailers);
                }
                Status::ok().with_metadata(trailers)
            }
            Err(status) => {
                let mut status = status;
                if status.metadata().is_empty() {
                    status = status.with_metadata(trailers);
                }
                status
            }
        }
    }

    async fn recv<C: ServerCall>(
        &self,
        head: &CallHead,
        call: &mut C,
        cancel: &CancellationToken,
    ) -> Result<Option<EchoRequest>, Status> {
        let req = self.guarded(head, cancel, call.recv()).await??;
        if let Some(r) = &req {
            self.check_size(r)?;
        }
        Ok(req)
    }

    async fn send<C: ServerCall>(
        &self,
        head: &CallHead,
        call: &mut C,
        cancel: &CancellationToken,
        response: EchoResponse,
    ) -> Result<(), Status> {
        self.guarded(head, cancel, call.send(response)).await?
    }

    async fn pause(
        &self,
        head: &CallHead,
        cancel: &CancellationToken,
        d: Duration,
    ) -> Result<(), Status> {
        if d.is_zero() {
            return Ok(());
        }
        self.guarded(head, cancel, tokio::time::sleep(d)).await
    }

    async fn send_headers<C: ServerCall>(
        &self,
        head: &CallHead,
        call: &mut C,
        cancel: &CancellationToken,
        headers: Metadata,
    ) -> Result<(), Status> {
        if headers.is_empty() {
            return Ok(());
        }
        self.guarded(head, cancel, call.send_headers(headers))
            .await?
    }

    /// A unary call arriving over a streaming wire. Returns whether to report the deadline.
    async fn handle_unary<C: ServerCall>(
        &self,
        head: &CallHead,
        call: &mut C,
        cancel: &CancellationToken,
        headers: Metadata,
    ) -> Result<bool, Status> {
        let Some(req) = self.recv(head, call, cancel).await? else {
            return Err(Status::invalid_argument(
                "unary call carried no request message",
            ));
        };
        self.pause(head, cancel, req.directives.delay).await?;
        self.send_headers(head, call, cancel, headers).await?;
        if let Some(f) = &req.directives.fail {
            return Err(Self::fail_status(f));
        }
        let size = req
            .directives
            .response_sizes
            .first()
            .copied()
            .or(req.directives.response_size);
        let report = req.directives.report_deadline;
        self.send(head, call, cancel, Self::response_for(&req, size))
            .await?;
        Ok(report)
    }

    async fn server_stream<C: ServerCall>(
        &self,
        head: &CallHead,
        call: &mut C,
        cancel: &CancellationToken,
        headers: Metadata,
    ) -> Result<bool, Status> {
        let Some(req) = self.recv(head, call, cancel).await? else {
            return Err(Status::invalid_argument(
                "server-stream call carried no request message",
            ));
        };
        let d = &req.directives;
        self.pause(head, cancel, d.delay).await?;
        self.send_headers(head, call, cancel, headers).await?;
        for (sent, size) in Self::response_plan(d).enumerate() {
            if let Some(f) = &d.fail
                && sent as u64 >= u64::from(f.after)
            {
                return Err(Self::fail_status(f));
            }
            self.pause(head, cancel, d.response_interval).await?;
            self.send(head, call, cancel, Self::response_for(&req, size))
                .await?;
        }
        if let Some(f) = &d.fail {
            return Err(Self::fail_status(f));
        }
        Ok(d.report_deadline)
    }

    async fn client_stream<C: ServerCall>(
        &self,
        head: &CallHead,
        call: &mut C,
        cancel: &CancellationToken,
        headers: Metadata,
    ) -> Result<bool, Status> {
        self.send_headers(head, call, cancel, headers).await?;
        let mut first: Option<Directives> = None;
        let mut messages = 0u64;
        let mut bytes = 0u64;
        while let Some(req) = self.recv(head, call, cancel).await? {
            messages += 1;
            bytes += req.payload.len() as u64;
            let d = first.get_or_insert(req.directives);
            if let Some(f) = &d.fail
                && messages >= u64::from(f.after.max(1))
            {
                return Err(Self::fail_status(f));
            }
        }
        let d = first.unwrap_or_default();
        self.pause(head, cancel, d.delay).await?;
        if let Some(f) = &d.fail {
            return Err(Self::fail_status(f));
        }
        let payload = match d.response_size {
            Some(n) => pattern(n as usize),
            None => Bytes::new(),
        };
        let response = EchoResponse {
            payload,
            received_messages: messages,
            received_bytes: bytes,
        };
        self.send(head, call, cancel, response).await?;
        Ok(d.report_deadline)
    }

    async fn bidi<C: ServerCall>(
        &self,
        head: &CallHead,
        call: &mut C,
        cancel: &CancellationToken,
        headers: Metadata,
    ) -> Result<bool, Status> {
        self.send_headers(head, call, cancel, headers).await?;
        let mut fail: Option<FailWith> = None;
        let mut report = false;
        let mut sent = 0u64;
        while let Some(req) = self.recv(head, call, cancel).await? {
            let d = &req.directives;
            if fail.is_none() {
                fail.clone_from(&d.fail);
            }
            report |= d.report_deadline;
            self.pause(head, cancel, d.delay).await?;
            for size in Self::response_plan(d) {
                if let Some(f) = &fail
                    && sent >= u64::from(f.after)
                {
                    return Err(Self::fail_status(f));
                }
                self.pause(head, cancel, d.response_interval).await?;
                self.send(head, call, cancel, Self::response_for(&req, size))
                    .await?;
                sent += 1;
            }
            if let Some(f) = &fail
                && sent >= u64::from(f.after)
            {
                return Err(Self::fail_status(f));
            }
        }
        if let Some(f) = &fail {
            return Err(Self::fail_status(f));
        }
        Ok(report)
    }
}
