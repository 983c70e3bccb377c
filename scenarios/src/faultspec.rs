//! Fault specifications: the `--fault` syntax of `wirebench proxy` and of suite fault plans
//! (kept here, below the harness, so a suite is validated when it is parsed).
//!
//! A spec is `KIND[:PARAM][,key=value...]`, for example
//!
//! | spec | meaning |
//! |---|---|
//! | `latency:50ms` | add 50 ms to every chunk (TCP) or packet (UDP), both directions |
//! | `latency:20ms,jitter=5ms,dist=normal,dir=down` | 20 ms ± normal(σ=5 ms), server→client only |
//! | `bandwidth:1mbit` | cap each direction at 1 Mbit/s (`kbit`, `mbit`, `gbit`, `kb`, `mb`, `b` per second) |
//! | `slicer:size=1,delay=0ms` | forward in writes of at most 1 byte, each flushed on its own |
//! | `limit:4096` | close the connection after 4096 bytes in the given direction |
//! | `reset:after=2s,p=0.5` | reset (RST) half the connections 2 s after they open |
//! | `blackhole` | accept and read, never forward |
//! | `slow-close:1s` | hold a half-close (FIN) back for 1 s |
//! | `refuse` | refuse new connections (RST at once) |
//! | `loss:5%` / `loss:ge,p=1%,r=30%,bad=50%` | UDP: random loss / bursty Gilbert–Elliott loss |
//! | `duplicate:p=1%` | UDP: send a packet twice |
//! | `reorder:p=5%,delay=5ms` | UDP: hold a packet back so later ones overtake it |
//! | `corrupt:p=1%` | UDP: flip one random bit of the packet |
//!
//! Common keys: `dir=up|down|both` (up = client→server; default both) and `p=` the probability
//! that the fault applies to a unit: a chunk read (TCP data faults), a packet (UDP), or a
//! connection (`reset`, `refuse`, `blackhole`, `limit`, `slow-close`). Probabilities are
//! fractions (`0.05`) or percentages (`5%`) in [0, 1].

use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// Every fault with its parameters, directions and defaults: `wirebench proxy --help` prints
/// it, and the suite README points here.
pub const SYNTAX: &str = "\
FAULTS: KIND[:VALUE][,key=value...]

Keys every fault takes:
  dir=up|down|both   which direction (up = client to server); default both. A delay applies
                     once in each direction it covers: latency:20ms on both directions adds
                     40 ms to a request/response round trip, latency:20ms,dir=down 20 ms.
  p=PROBABILITY      the chance it applies (0.05 or 5%); default 1 (always). Per chunk read
                     (TCP data faults), per packet (UDP), or per connection (reset, refuse,
                     blackhole, limit, slow-close).

TCP and UDP:
  latency:DELAY[,jitter=J][,dist=uniform|normal|pareto]
                     delay each chunk/packet by DELAY (required), plus a random jitter:
                     uniform within +-J (the default dist), normal with sigma J, or pareto
                     (shape 1.5, scale J: a heavy tail).
  bandwidth:RATE     cap each direction it covers at RATE per second: 512kbit, 1mbit, 1gbit,
                     or bytes: 64kb, 1mb, 100b (required).
  blackhole          accept and read, never forward (connections or datagrams vanish).

TCP only:
  slicer[:SIZE][,delay=D]
                     forward in writes of at most SIZE bytes (default 1), D apart (default 0).
  limit:BYTES        close the connection after BYTES in the covered direction (required).
  reset[:AFTER]      reset (RST) the connection AFTER it opened (default at once).
  slow-close:DELAY   hold a half-close (FIN) back for DELAY (required).
  refuse             refuse new connections (RST at once).

UDP only:
  loss:RATE          drop packets at random with probability RATE (5%).
  loss:ge,p=P,r=R[,good=G][,bad=B]
                     bursty Gilbert-Elliott loss: P = good-to-bad transition, R = bad-to-good,
                     loss G in the good state (default 0), B in the bad one (default 100%).
  duplicate          send a packet twice (use p= for how often).
  reorder[:DELAY]    hold a packet back DELAY (default 5ms) so later ones overtake it.
  corrupt            flip one random bit of the packet (use p= for how often).

Sizes, durations and probabilities read as everywhere else: 4KiB, 250ms, 1%.";

/// A spec that could not be understood.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("fault {spec:?}: {reason}")]
pub struct SpecError {
    /// The spec as given.
    pub spec: String,
    /// What was wrong.
    pub reason: String,
}

/// Which way bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Client → server.
    Up,
    /// Server → client.
    Down,
    /// Both.
    Both,
}

impl Dir {
    /// True when this applies to `d` (`Up` or `Down`).
    pub fn covers(self, d: Dir) -> bool {
        self == Dir::Both || self == d
    }
}

/// How a random delay is distributed around its base.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// No jitter.
    None,
    /// Uniform in ±width.
    Uniform(Duration),
    /// Normal with this standard deviation (clamped at zero delay).
    Normal(Duration),
    /// Pareto with this scale (heavy tail), added to the base.
    Pareto(Duration),
}

/// A loss model.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LossModel {
    /// Each packet lost independently with probability `p`.
    Random(f64),
    /// Gilbert–Elliott: a good and a bad state; `p` good→bad, `r` bad→good per packet, loss
    /// probability `good` and `bad` in each state.
    GilbertElliott {
        /// Probability of moving good→bad.
        p: f64,
        /// Probability of moving bad→good.
        r: f64,
        /// Loss probability in the good state.
        good: f64,
        /// Loss probability in the bad state.
        bad: f64,
    },
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FaultKind {
    /// Delay each chunk/packet.
    Latency {
        /// Base delay.
        base: Duration,
        /// Randomness around it.
        jitter: Jitter,
    },
    /// Cap throughput, bytes per second.
    Bandwidth(u64),
    /// Split writes.
    Slicer {
        /// Largest write.
        size: usize,
        /// Pause between writes.
        delay: Duration,
    },
    /// Close after this many bytes (TCP).
    Limit(u64),
    /// Reset the connection this long after it opened (TCP).
    Reset(Duration),
    /// Read and drop everything.
    Blackhole,
    /// Hold a half-close back this long (TCP).
    SlowClose(Duration),
    /// Refuse new connections (TCP).
    Refuse,
    /// Drop packets (UDP).
    Loss(LossModel),
    /// Send packets twice (UDP).
    Duplicate,
    /// Hold packets back by this much so later ones overtake (UDP).
    Reorder(Duration),
    /// Flip one bit (UDP).
    Corrupt,
}

impl FaultKind {
    /// The spec keyword.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Latency { .. } => "latency",
            FaultKind::Bandwidth(_) => "bandwidth",
            FaultKind::Slicer { .. } => "slicer",
            FaultKind::Limit(_) => "limit",
            FaultKind::Reset(_) => "reset",
            FaultKind::Blackhole => "blackhole",
            FaultKind::SlowClose(_) => "slow-close",
            FaultKind::Refuse => "refuse",
            FaultKind::Loss(_) => "loss",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder(_) => "reorder",
            FaultKind::Corrupt => "corrupt",
        }
    }

    /// The faults that mean something on TCP (`udp` false) or on UDP, by keyword, for messages
    /// that tell a user what to use instead.
    pub fn names_for(udp: bool) -> &'static str {
        if udp {
            "latency, bandwidth, blackhole, loss, duplicate, reorder, corrupt"
        } else {
            "latency, bandwidth, blackhole, slicer, limit, reset, slow-close, refuse"
        }
    }

    /// Whether the fault means something for TCP and for UDP.
    pub fn applies_to(&self, udp: bool) -> bool {
        match self {
            FaultKind::Latency { .. } | FaultKind::Bandwidth(_) | FaultKind::Blackhole => true,
            FaultKind::Slicer { .. }
            | FaultKind::Limit(_)
            | FaultKind::Reset(_)
            | FaultKind::SlowClose(_)
            | FaultKind::Refuse => !udp,
            FaultKind::Loss(_)
            | FaultKind::Duplicate
            | FaultKind::Reorder(_)
            | FaultKind::Corrupt => udp,
        }
    }
}

/// One fault: what, which way, how often.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// Which way.
    pub dir: Dir,
    /// Probability per unit (see the module docs).
    pub p: f64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind.name())?;
        match self.kind {
            FaultKind::Latency { base, jitter } => {
                write!(f, ":{base:?}")?;
                match jitter {
                    Jitter::None => {}
                    Jitter::Uniform(j) => write!(f, ",jitter={j:?},dist=uniform")?,
                    Jitter::Normal(j) => write!(f, ",jitter={j:?},dist=normal")?,
                    Jitter::Pareto(j) => write!(f, ",jitter={j:?},dist=pareto")?,
                }
            }
            FaultKind::Bandwidth(b) => write!(f, ":{b}B/s")?,
            FaultKind::Slicer { size, delay } => write!(f, ":size={size},delay={delay:?}")?,
            FaultKind::Limit(n) => write!(f, ":{n}")?,
            FaultKind::Reset(d) => write!(f, ":after={d:?}")?,
            FaultKind::SlowClose(d) | FaultKind::Reorder(d) => write!(f, ":{d:?}")?,
            FaultKind::Loss(LossModel::Random(p)) => write!(f, ":{p}")?,
            FaultKind::Loss(LossModel::GilbertElliott { p, r, good, bad }) => {
                write!(f, ":ge,p={p},r={r},good={good},bad={bad}")?;
            }
            FaultKind::Blackhole
            | FaultKind::Refuse
            | FaultKind::Duplicate
            | FaultKind::Corrupt => {}
        }
        if self.dir != Dir::Both {
            write!(
                f,
                ",dir={}",
                if self.dir == Dir::Up { "up" } else { "down" }
            )?;
        }
        if self.p < 1.0 {
            write!(f, ",p={}", self.p)?;
        }
        Ok(())
    }
}

fn parse_duration(s: &str) -> Result<Duration, SpecError> {
    if s.starts_with('-') {
        return Err(why(format!("{s:?}: durations cannot be negative")));
    }
    crate::units::parse_duration(s).map_err(|e| why(e.to_string()))
}

fn parse_probability(s: &str) -> Result<f64, SpecError> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (s, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| why(format!("{s:?} is not a probability")))?;
    let v = v / scale;
    if !(0.0..=1.0).contains(&v) || v.is_nan() {
        return Err(why(format!("probability {s:?} is outside [0, 1]")));
    }
    Ok(v)
}

fn parse_rate(s: &str) -> Result<u64, SpecError> {
    let lower = s.to_ascii_lowercase();
    let lower = lower.trim_end_matches("/s").trim_end_matches("ps");
    let units: [(&str, f64); 8] = [
        ("gbit", 1e9 / 8.0),
        ("mbit", 1e6 / 8.0),
        ("kbit", 1e3 / 8.0),
        ("bit", 1.0 / 8.0),
        ("gb", 1e9),
        ("mb", 1e6),
        ("kb", 1e3),
        ("b", 1.0),
    ];
    for (unit, mult) in units {
        if let Some(num) = lower.strip_suffix(unit) {
            let v: f64 = num
                .parse()
                .map_err(|_| why(format!("{s:?}: {num:?} is not a number")))?;
            if v <= 0.0 || !v.is_finite() {
                return Err(why(format!("bandwidth {s:?} must be positive")));
            }
            return Ok((v * mult).max(1.0) as u64);
        }
    }
    Err(why(format!(
        "{s:?}: bandwidth needs a unit (kbit, mbit, gbit, kb, mb, b per second)"
    )))
}

/// Parses one fault spec.
pub fn parse(spec: &str) -> Result<Fault, SpecError> {
    parse_inner(spec).map_err(|e| SpecError {
        spec: spec.to_owned(),
        ..e
    })
}

/// What is wrong with a part of the spec (the whole spec is filled in by [`parse`]).
fn why(reason: impl Into<String>) -> SpecError {
    SpecError {
        spec: String::new(),
        reason: reason.into(),
    }
}

fn parse_inner(spec: &str) -> Result<Fault, SpecError> {
    let mut parts = spec.split(',').map(str::trim);
    let head = parts.next().unwrap_or_default();
    let (kind, arg) = match head.split_once(':') {
        Some((k, a)) => (k.trim(), Some(a.trim())),
        None => (head, None),
    };
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut positional = arg.filter(|a| !a.contains('=')).map(str::to_owned);
    if let Some(a) = arg.filter(|a| a.contains('='))
        && let Some((k, v)) = a.split_once('=')
    {
        keys.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    for part in parts {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| why(format!("expected key=value, got {part:?}")))?;
        keys.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut take = |key: &str| -> Option<String> {
        let i = keys.iter().position(|(k, _)| k == key)?;
        Some(keys.remove(i).1)
    };
    let dir = match take("dir").as_deref() {
        None | Some("both") => Dir::Both,
        Some("up") => Dir::Up,
        Some("down") => Dir::Down,
        Some(other) => return Err(why(format!("dir={other:?}: expected up, down or both"))),
    };
    let p = take("p").map(|v| parse_probability(&v)).transpose()?;
    let kind = match kind {
        "latency" => {
            let base = positional
                .take()
                .or_else(|| take("delay"))
                .ok_or_else(|| why("latency needs a delay, e.g. latency:50ms"))?;
            let base = parse_duration(&base)?;
            let jitter = take("jitter").map(|j| parse_duration(&j)).transpose()?;
            let jitter = match (jitter, take("dist").as_deref()) {
                (None, None) => Jitter::None,
                (None, Some(_)) => return Err(why("dist= needs jitter=")),
                (Some(j), None | Some("uniform")) => Jitter::Uniform(j),
                (Some(j), Some("normal")) => Jitter::Normal(j),
                (Some(j), Some("pareto")) => Jitter::Pareto(j),
                (Some(_), Some(d)) => {
                    return Err(why(format!(
                        "dist={d:?}: expected uniform, normal or pareto"
                    )));
                }
            };
            FaultKind::Latency { base, jitter }
        }
        "bandwidth" => {
            let rate = positional
                .take()
                .or_else(|| take("rate"))
                .ok_or_else(|| why("bandwidth needs a rate, e.g. bandwidth:1mbit"))?;
            FaultKind::Bandwidth(parse_rate(&rate)?)
        }
        "slicer" => {
            let size = positional
                .take()
                .or_else(|| take("size"))
                .unwrap_or("1".into());
            let size =
                crate::units::parse_size(&size).map_err(|e| why(format!("slicer size {e}")))?;
            if size == 0 {
                return Err(why("slicer size must be at least 1 byte"));
            }
            let delay = take("delay")
                .map(|d| parse_duration(&d))
                .transpose()?
                .unwrap_or_default();
            FaultKind::Slicer { size, delay }
        }
        "limit" => {
            let n = positional
                .take()
                .or_else(|| take("bytes"))
                .ok_or_else(|| why("limit needs a byte count, e.g. limit:4096"))?;
            FaultKind::Limit(
                crate::units::parse_size(&n).map_err(|e| why(format!("limit {e}")))? as u64,
            )
        }
        "reset" => {
            let after = positional
                .take()
                .or_else(|| take("after"))
                .map(|d| parse_duration(&d))
                .transpose()?
                .unwrap_or_default();
            FaultKind::Reset(after)
        }
        "blackhole" => FaultKind::Blackhole,
        "slow-close" => {
            let d = positional
                .take()
                .or_else(|| take("delay"))
                .ok_or_else(|| why("slow-close needs a delay, e.g. slow-close:1s"))?;
            FaultKind::SlowClose(parse_duration(&d)?)
        }
        "refuse" => FaultKind::Refuse,
        "loss" => {
            let model = match positional.take().as_deref() {
                Some("ge") => {
                    let get = |v: Option<String>, name: &str| -> Result<f64, SpecError> {
                        parse_probability(&v.ok_or(why(format!("loss:ge needs {name}=")))?)
                    };
                    let r = get(take("r"), "r")?;
                    let good = take("good").map(|g| parse_probability(&g)).transpose()?;
                    let bad = take("bad").map(|b| parse_probability(&b)).transpose()?;
                    LossModel::GilbertElliott {
                        p: p.ok_or_else(|| {
                            why("loss:ge needs p= (good→bad transition probability)")
                        })?,
                        r,
                        good: good.unwrap_or(0.0),
                        bad: bad.unwrap_or(1.0),
                    }
                }
                Some(rate) => LossModel::Random(parse_probability(rate)?),
                None => LossModel::Random(p.ok_or_else(|| why("loss needs a rate, e.g. loss:5%"))?),
            };
            FaultKind::Loss(model)
        }
        "duplicate" => FaultKind::Duplicate,
        "reorder" => {
            let d = positional
                .take()
                .or_else(|| take("delay"))
                .unwrap_or("5ms".into());
            FaultKind::Reorder(parse_duration(&d)?)
        }
        "corrupt" => FaultKind::Corrupt,
        "" => return Err(why("empty fault")),
        other => {
            return Err(why(format!(
                "unknown fault {other:?} (known: latency, bandwidth, slicer, limit, reset, \
                 blackhole, slow-close, refuse, loss, duplicate, reorder, corrupt)"
            )));
        }
    };
    if let Some(extra) = positional {
        return Err(why(format!("unexpected argument {extra:?}")));
    }
    if let Some((k, _)) = keys.first() {
        return Err(why(format!("unknown key {k:?} for {}", kind.name())));
    }
    // For loss the probability is the loss model's own parameter, not a gate on top of it.
    let p = if matches!(kind, FaultKind::Loss(_)) {
        1.0
    } else {
        p.unwrap_or(1.0)
    };
    Ok(Fault { kind, dir, p })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let f = parse("latency:50ms").unwrap();
        assert_eq!(
            f.kind,
            FaultKind::Latency {
                base: Duration::from_millis(50),
                jitter: Jitter::None
            }
        );
        assert_eq!((f.dir, f.p), (Dir::Both, 1.0));
        let f = parse("latency:20ms,jitter=5ms,dist=normal,dir=down,p=50%").unwrap();
        assert_eq!(
            f.kind,
            FaultKind::Latency {
                base: Duration::from_millis(20),
                jitter: Jitter::Normal(Duration::from_millis(5))
            }
        );
        assert_eq!((f.dir, f.p), (Dir::Down, 0.5));
        assert_eq!(
            parse("bandwidth:1mbit").unwrap().kind,
            FaultKind::Bandwidth(125_000)
        );
        assert_eq!(
            parse("bandwidth:2MB/s").unwrap().kind,
            FaultKind::Bandwidth(2_000_000)
        );
        assert_eq!(
            parse("slicer:size=1,delay=1ms").unwrap().kind,
            FaultKind::Slicer {
                size: 1,
                delay: Duration::from_millis(1)
            }
        );
        assert_eq!(
            parse("limit:4096,dir=up").unwrap().kind,
            FaultKind::Limit(4096)
        );
        assert_eq!(
            parse("reset:after=2s,p=0.5").unwrap(),
            Fault {
                kind: FaultKind::Reset(Duration::from_secs(2)),
                dir: Dir::Both,
                p: 0.5
            }
        );
        assert_eq!(
            parse("loss:5%").unwrap().kind,
            FaultKind::Loss(LossModel::Random(0.05))
        );
        assert_eq!(
            parse("loss:ge,p=1%,r=30%,bad=50%").unwrap().kind,
            FaultKind::Loss(LossModel::GilbertElliott {
                p: 0.01,
                r: 0.3,
                good: 0.0,
                bad: 0.5
            })
        );
        for s in [
            "blackhole",
            "refuse",
            "duplicate,p=1%",
            "corrupt,p=0.01",
            "reorder:p=5%,delay=5ms",
            "slow-close:1s",
        ] {
            let f = parse(s).unwrap();
            // Display gives back a spec that parses to the same fault.
            assert_eq!(parse(&f.to_string()).unwrap(), f, "{s}");
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, needle) in [
            ("jitterbug:5ms", "unknown fault"),
            ("latency:-5ms", "negative"),
            ("latency", "needs a delay"),
            ("latency:5ms,p=1.5", "outside [0, 1]"),
            ("latency:5ms,p=150%", "outside [0, 1]"),
            ("latency:5ms,dir=sideways", "up, down or both"),
            ("latency:5ms,colour=red", "unknown key"),
            ("latency:5ms,dist=normal", "needs jitter"),
            ("bandwidth:fast", "needs a unit"),
            ("bandwidth:0mbit", "positive"),
            ("slicer:0", "at least 1"),
            ("limit:lots", "expected a byte size"),
            ("loss", "needs a rate"),
            ("loss:ge,p=1%", "needs r="),
            ("latency:5ms,oops", "key=value"),
            ("", "empty"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.to_string().contains(needle), "{spec}: {e}");
        }
    }
}
