//! How the broker protocol's headers ride in MQTT 5 user properties ([`MqttProps`]): the `Wb-*`
//! names as they are, and each metadata entry as a property of its own, named by its key
//! (request and initial metadata) or by `Wb-Tr:<key>` (trailing metadata).
//!
//! MQTT 5 user properties are an ordered list of UTF-8 name/value pairs that brokers forward
//! unchanged and in order (MQTT 5, 3.3.2.3.7), names may repeat, and strings are
//! length-prefixed (no trimming, no line syntax): so ASCII metadata values are written as is
//! and only binary values need an encoding (base64).

use wirebench_brokerrpc::headers::{
    Headers, MetadataKind, RESERVED_PREFIX, WireError, decode_entry, encode_value,
};
use wirebench_core::metadata::Metadata;

/// A trailing metadata entry is a property named `Wb-Tr:<key>`.
pub const TRAILER_PREFIX: &str = "Wb-Tr:";

/// An MQTT message's user properties, as the broker protocol reads and writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MqttProps(pub Vec<(String, String)>);

impl Headers for MqttProps {
    fn get(&self, name: &'static str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn put(&mut self, name: &'static str, value: String) {
        self.0.push((name.to_owned(), value));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn put_metadata(&mut self, kind: MetadataKind, md: &Metadata) {
        for e in md {
            let name = match kind {
                MetadataKind::Initial => e.key().to_owned(),
                MetadataKind::Trailing => format!("{TRAILER_PREFIX}{}", e.key()),
            };
            let mut v = String::new();
            encode_value(e.value(), false, &mut v);
            self.0.push((name, v));
        }
    }

    fn get_metadata(&self, kind: MetadataKind) -> Result<Metadata, WireError> {
        let mut md = Metadata::new();
        for (name, value) in &self.0 {
            let key = match kind {
                // Every property that is not one of the protocol's own names.
                MetadataKind::Initial => {
                    (!name.starts_with(RESERVED_PREFIX)).then_some(name.as_str())
                }
                MetadataKind::Trailing => name.strip_prefix(TRAILER_PREFIX),
            };
            if let Some(key) = key {
                decode_entry(&mut md, name, value, key, value, false)?;
            }
        }
        Ok(md)
    }
}

/// The encoded size of a PUBLISH packet with these parts (an upper bound within a few bytes),
/// to refuse what the broker would refuse before it is sent.
pub fn packet_len(
    topic: &str,
    payload: usize,
    props: &[(String, String)],
    response_topic: Option<&str>,
    correlation: usize,
) -> usize {
    let user: usize = props
        .iter()
        .map(|(n, v)| 1 + 2 + n.len() + 2 + v.len())
        .sum();
    let properties = user
        + response_topic.map_or(0, |t| 1 + 2 + t.len())
        + if correlation > 0 {
            1 + 2 + correlation
        } else {
            0
        };
    // Fixed header (up to 5), topic, packet id, property length (up to 4), payload.
    5 + 2 + topic.len() + 2 + 4 + properties + payload
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wirebench_brokerrpc::headers::{get_directives, get_status, get_timeout};
    use wirebench_brokerrpc::testing::{check_garbage_never_panics, check_round_trips};
    use wirebench_core::status::Code;

    use super::*;

    #[test]
    fn the_protocol_round_trips_through_user_properties() {
        // Brokers forward properties unchanged: the wire is the identity.
        check_round_trips::<MqttProps>(Clone::clone);
        check_garbage_never_panics(MqttProps);
    }

    #[test]
    fn documented_examples_decode() {
        let p = MqttProps(
            [
                ("x-initial-blob-bin", "AAoL//6A"),
                ("x-initial-ascii", "value 1"),
                ("Wb-Tr:x-trailing-ascii", "trailing ~!@#"),
                ("Wb-Fail", "10 2 aborted%20%E2%98%BA"),
                ("Wb-Timeout", "250000"),
                ("Wb-Status", "3"),
                ("Wb-Message", "bad%0Aline"),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
        );
        let md = p.get_metadata(MetadataKind::Initial).unwrap();
        assert_eq!(
            md.get("x-initial-blob-bin").unwrap().as_bytes(),
            &[0x00, 0x0a, 0x0b, 0xff, 0xfe, 0x80]
        );
        assert_eq!(md.get_ascii("x-initial-ascii"), Some("value 1"));
        assert_eq!(md.len(), 2, "reserved names are not metadata");
        let tr = p.get_metadata(MetadataKind::Trailing).unwrap();
        assert_eq!(tr.get_ascii("x-trailing-ascii"), Some("trailing ~!@#"));
        let f = get_directives(&p).unwrap().fail.unwrap();
        assert_eq!(
            (f.code, f.after, f.message.as_str()),
            (Code::Aborted, 2, "aborted ☺")
        );
        assert_eq!(get_timeout(&p).unwrap(), Some(Duration::from_millis(250)));
        let s = get_status(&p).unwrap();
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "bad\nline")
        );
    }

    #[test]
    fn invalid_metadata_names_and_values_are_refused() {
        let one = |n: &str, v: &str| MqttProps(vec![(n.to_owned(), v.to_owned())]);
        let initial = |p: MqttProps| p.get_metadata(MetadataKind::Initial);
        assert!(initial(one("Content-Type", "x")).is_err(), "upper case key");
        assert!(initial(one("x-bin", "not base64!")).is_err());
        assert!(
            initial(one("x", "tab\there")).is_err(),
            "not printable ASCII"
        );
    }

    #[test]
    fn packet_len_bounds_the_encoding() {
        let p = vec![("k".into(), "v".into())];
        // 5 fixed + 2+5 topic + 2 id + 4 props len + (1+2+1+2+1) user + (1+2+3) rt + (1+2+8) cd + 10
        assert_eq!(
            packet_len("a/b/c", 10, &p, Some("r/1"), 8),
            5 + 7 + 2 + 4 + 7 + 6 + 11 + 10
        );
    }
}
