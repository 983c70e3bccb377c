//! Fuzzes the broker protocol's header decoding (`wirebench-brokerrpc`) with arbitrary headers
//! from the network, in both brokers' layouts: NATS header lines as a NATS client hands them
//! over (`Name: value`, value trimmed, names without `:` or whitespace), and MQTT 5 user
//! properties (any UTF-8 name/value pairs, in order). Every reader runs: metadata (initial and
//! trailing), status, directives, deadline, frame kind, sequence numbers, response fields, the
//! call head and the percent-decoder. Any panic, hang or unbounded allocation is a bug; errors
//! are fine.

#![no_main]

use async_nats::HeaderMap;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wirebench_brokerrpc::headers::{self, Headers, MetadataKind, PropertyList};
use wirebench_core::Method;
use wirebench_nats::wire::NatsHeaders;

fn read_all<H: Headers>(h: &H) {
    let _ = h.get_metadata(MetadataKind::Initial);
    let _ = h.get_metadata(MetadataKind::Trailing);
    let _ = headers::get_status(h);
    let _ = headers::get_directives(h);
    let _ = headers::get_timeout(h);
    let _ = headers::frame_of(Some(h));
    let _ = headers::get_u64(h, headers::ACK);
    let _ = headers::get_u64(h, headers::WINDOW);
    let _ = headers::get_required(h, headers::SEQ);
    let _ = headers::get_response(Some(h), Bytes::new());
    let _ = headers::decode_head(Method::Bidi, Some(h));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // NATS: header lines, as the client library would have accepted them.
    let mut h = HeaderMap::new();
    // MQTT: the same lines as name/value pairs, untrimmed.
    let mut props = Vec::new();
    for line in text.split('\n') {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        props.push((name.to_owned(), value.to_owned()));
        let value = value.trim();
        if name.is_empty() || name.contains(|c: char| !c.is_ascii_graphic()) || value.contains('\r')
        {
            continue;
        }
        h.append(name, value);
    }
    read_all(&NatsHeaders(h));
    read_all(&PropertyList(props));
    let _ = headers::decode_text(&text);
});
