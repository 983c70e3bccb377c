//! MQTT 5 user properties carry the broker protocol's headers as a
//! [`PropertyList`](wirebench_brokerrpc::headers::PropertyList): brokers forward them unchanged
//! and in order (MQTT 5, 3.3.2.3.7), names may repeat, and strings are length-prefixed (no
//! trimming, no line syntax), so ASCII metadata values are written as is and only binary
//! values need an encoding (base64). This module adds what only MQTT needs: a PUBLISH's size.

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
    use super::*;

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
