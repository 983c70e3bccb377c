//! The conformance cases, one module per group, sizes from gRPC's interop suite where it has
//! them.

mod broker;
mod deadline;
mod errors;
mod faults;
mod streaming;
mod tls;
mod unary;
mod wire;

use std::time::Duration;

use wirebench_core::{CallOptions, CallReceiver, EchoResponse, Metadata, Status, Transport};

use super::{Case, Failure};

/// Every case, in report order, for transports of type `T`.
pub fn all<T: Transport + Clone>() -> Vec<Case<T>> {
    let mut v = Vec::new();
    v.extend(unary::cases());
    v.extend(streaming::cases());
    v.extend(deadline::cases());
    v.extend(errors::cases());
    v.extend(wire::cases());
    v.extend(faults::cases());
    v.extend(broker::cases());
    v.extend(tls::cases());
    v
}

/// Builds a [`Case`] from an `async fn(Ctx<T>) -> CaseResult`.
macro_rules! case {
    ($name:ident, $group:literal, $needs:expr, $summary:literal) => {
        case!($name, $group, $needs, $summary, 30, false)
    };
    ($name:ident, $group:literal, $needs:expr, $summary:literal, $timeout_s:literal, $faults:literal) => {
        $crate::conformance::Case {
            name: stringify!($name),
            group: $group,
            summary: $summary,
            needs: $needs,
            needs_faults: $faults,
            timeout: std::time::Duration::from_secs($timeout_s),
            run: |ctx| Box::pin($name(ctx)),
        }
    };
}
pub(crate) use case;

/// gRPC interop's request payload sizes for streaming cases.
pub(crate) const INTEROP_REQUEST_SIZES: [usize; 4] = [27182, 8, 1828, 45904];
/// gRPC interop's response payload sizes for streaming cases.
pub(crate) const INTEROP_RESPONSE_SIZES: [u32; 4] = [31415, 9, 2653, 58979];

/// How long a case waits for the server to observe something.
pub(crate) const OBSERVE_WITHIN: Duration = Duration::from_secs(5);

/// Default call options.
pub(crate) fn opts() -> CallOptions {
    CallOptions::default()
}

/// Reads every remaining response, then the final status.
pub(crate) async fn drain<R: CallReceiver>(r: &mut R) -> (Vec<EchoResponse>, Result<(), Status>) {
    let mut got = Vec::new();
    loop {
        match r.recv().await {
            Ok(Some(m)) => got.push(m),
            Ok(None) => return (got, Ok(())),
            Err(s) => return (got, Err(s)),
        }
    }
}

/// Deterministic, non-pattern bytes (xorshift) so an echo is checked against data the server
/// cannot have generated itself.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The entries of `md` whose key starts with `prefix`, as (key, bytes) pairs.
pub(crate) fn entries_with_prefix(md: &Metadata, prefix: &str) -> Vec<(String, Vec<u8>)> {
    md.iter()
        .filter(|e| e.key().starts_with(prefix))
        .map(|e| (e.key().to_owned(), e.value().as_bytes().to_vec()))
        .collect()
}

/// Fails unless `result` is an error with `code`.
pub(crate) fn expect_code<T>(
    what: &str,
    result: Result<T, Status>,
    code: wirebench_core::Code,
) -> Result<Status, Failure> {
    match result {
        Ok(_) => Err(Failure(format!("{what}: succeeded, expected {code}"))),
        Err(s) if s.code() == code => Ok(s),
        Err(s) => Err(Failure(format!("{what}: got {s}, expected {code}"))),
    }
}
