//! The `Echo` service's messages: methods, requests with their directives, and responses.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;

use crate::status::Code;

/// The four methods of the `Echo` service, plus one that no server implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Method {
    /// One request, one response.
    Unary = 0,
    /// One request, a stream of responses.
    ServerStream = 1,
    /// A stream of requests, one response.
    ClientStream = 2,
    /// Streams both ways.
    Bidi = 3,
    /// A method the `Echo` service does not implement: calling it must fail with
    /// `UNIMPLEMENTED` (each transport maps it to a method name its server does not know).
    Unimplemented = 15,
}

impl Method {
    /// The four implemented methods.
    pub const ALL: [Method; 4] = [
        Method::Unary,
        Method::ServerStream,
        Method::ClientStream,
        Method::Bidi,
    ];

    /// The method's wire number.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The method for a wire number, if it is one of ours.
    pub fn from_u8(n: u8) -> Option<Method> {
        match n {
            0 => Some(Method::Unary),
            1 => Some(Method::ServerStream),
            2 => Some(Method::ClientStream),
            3 => Some(Method::Bidi),
            15 => Some(Method::Unimplemented),
            _ => None,
        }
    }

    /// The gRPC-style name (`Unary`, `ServerStream`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Method::Unary => "Unary",
            Method::ServerStream => "ServerStream",
            Method::ClientStream => "ClientStream",
            Method::Bidi => "Bidi",
            Method::Unimplemented => "Unimplemented",
        }
    }

    /// Parses a name as printed by [`Method::name`] (case-insensitive; `-`/`_` ignored).
    pub fn parse(s: &str) -> Option<Method> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        Method::ALL
            .into_iter()
            .find(|m| m.name().to_ascii_lowercase() == norm)
    }
}

/// Makes the server fail the call with a status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailWith {
    /// The code to fail with (never `OK`).
    pub code: Code,
    /// The status message, carried byte-exact.
    pub message: String,
    /// On streams: fail after this many responses (server/bidi) or requests (client stream).
    pub after: u32,
}

/// What a request asks the server to do (in the spirit of gRPC's interop `TestService`).
///
/// Server-stream and client-stream calls are governed by their first request's directives;
/// in a bidi call each request's directives shape the responses to that request, and the
/// first `fail` seen applies to the whole call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// Size of each response payload; `None` echoes the request payload.
    pub response_size: Option<u32>,
    /// Number of responses to this request (server stream, bidi); `None` means one.
    pub response_count: Option<u32>,
    /// Explicit per-response sizes; when non-empty it overrides `response_size` and
    /// `response_count`.
    pub response_sizes: Vec<u32>,
    /// Pause before each response of a stream.
    pub response_interval: Duration,
    /// Pause before answering at all (the "sleeping server").
    pub delay: Duration,
    /// Fail the call with this status.
    pub fail: Option<FailWith>,
    /// Report the deadline budget the server saw, in microseconds, as trailing metadata
    /// [`DEADLINE_REPORT_KEY`](crate::echo::DEADLINE_REPORT_KEY).
    pub report_deadline: bool,
}

impl Directives {
    /// True when the directives are all defaults (a plain echo).
    pub fn is_plain(&self) -> bool {
        self == &Directives::default()
    }
}

/// A request message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoRequest {
    /// The payload (echoed unless `directives.response_size` says otherwise).
    pub payload: Bytes,
    /// What the server should do.
    pub directives: Directives,
}

impl EchoRequest {
    /// A plain echo of `payload`.
    pub fn new(payload: impl Into<Bytes>) -> EchoRequest {
        EchoRequest {
            payload: payload.into(),
            directives: Directives::default(),
        }
    }

    /// Replaces the directives.
    pub fn with_directives(mut self, directives: Directives) -> EchoRequest {
        self.directives = directives;
        self
    }
}

/// A response message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoResponse {
    /// The payload.
    pub payload: Bytes,
    /// Client stream: number of request messages the server received; otherwise 0.
    pub received_messages: u64,
    /// Client stream: total request payload bytes the server received; otherwise 0.
    pub received_bytes: u64,
}

impl EchoResponse {
    /// A response carrying `payload`.
    pub fn new(payload: Bytes) -> EchoResponse {
        EchoResponse {
            payload,
            received_messages: 0,
            received_bytes: 0,
        }
    }
}

/// Size of the shared pattern buffer that generated payloads are sliced from.
const PATTERN_LEN: usize = 4 << 20;

/// The byte at position `i` of every generated payload: `i % 251`.
///
/// A prime period makes a shifted, truncated or duplicated chunk visible to a byte-exact check.
pub fn pattern_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// A payload of `len` pattern bytes. Up to 4 MiB it is a zero-copy slice of one shared buffer,
/// so generating responses costs no allocation on the hot path.
pub fn pattern(len: usize) -> Bytes {
    static SHARED: OnceLock<Bytes> = OnceLock::new();
    if len <= PATTERN_LEN {
        SHARED
            .get_or_init(|| {
                (0..PATTERN_LEN)
                    .map(pattern_byte)
                    .collect::<Vec<u8>>()
                    .into()
            })
            .slice(..len)
    } else {
        (0..len).map(pattern_byte).collect::<Vec<u8>>().into()
    }
}

/// True when `bytes` is exactly `pattern(bytes.len())`.
pub fn is_pattern(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, b)| *b == pattern_byte(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_shared_and_checkable() {
        let a = pattern(1000);
        let b = pattern(10);
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert!(is_pattern(&a));
        assert!(!is_pattern(&a[1..]));
        assert_eq!(pattern(PATTERN_LEN + 3).len(), PATTERN_LEN + 3);
        assert!(is_pattern(&pattern(PATTERN_LEN + 3)));
    }

    #[test]
    fn methods_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::from_u8(m.as_u8()), Some(m));
            assert_eq!(Method::parse(m.name()), Some(m));
        }
        assert_eq!(Method::parse("server-stream"), Some(Method::ServerStream));
        assert_eq!(Method::from_u8(4), None);
    }
}
