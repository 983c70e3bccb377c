//! How the broker protocol's headers ride in NATS headers ([`NatsHeaders`]): the `Wb-*` names
//! as they are, and every metadata entry as one value of a single header name — `Wb-Md` for
//! request and initial metadata, `Wb-Tr` for trailing metadata — written `<key> <value>`.
//!
//! NATS headers are text lines (`Name: value`) whose values the client library trims and which
//! may not hold CR or LF, and a header map keeps the order of one name's values but not the
//! order across names: so one name holds all entries (order kept), and ASCII values are
//! percent-encoded like status messages (`%`, non-printables, spaces at either end), binary
//! values base64.

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use wirebench_brokerrpc::headers::{Headers, MetadataKind, WireError, decode_entry, encode_value};
use wirebench_core::metadata::Metadata;

/// One metadata entry: request metadata, or initial metadata in replies and `headers` frames.
pub const METADATA: &str = "Wb-Md";
/// One trailing metadata entry (unary replies, `status` frames).
pub const TRAILER: &str = "Wb-Tr";

/// A NATS message's headers, as the broker protocol reads and writes them.
#[derive(Clone, Debug, Default)]
pub struct NatsHeaders(pub HeaderMap);

fn metadata_name(kind: MetadataKind) -> &'static str {
    match kind {
        MetadataKind::Initial => METADATA,
        MetadataKind::Trailing => TRAILER,
    }
}

impl Headers for NatsHeaders {
    fn get(&self, name: &'static str) -> Option<&str> {
        // A static name costs no allocation (a `&str` key would be copied per lookup).
        self.0
            .get(HeaderName::from_static(name))
            .map(HeaderValue::as_str)
    }

    fn put(&mut self, name: &'static str, value: String) {
        // Every value written by the protocol is printable ASCII without CR or LF, which is
        // all `HeaderValue` asks.
        self.0.insert(HeaderName::from_static(name), value);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn put_metadata(&mut self, kind: MetadataKind, md: &Metadata) {
        let name = HeaderName::from_static(metadata_name(kind));
        for e in md {
            let mut v =
                String::with_capacity(e.key().len() + 1 + e.value().as_bytes().len() * 4 / 3 + 4);
            v.push_str(e.key());
            v.push(' ');
            encode_value(e.value(), true, &mut v);
            self.0.append(name.clone(), v);
        }
    }

    fn get_metadata(&self, kind: MetadataKind) -> Result<Metadata, WireError> {
        let name = metadata_name(kind);
        let mut md = Metadata::new();
        for v in self.0.get_all(HeaderName::from_static(name)) {
            let v = v.as_str();
            // A value that was empty arrives without its separator (the space was trimmed).
            let (key, enc) = v.split_once(' ').unwrap_or((v, ""));
            decode_entry(&mut md, name, v, key, enc, true)?;
        }
        Ok(md)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wirebench_brokerrpc::headers::{get_directives, get_timeout};
    use wirebench_brokerrpc::testing::{check_garbage_never_panics, check_round_trips};
    use wirebench_core::status::Code;

    use super::*;

    /// Serializes like the client library, then parses like it (trimming values), so the
    /// round trip includes what the wire does to values.
    fn through_wire(h: &NatsHeaders) -> NatsHeaders {
        let mut out = HeaderMap::new();
        for (name, values) in h.0.iter() {
            for v in values {
                let line = format!("{name}: {}", v.as_str());
                assert!(!line.contains(['\r', '\n']), "{line:?}");
                let (n, v) = line.split_once(':').expect("a header line");
                out.append(n, v.trim());
            }
        }
        NatsHeaders(out)
    }

    /// Header lines as a NATS client would hand them over: names without `:`, control
    /// characters or spaces; values trimmed and without CR or LF.
    fn from_lines(pairs: Vec<(String, String)>) -> NatsHeaders {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            let value = value.trim();
            if name.is_empty()
                || name.contains(|c: char| !c.is_ascii_graphic() || c == ':')
                || value.contains(['\r', '\n'])
            {
                continue;
            }
            h.append(name.as_str(), value);
        }
        NatsHeaders(h)
    }

    #[test]
    fn the_protocol_round_trips_through_nats_headers() {
        check_round_trips(through_wire);
        check_garbage_never_panics(from_lines);
    }

    #[test]
    fn documented_examples_decode() {
        let mut h = HeaderMap::new();
        h.append("Wb-Md", "x-initial-blob-bin AAoL//6A");
        h.append("Wb-Md", "x-initial-ascii value 1");
        h.append("Wb-Fail", "10 2 aborted%20");
        h.append("Wb-Timeout", "250000");
        let h = NatsHeaders(h);
        let md = h.get_metadata(MetadataKind::Initial).unwrap();
        assert_eq!(
            md.get("x-initial-blob-bin").unwrap().as_bytes(),
            &[0x00, 0x0a, 0x0b, 0xff, 0xfe, 0x80]
        );
        assert_eq!(md.get_ascii("x-initial-ascii"), Some("value 1"));
        let f = get_directives(&h).unwrap().fail.unwrap();
        assert_eq!(
            (f.code, f.after, f.message.as_str()),
            (Code::Aborted, 2, "aborted ")
        );
        assert_eq!(get_timeout(&h).unwrap(), Some(Duration::from_millis(250)));
    }
}
