//! Human units, one grammar for the whole project — every command-line flag, suite key,
//! threshold and policy table parses through here, with the same messages:
//!
//! - **durations**: a number and a unit, `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`
//!   (`3s`, `250ms`, `1.5s`); `0` alone is zero. Case does not matter.
//! - **sizes** in bytes: a number and an optional unit, SI or binary as written — `k`/`kB`
//!   = 1000, `KiB` = 1024, `M`/`MB` = 1000², `MiB` = 1024², `G`/`GB`, `GiB`; `B` or nothing =
//!   bytes (`64`, `16KiB`, `2KB` = `2k` = 2000). Case does not matter (`2kb` = `2KB`).
//! - **rates** per second: a number and an optional `k` (1000) or `M` (1000²), optionally
//!   followed by `/s` (`5000`, `2.5k`, `5k/s`).
//!
//! Negative values, NaN and infinities are refused with a message that says so.

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

/// Splits `12.5kB` into its number and its unit (trimmed); a leading `-` stays in the number.
fn split(t: &str) -> (&str, &str) {
    let at = t
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '-' || c == '+'))))
        .map_or(t.len(), |(i, _)| i);
    let (n, u) = t.split_at(at);
    (n.trim(), u.trim())
}

/// Parses a number that must be finite and non-negative; `what` names the kind in messages.
fn number(input: &str, num: &str, what: &str, example: &str) -> Result<f64, UnitError> {
    if num.is_empty() {
        return Err(err(input, format!("expected {what} such as {example}")));
    }
    let n: f64 = num.parse().map_err(|_| {
        err(
            input,
            format!("{num:?} is not a number (expected {what} such as {example})"),
        )
    })?;
    if n.is_sign_negative() {
        return Err(err(input, format!("{what} cannot be negative")));
    }
    if !n.is_finite() {
        return Err(err(input, format!("{what} must be finite")));
    }
    Ok(n)
}

/// Parses a duration: `3s`, `250ms`, `1.5s`, `2m`, `10us`, `500ns`, `1h`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let (num, unit) = split(s.trim());
    let n = number(s, num, "a duration", "250ms or 3s")?;
    let secs = match unit.to_ascii_lowercase().as_str() {
        "" if n == 0.0 => 0.0,
        "" => return Err(err(s, "missing unit (ns, us, ms, s, m, h)")),
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(err(
                s,
                format!("unknown duration unit {unit:?} (ns, us, ms, s, m, h)"),
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| err(s, "duration too large"))
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

/// Parses a byte size: `64`, `64B`, `16KiB`, `1MiB`, `2KB` = `2k` = 2000, `1.5MB`.
pub fn parse_size(s: &str) -> Result<usize, UnitError> {
    let (num, unit) = split(s.trim());
    let n = number(s, num, "a byte size", "64, 16KiB or 1MB")?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(err(
                s,
                format!(
                    "unknown size unit {unit:?} (B; k, kB = 1000; KiB = 1024; M, MB; MiB; G, \
                     GB; GiB)"
                ),
            ));
        }
    };
    let bytes = n * mult;
    if bytes.fract() != 0.0 {
        return Err(err(s, format!("{bytes} is not a whole number of bytes")));
    }
    if bytes > usize::MAX as f64 {
        return Err(err(s, "size too large"));
    }
    Ok(bytes as usize)
}

/// Parses a rate in requests per second: `5000`, `2.5k`, `1M`, `5k/s`. Must be positive.
pub fn parse_rate(s: &str) -> Result<f64, UnitError> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let (num, unit) = split(t);
    let n = number(s, num, "a rate", "5000 or 2.5k")?;
    let mult = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        _ => {
            return Err(err(
                s,
                format!("unknown rate unit {unit:?} (k = 1000, M = 1000000 per second)"),
            ));
        }
    };
    let r = n * mult;
    if r == 0.0 {
        return Err(err(s, "a rate must be positive"));
    }
    Ok(r)
}

/// A rate as people write it, the inverse of [`parse_rate`]: `850/s`, `12.3k/s`, `1.25M/s`
/// (three decimals at most, trailing zeros dropped).
pub fn format_rate(r: f64) -> String {
    let (v, unit) = if r >= 1e6 {
        (r / 1e6, "M")
    } else if r >= 1e3 {
        (r / 1e3, "k")
    } else {
        (r, "")
    };
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("250MS"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 2m "), Ok(Duration::from_secs(120)));
        let e = |s: &str| parse_duration(s).unwrap_err().reason;
        assert!(e("3").contains("missing unit"));
        assert!(e("3 parsecs").contains("unknown duration unit"));
        assert!(e("-1s").contains("cannot be negative"));
        assert!(e("s").contains("expected a duration"));
        assert!(e("99999999999999999999999h").contains("too large"));
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
    fn sizes_parse_si_and_binary_whatever_the_case() {
        for (s, n) in [
            ("64", 64),
            ("64B", 64),
            ("16KiB", 16384),
            ("16kib", 16384),
            ("1MiB", 1 << 20),
            ("2KB", 2000),
            ("2kb", 2000),
            ("2k", 2000),
            ("2K", 2000),
            ("1.5MB", 1_500_000),
            ("1GiB", 1 << 30),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        let e = |s: &str| parse_size(s).unwrap_err().reason;
        assert!(e("-1").contains("cannot be negative"));
        assert!(e("KiB").contains("expected a byte size"));
        assert!(e("3 furlongs").contains("unknown size unit"));
        assert!(e("1.5B").contains("whole number of bytes"));
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("5000"), Ok(5000.0));
        assert_eq!(parse_rate("2.5k"), Ok(2500.0));
        assert_eq!(parse_rate("5k/s"), Ok(5000.0));
        assert_eq!(parse_rate("1M"), Ok(1e6));
        let e = |s: &str| parse_rate(s).unwrap_err().reason;
        assert!(e("0").contains("must be positive"));
        assert!(e("-5").contains("cannot be negative"));
        assert!(e("NaN").contains("expected a rate"));
        assert!(e("1.2.3k").contains("not a number"));
        assert!(e("fast").contains("expected a rate"));
        assert!(e("5x").contains("unknown rate unit"));
    }
}
