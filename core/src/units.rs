//! Human units, one grammar for the whole project — command-line flags, suite files and policy
//! tables all parse through here: durations (`3s`, `250ms`, `1.5s`), sizes (`64`, `16KiB`,
//! `1MB`) and rates (`5000`, `2.5k`).

use std::time::Duration;

use thiserror::Error;

/// A value that is not a duration, size or rate; the message quotes it and says what was
/// expected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{input:?}: {reason}")]
pub struct UnitError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(input: &str, reason: impl Into<String>) -> UnitError {
    UnitError {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

/// Parses `3s`, `250ms`, `1.5s`, `2m`, `10us`, `500ns`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| err(s, "missing unit (ns, us, ms, s, m, h)"))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| err(s, format!("{num:?} is not a number")))?;
    let secs = match unit.trim() {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(err(
                s,
                format!("unknown unit {unit:?} (ns, us, ms, s, m, h)"),
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(err(s, "must be a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration in the largest unit that keeps it exact (`"200ms"`, `"1500us"`).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0s".to_owned()
    } else if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// Parses a byte size: `64`, `64B`, `16KiB`, `1MiB`, `2KB` (1000), `1MB` (1000²).
pub fn parse_size(s: &str) -> Result<usize, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err(s, "expected a byte size such as 64, 16KiB or 1MiB"));
    }
    let n: usize = num
        .parse()
        .map_err(|_| err(s, format!("{num:?} is not a whole number of bytes")))?;
    let mult: usize = match unit.trim() {
        "" | "B" | "b" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        other => {
            return Err(err(
                s,
                format!("unknown size unit {other:?} (B, KiB, MiB, KB, MB)"),
            ));
        }
    };
    n.checked_mul(mult).ok_or_else(|| err(s, "size too large"))
}

/// Parses a rate in requests per second: `5000`, `2.5k`, `1M`. Must be positive and finite.
pub fn parse_rate(s: &str) -> Result<f64, UnitError> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1e3),
        Some(b'M') => (&t[..t.len() - 1], 1e6),
        _ => (t, 1.0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| err(s, "is not a rate (requests per second, e.g. 5000 or 2.5k)"))?;
    let r = n * mult;
    if !r.is_finite() || r <= 0.0 {
        return Err(err(
            s,
            "a rate must be a positive number of requests per second",
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert!(parse_duration("3").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
        for d in [
            Duration::ZERO,
            Duration::from_millis(200),
            Duration::from_micros(1500),
            Duration::from_nanos(7),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("64B"), Ok(64));
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("3 furlongs").is_err());
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("5000"), Ok(5000.0));
        assert_eq!(parse_rate("2.5k"), Ok(2500.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-5").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
