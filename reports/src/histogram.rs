//! Latency histograms as saved in results: HdrHistogram in nanoseconds, serialized in the V2
//! deflate format and base64-encoded, so any saved run can be merged losslessly with another.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use thiserror::Error;

use crate::results::LatencySummary;

/// Highest latency a histogram holds: 60 s (larger values are clamped by `saturating_record`).
pub const MAX_NS: u64 = 60_000_000_000;

/// Why a saved histogram could not be read.
#[derive(Debug, Error)]
pub enum HistogramError {
    /// The text is not base64.
    #[error("histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The bytes are not a V2 (deflate) HdrHistogram.
    #[error("histogram bytes are not an HdrHistogram V2 encoding: {0}")]
    Decode(String),
    /// Serializing failed.
    #[error("histogram could not be serialized: {0}")]
    Encode(String),
}

/// A histogram for nanosecond latencies from 1 ns to 60 s with 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts: this cannot fail.
    Histogram::new_with_bounds(1, MAX_NS, 3)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Serializes a histogram as base64 of its V2 deflate encoding.
pub fn encode(h: &Histogram<u64>) -> Result<String, HistogramError> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
    Ok(STANDARD.encode(buf))
}

/// Reads a histogram saved by [`encode`].
pub fn decode(text: &str) -> Result<Histogram<u64>, HistogramError> {
    let bytes = STANDARD.decode(text.trim())?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| HistogramError::Decode(format!("{e:?}")))?;
    Ok(h)
}

/// The standard percentiles of a histogram (all zero when it is empty).
pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: h.len(),
        min_ns: h.min(),
        mean_ns: h.mean(),
        stdev_ns: h.stdev(),
        p50_ns: h.value_at_quantile(0.5),
        p90_ns: h.value_at_quantile(0.9),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        p9999_ns: h.value_at_quantile(0.9999),
        max_ns: h.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_lossless_and_mergeable() {
        let mut a = latency_histogram();
        let mut b = latency_histogram();
        for v in 1..10_000u64 {
            a.saturating_record(v * 1000);
            b.saturating_record(v * 37);
        }
        b.saturating_record(u64::MAX);
        let a2 = decode(&encode(&a).unwrap()).unwrap();
        let b2 = decode(&encode(&b).unwrap()).unwrap();
        assert_eq!(a, a2);
        assert_eq!(b, b2);
        let mut merged = a2;
        merged.add(&b2).unwrap();
        assert_eq!(merged.len(), a.len() + b.len());
        assert_eq!(merged.max(), b.max());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode("not base64 !!").is_err());
        assert!(decode(&STANDARD.encode(b"hello world, not a histogram")).is_err());
        assert!(decode("").is_err());
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(summarize(&latency_histogram()), LatencySummary::default());
    }
}
