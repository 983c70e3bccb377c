//! Client-side call plumbing shared by transports whose client demultiplexes a call's events
//! into a channel: the receiving half, its deadline and its cancel-on-drop.

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::message::EchoResponse;
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::transport::{CallReceiver, until_deadline};

/// What the server sends on one call, in order: headers?, messages*, end.
#[derive(Debug)]
pub enum CallEvent {
    /// Initial metadata.
    Headers(Metadata),
    /// A response message.
    Message(EchoResponse),
    /// The final status (its metadata is the trailing metadata).
    End(Status),
}

/// How a transport tells its server that the client cancelled a call.
pub trait CancelSignal: Send + 'static {
    /// Signals the cancellation (idempotent; called at most once by [`EventReceiver`]).
    fn cancel(&mut self);
}

/// The status a sender returns once its call has ended.
pub fn call_ended() -> Status {
    Status::new(
        Code::FailedPrecondition,
        "the call has ended: its status is on the receiving half",
    )
}

/// A [`CallReceiver`] over a channel of [`CallEvent`]s.
#[derive(Debug)]
pub struct EventReceiver<C: CancelSignal> {
    rx: mpsc::Receiver<CallEvent>,
    deadline: Option<Instant>,
    /// A message that arrived while waiting for headers.
    stashed: Option<EchoResponse>,
    /// Headers already received (or known empty) and not yet taken by `headers()`.
    headers: Option<Metadata>,
    headers_done: bool,
    /// The final status once seen.
    end: Option<Status>,
    cancel: Option<C>,
}

impl<C: CancelSignal> EventReceiver<C> {
    /// A receiver over `rx`; `cancel` is fired on `cancel()`, on deadline expiry and on drop
    /// before the call ended.
    pub fn new(rx: mpsc::Receiver<CallEvent>, deadline: Option<Instant>, cancel: C) -> Self {
        EventReceiver {
            rx,
            deadline,
            stashed: None,
            headers: None,
            headers_done: false,
            end: None,
            cancel: Some(cancel),
        }
    }

    fn fire_cancel(&mut self) {
        if let Some(mut c) = self.cancel.take() {
            c.cancel();
        }
    }

    fn finish(&mut self, status: Status) -> Result<Option<EchoResponse>, Status> {
        self.cancel = None;
        let result = if status.is_ok() {
            Ok(None)
        } else {
            Err(status.clone())
        };
        self.end = Some(status);
        result
    }

    async fn next_event(&mut self) -> Result<CallEvent, Status> {
        let deadline = self.deadline;
        let rx = &mut self.rx;
        let ev = until_deadline(deadline, async {
            rx.recv()
                .await
                .ok_or_else(|| Status::unavailable("connection lost before the call ended"))
        })
        .await;
        if let Err(s) = &ev
            && s.code() == Code::DeadlineExceeded
        {
            self.fire_cancel();
        }
        ev
    }
}

impl<C: CancelSignal> CallReceiver for EventReceiver<C> {
    async fn headers(&mut self) -> Result<Metadata, Status> {
        if self.headers_done {
            return Ok(self.headers.take().unwrap_or_default());
        }
        if let Some(end) = &self.end {
            return if end.is_ok() {
                Ok(Metadata::new())
            } else {
                Err(end.clone())
            };
        }
        self.headers_done = true;
        match self.next_event().await {
            Ok(CallEvent::Headers(md)) => Ok(md),
            Ok(CallEvent::Message(m)) => {
                self.stashed = Some(m);
                Ok(Metadata::new())
            }
            Ok(CallEvent::End(status)) => self.finish(status).map(|_| Metadata::new()),
            Err(status) => {
                self.end = Some(status.clone());
                Err(status)
            }
        }
    }

    async fn recv(&mut self) -> Result<Option<EchoResponse>, Status> {
        if let Some(m) = self.stashed.take() {
            return Ok(Some(m));
        }
        if let Some(end) = &self.end {
            return if end.is_ok() {
                Ok(None)
            } else {
                Err(end.clone())
            };
        }
        loop {
            match self.next_event().await {
                Ok(CallEvent::Headers(md)) => {
                    if !self.headers_done {
                        self.headers = Some(md);
                        self.headers_done = true;
                    }
                }
                Ok(CallEvent::Message(m)) => {
                    self.headers_done = true;
                    return Ok(Some(m));
                }
                Ok(CallEvent::End(status)) => return self.finish(status),
                Err(status) => {
                    self.end = Some(status.clone());
                    return Err(status);
                }
            }
        }
    }

    fn trailers(&self) -> &Metadata {
        static EMPTY: Metadata = Metadata::new();
        self.end.as_ref().map_or(&EMPTY, Status::metadata)
    }

    fn cancel(&mut self) {
        if self.end.is_none() {
            self.end = Some(Status::cancelled("cancelled by the client"));
        }
        self.fire_cancel();
    }
}

impl<C: CancelSignal> Drop for EventReceiver<C> {
    fn drop(&mut self) {
        // A receiver dropped before its call ended cancels the call.
        self.fire_cancel();
    }
}
