//! The RPC protocol wirebench's broker transports (`nats`, `mqtt`) run over a
//! publish/subscribe broker, written once as a sans-IO core: the frames and headers
//! ([`headers`]), the client's table of calls ([`client`]) and the server's table of streams
//! ([`server`]) consume `(call, headers, bytes)` and say what to publish; a broker adapter
//! supplies the subjects or topics, its client library and its broker process. Also what the
//! adapters share around the protocol: per-stream flow control ([`flow`]) and service
//! endpoints ([`endpoint`]). Running a broker program is `wirebench-brokerproc`'s.
//!
//! Depends on `wirebench-core` only (and tokio's synchronisation): no broker client library, no
//! socket. Its tests run a client and a server against an in-memory broker.
//!
//! # The protocol
//!
//! A **service** is a broker and a prefix `P`. It has one subject/topic per method (`Unary`,
//! `ServerStream`, `ClientStream`, `Bidi`; any other name is an unknown method, answered with
//! `UNIMPLEMENTED` (12)), which every server of the service shares so that each message reaches
//! one server (a NATS queue group, an MQTT shared subscription), and one cancel subject/topic
//! every server hears. How these are spelled, and how a message names its call, is the
//! adapter's (see the `nats` and `mqtt` crates' docs).
//!
//! **Unary**: the request goes to the `Unary` subject with the client's reply address `R`; the
//! payload is the request payload. Headers only when needed (a plain call sends none): request
//! metadata, `Wb-Timeout`, the directives. The reply goes to `R`: the response payload; headers
//! only when needed: `Wb-Status` and `Wb-Message` (absent status = `OK`), initial and trailing
//! metadata, `Wb-Recv-Msgs`/`Wb-Recv-Bytes`. A client that gives up on a call (cancelled,
//! deadline passed) names it on the cancel subject; the server running it stops its handler.
//!
//! **Streams**: every stream message carries `Wb-Frame: <kind>`:
//!
//! | kind | on | direction | headers | payload |
//! |---|---|---|---|---|
//! | `open` | the method's subject, reply address `R` | client → service | `Wb-Window`, metadata*, `Wb-Timeout`? | none |
//! | `accept` | `R`, reply address `S` | server → client | `Wb-Window` | none |
//! | `headers` | `R` | server → client | metadata* (initial) | none |
//! | `msg` | `S` / `R` | both | `Wb-Seq`; requests: directives; responses: `Wb-Recv-*` | the message |
//! | `end` | `S` | client → server | `Wb-Seq` = messages sent (half-close) | none |
//! | `status` | `R` | server → client | `Wb-Status`?, `Wb-Message`?, trailing metadata*, `Wb-Seq` = messages sent | none |
//! | `cancel` | `S` | client → server | — | none |
//! | `credit` | `S` / `R` | both | `Wb-Ack` = messages consumed so far | none |
//!
//! A call: `open`; the server answers `accept` (or a `status` alone when it refuses the call);
//! then the client sends `msg`s and one `end`, the server sends an optional `headers`, `msg`s
//! and exactly one `status`, which ends the call. `cancel` ends it from the client side (the
//! server's handler observes it and sends nothing more). `msg` sequence numbers start at 1 in
//! each direction; a gap, or a count in `end`/`status` that differs from what arrived, fails
//! the call with `DATA_LOSS` (15) — a broker may drop messages for a subscriber that falls
//! behind, and this makes that loss visible instead of silent. A `status` without `Wb-Seq` (a
//! server shutting down) is not counted.
//!
//! **Flow control** (brokers have none between two clients): each side announces its receive
//! window in messages (`Wb-Window`, 128 here) and may send message `n` only when
//! `n <= acked + window`, where `acked` is the latest `Wb-Ack` its peer sent; receivers send
//! `credit` every half window consumed.
//!
//! # Headers
//!
//! | header | value |
//! |---|---|
//! | `Wb-Timeout` | the deadline as a budget in microseconds from arrival (like `grpc-timeout`) |
//! | `Wb-Status` | status code, gRPC numbering 0–16 (absent = 0 `OK`) |
//! | `Wb-Message` | status message, UTF-8, percent-encoded |
//! | `Wb-Size` / `Wb-Count` | directives: size of each response / number of responses |
//! | `Wb-Sizes` | directive: explicit response sizes, comma-separated |
//! | `Wb-Interval` / `Wb-Delay` | directives: pause before each streamed response / before answering, µs |
//! | `Wb-Fail` | directive: `<code> <after> <percent-encoded message>` |
//! | `Wb-Report-Deadline` | directive: `1` = report the budget seen in trailer `x-wb-deadline-budget-us` |
//! | `Wb-Recv-Msgs` / `Wb-Recv-Bytes` | response fields (client stream) |
//! | `Wb-Frame`, `Wb-Seq`, `Wb-Ack`, `Wb-Window` | stream frames (above) |
//!
//! **Percent-encoding** (status messages, the `Wb-Fail` message): `%`, every byte outside
//! printable ASCII, and spaces at either end (some clients trim header values) are written
//! `%XX`; anything else is as is. A `%` not followed by two hex digits is malformed.
//! Metadata keys follow gRPC's rules (lower case: they never collide with the `Wb-` names); a
//! key ending in **`-bin`** marks a binary value, written in standard base64 with padding (read
//! with or without). Where metadata entries go is the broker's: each adapter documents its
//! layout. A malformed header fails the call: `INVALID_ARGUMENT` at the server, `INTERNAL` at
//! the client. Example: `Wb-Fail: 10 2 aborted%20after%202`.
//!
//! Semantics of directives and generated payloads:
//! [`Directives`](wirebench_core::message::Directives),
//! [`pattern`](wirebench_core::message::pattern).

pub mod client;
pub mod endpoint;
pub mod flow;
pub mod headers;
pub mod server;

#[cfg(test)]
mod memory;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use client::{
    Client, ClientCalls, ClientLink, Incoming, StreamCancel, StreamReceiver, StreamSender,
};
pub use endpoint::{BadEndpoint, Endpoint, Scheme, Target, check_prefix, gaps};
pub use headers::{Frame, Headers, MetadataKind, WireError};
pub use server::{Inline, ServerLink, Service};
