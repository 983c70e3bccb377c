//! `PolicyConfig`: what a suite's `[policy]` table says, parsed with serde and checked once
//! when a layer is built (so a bad value fails at load time, not in the middle of a run).
//!
//! Durations are strings in the project's unit syntax (`"250ms"`, `"1.5s"`, `"10us"`), parsed
//! by `wirebench_core::units`, the syntax's one definition. They serialize back in the largest
//! whole unit (`"200ms"`), so a config round-trips exactly.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use wirebench_core::status::Code;
use wirebench_core::transport::TransportError;

/// Every resilience policy; each part is optional and `PolicyConfig::default()` is no policy at
/// all (see [`PolicyConfig::is_none`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Per-attempt timeout, applied as the call's deadline when the caller gave none or a
    /// later one.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Retries with backoff, a budget and idempotency rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// Fail fast while the peer looks down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<BreakerConfig>,
    /// Cap on calls in flight through the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<LimitConfig>,
    /// Re-dial a broken connection with backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<ReconnectConfig>,
}

impl PolicyConfig {
    /// True when no policy is configured: the layer would be a pass-through, so callers may
    /// skip wrapping altogether.
    pub fn is_none(&self) -> bool {
        self == &PolicyConfig::default()
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad =
            |field: &str, why: &str| Err(TransportError::Config(format!("policy.{field}: {why}")));
        if self.timeout == Some(Duration::ZERO) {
            return bad("timeout", "must be greater than zero");
        }
        if let Some(r) = &self.retry {
            if r.max_attempts == 0 {
                return bad("retry.max_attempts", "must be at least 1 (1 = no retries)");
            }
            check_backoff("retry", r.initial_backoff, r.max_backoff, r.multiplier)?;
            if !(r.budget_percent.is_finite() && r.budget_percent >= 0.0) {
                return bad("retry.budget_percent", "must be a non-negative number");
            }
            if !(r.budget_min_per_sec.is_finite() && r.budget_min_per_sec >= 0.0) {
                return bad("retry.budget_min_per_sec", "must be a non-negative number");
            }
            if r.retryable_codes.contains(&CodeName(Code::Ok)) {
                return bad("retry.retryable_codes", "OK is not a failure");
            }
        }
        if let Some(b) = &self.circuit_breaker {
            if b.consecutive_failures.is_none() && b.failure_rate.is_none() {
                return bad(
                    "circuit_breaker",
                    "needs consecutive_failures or failure_rate (or both)",
                );
            }
            if b.consecutive_failures == Some(0) {
                return bad("circuit_breaker.consecutive_failures", "must be at least 1");
            }
            if let Some(fr) = &b.failure_rate {
                if !(fr.threshold > 0.0 && fr.threshold <= 1.0) {
                    return bad(
                        "circuit_breaker.failure_rate.threshold",
                        "must be in (0, 1]",
                    );
                }
                if fr.window.is_zero() {
                    return bad("circuit_breaker.failure_rate.window", "must be > 0");
                }
            }
            if b.open_for.is_zero() {
                return bad("circuit_breaker.open_for", "must be greater than zero");
            }
            if b.half_open_probes == 0 {
                return bad("circuit_breaker.half_open_probes", "must be at least 1");
            }
        }
        if let Some(l) = &self.concurrency_limit
            && l.max_in_flight == 0
        {
            return bad("concurrency_limit.max_in_flight", "must be at least 1");
        }
        if let Some(r) = &self.reconnect {
            check_backoff("reconnect", r.initial_backoff, r.max_backoff, r.multiplier)?;
        }
        Ok(())
    }
}

fn check_backoff(
    part: &str,
    initial: Duration,
    max: Duration,
    multiplier: f64,
) -> Result<(), TransportError> {
    if max < initial {
        return Err(TransportError::Config(format!(
            "policy.{part}.max_backoff ({max:?}) is below initial_backoff ({initial:?})"
        )));
    }
    if !(multiplier.is_finite() && multiplier >= 1.0) {
        return Err(TransportError::Config(format!(
            "policy.{part}.multiplier must be a number >= 1, got {multiplier}"
        )));
    }
    Ok(())
}

/// Retry policy: which failures, how often, how spaced, how many in total.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, the first included (3 = up to 2 retries).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Codes that are retried. Default `["UNAVAILABLE"]`: the call did not reach a handler, or
    /// the connection broke. `DEADLINE_EXCEEDED` is never retried unless listed: the attempt
    /// may have run, and its deadline is usually the caller's whole budget.
    #[serde(default = "default_retryable")]
    pub retryable_codes: Vec<CodeName>,
    /// Ceiling of the first backoff.
    #[serde(default = "default_retry_initial", with = "duration")]
    pub initial_backoff: Duration,
    /// Largest backoff ceiling.
    #[serde(default = "default_retry_max", with = "duration")]
    pub max_backoff: Duration,
    /// Growth of the ceiling per retry.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Retries may add at most this percentage of calls (the budget's deposit per call).
    #[serde(default = "default_budget_percent")]
    pub budget_percent: f64,
    /// Retries allowed per second regardless of the call count (the budget's floor), so a
    /// client with few calls can still retry.
    #[serde(default = "default_budget_min_per_sec")]
    pub budget_min_per_sec: f64,
    /// Retry calls not marked replay-safe too (`CallOptions::replay_safe`). Off by default: a
    /// retried write may apply twice.
    #[serde(default)]
    pub retry_non_idempotent: bool,
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig {
            max_attempts: default_max_attempts(),
            retryable_codes: default_retryable(),
            initial_backoff: default_retry_initial(),
            max_backoff: default_retry_max(),
            multiplier: default_multiplier(),
            budget_percent: default_budget_percent(),
            budget_min_per_sec: default_budget_min_per_sec(),
            retry_non_idempotent: false,
        }
    }
}

fn default_max_attempts() -> u32 {
    3
}
fn default_retryable() -> Vec<CodeName> {
    vec![CodeName(Code::Unavailable)]
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(10)
}
fn default_retry_max() -> Duration {
    Duration::from_millis(500)
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_budget_percent() -> f64 {
    20.0
}
fn default_budget_min_per_sec() -> f64 {
    10.0
}

/// Circuit breaker: when it opens, for how long, how it tests the water again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Open after this many failures in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Open when the failure share within a window crosses a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRate>,
    /// How long the circuit stays open (calls fail fast) before probing.
    #[serde(default = "default_open_for", with = "duration")]
    pub open_for: Duration,
    /// Calls let through while half-open; all must succeed to close the circuit, any failure
    /// re-opens it.
    #[serde(default = "default_probes")]
    pub half_open_probes: u32,
    /// Codes that count as failures. Default `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`:
    /// the peer or the path is sick. Application answers (`INVALID_ARGUMENT`, `NOT_FOUND`,
    /// ...) show the peer is up and count as successes.
    #[serde(default = "default_failure_codes")]
    pub failure_codes: Vec<CodeName>,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: Some(5),
            failure_rate: None,
            open_for: default_open_for(),
            half_open_probes: default_probes(),
            failure_codes: default_failure_codes(),
        }
    }
}

fn default_open_for() -> Duration {
    Duration::from_secs(1)
}
fn default_probes() -> u32 {
    1
}
fn default_failure_codes() -> Vec<CodeName> {
    vec![
        CodeName(Code::Unavailable),
        CodeName(Code::DeadlineExceeded),
        CodeName(Code::Internal),
    ]
}

/// The failure-rate trigger of the breaker, over a tumbling window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    /// Failure share (0 < t <= 1) that opens the circuit.
    pub threshold: f64,
    /// Length of the tumbling window the share is counted over.
    #[serde(default = "default_window", with = "duration")]
    pub window: Duration,
    /// Fewer calls than this in a window never open the circuit (one failure out of one call
    /// is not a rate).
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
}

fn default_window() -> Duration {
    Duration::from_secs(10)
}
fn default_min_calls() -> u32 {
    20
}

/// Concurrency limit: at most `max_in_flight` calls at once; the rest wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Calls in flight at once (a stream counts until its receiver ends or is dropped).
    pub max_in_flight: u32,
    /// Calls allowed to wait for a slot; beyond it calls fail at once with
    /// `RESOURCE_EXHAUSTED`. Absent: the queue is unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
}

/// Reconnect: re-dial with backoff when the connection reports it is broken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// Ceiling of the first wait after a failed dial.
    #[serde(default = "default_reconnect_initial", with = "duration")]
    pub initial_backoff: Duration,
    /// Largest wait between dials.
    #[serde(default = "default_reconnect_max", with = "duration")]
    pub max_backoff: Duration,
    /// Growth of the wait per failed dial.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
}

impl Default for ReconnectConfig {
    fn default() -> ReconnectConfig {
        ReconnectConfig {
            initial_backoff: default_reconnect_initial(),
            max_backoff: default_reconnect_max(),
            multiplier: default_multiplier(),
        }
    }
}

fn default_reconnect_initial() -> Duration {
    Duration::from_millis(20)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(1)
}

/// A status code written by name in a config (`"UNAVAILABLE"`, case-insensitive, or its
/// number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeName(pub Code);

impl Serialize for CodeName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for CodeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CodeName, D::Error> {
        let s = String::deserialize(d)?;
        Code::parse(&s).map(CodeName).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown status code {s:?} (expected a gRPC code name such as UNAVAILABLE)"
            ))
        })
    }
}

/// The set of codes in a list, as a bit mask: a lookup on the call path costs a shift.
pub(crate) fn code_mask(codes: &[CodeName]) -> u32 {
    codes.iter().fold(0, |m, c| m | (1 << c.0.as_u32()))
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&wirebench_core::units::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        wirebench_core::units::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("{e}; expected a duration such as \"250ms\""))
        })
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                wirebench_core::units::parse_duration(&s).map_err(|e| {
                    serde::de::Error::custom(format!("{e}; expected a duration such as \"250ms\""))
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_example_parses_and_round_trips() {
        let text = r#"
            timeout = "200ms"
            retry = { max_attempts = 3, initial_backoff = "10ms", max_backoff = "200ms", budget_percent = 20 }
            circuit_breaker = { consecutive_failures = 5, open_for = "1s", half_open_probes = 2 }
            concurrency_limit = { max_in_flight = 64 }
            reconnect = { initial_backoff = "20ms", max_backoff = "1s" }
        "#;
        let c: PolicyConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.timeout, Some(Duration::from_millis(200)));
        let r = c.retry.as_ref().unwrap();
        assert_eq!(r.max_attempts, 3);
        assert_eq!(r.retryable_codes, vec![CodeName(Code::Unavailable)]);
        assert_eq!(r.max_backoff, Duration::from_millis(200));
        assert!(!r.retry_non_idempotent);
        let b = c.circuit_breaker.as_ref().unwrap();
        assert_eq!(b.half_open_probes, 2);
        assert_eq!(b.failure_codes.len(), 3);
        assert_eq!(c.concurrency_limit.as_ref().unwrap().max_in_flight, 64);
        assert_eq!(
            c.reconnect.as_ref().unwrap().max_backoff,
            Duration::from_secs(1)
        );
        assert!(!c.is_none());

        let again: PolicyConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let json: PolicyConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(json, c);
    }

    #[test]
    fn default_is_none_and_empty_table_is_default() {
        assert!(PolicyConfig::default().is_none());
        let c: PolicyConfig = toml::from_str("").unwrap();
        assert!(c.is_none());
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        assert!(toml::from_str::<PolicyConfig>("retries = 3").is_err());
        assert!(toml::from_str::<PolicyConfig>("timeout = \"3 parsecs\"").is_err());
        assert!(
            toml::from_str::<PolicyConfig>("retry = { retryable_codes = [\"NOPE\"] }").is_err()
        );
        let c: PolicyConfig = toml::from_str("retry = { max_attempts = 0 }").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("retry.max_attempts"), "{e}");
        let c: PolicyConfig =
            toml::from_str("reconnect = { initial_backoff = \"1s\", max_backoff = \"10ms\" }")
                .unwrap();
        assert!(c.validate().is_err());
        let c: PolicyConfig = toml::from_str("circuit_breaker = { open_for = \"1s\" }").unwrap();
        // `consecutive_failures` has no serde default, so the table alone names no trigger.
        assert!(c.validate().is_err());
    }

    #[test]
    fn durations_serialize_in_their_largest_exact_unit() {
        let c: PolicyConfig = toml::from_str("timeout = \"1500us\"").unwrap();
        assert_eq!(c.timeout, Some(Duration::from_micros(1500)));
        assert!(toml::to_string(&c).unwrap().contains("\"1500us\""));
    }
}
