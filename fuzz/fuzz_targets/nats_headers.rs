//! Fuzzes the `nats` transport's header decoders with arbitrary header lines from the network,
//! as a NATS client hands them over (`Name: value` lines, value trimmed, names without `:` or
//! whitespace): metadata, status, directives, deadline, frame kind, response fields and the
//! percent-decoder. Any panic, hang or unbounded allocation is a bug; errors are fine.

#![no_main]

use async_nats::HeaderMap;
use libfuzzer_sys::fuzz_target;
use wirebench_nats::wire;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut h = HeaderMap::new();
    for line in text.split('\n') {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        // What the client library would have refused before we see it.
        if name.is_empty() || name.contains(|c: char| !c.is_ascii_graphic()) || value.contains('\r')
        {
            continue;
        }
        h.append(name, value);
    }
    let _ = wire::get_metadata(&h, &wire::METADATA);
    let _ = wire::get_metadata(&h, &wire::TRAILER);
    let _ = wire::get_status(&h);
    let _ = wire::get_directives(&h);
    let _ = wire::get_timeout(&h);
    let _ = wire::frame_of(Some(&h));
    let _ = wire::get_u64(&h, &wire::ACK);
    let _ = wire::get_required(&h, &wire::SEQ, "Wb-Seq");
    let _ = wire::get_response(Some(&h), bytes::Bytes::new());
    let _ = wire::decode_text(&text);
});
