//! One grammar for every size, rate and duration: each command-line flag and each suite key
//! that takes one is fed the same inputs, and must give what `wirebench_core::units` gives —
//! the same value, or an error quoting the same reason. A new flag or key that parses on its
//! own would fail here.

use std::time::Duration;

use clap::Parser;
use wirebench::cli::{Cli, Command};
use wirebench_core::units::{UnitError, parse_duration, parse_rate, parse_size};
use wirebench_scenarios::load::{Length, Mode};
use wirebench_scenarios::suite::Suite;
use wirebench_scenarios::threshold::{Measure, Threshold};

/// The inputs every flag and key gets.
const INPUTS: [&str; 10] = [
    "2KiB", "2KB", "2kb", "2k", "5k", "-5", "0s", "0", "250ms", "1.5s",
];

/// A value of one of the three kinds, as the unit grammar reads it (rates and sizes as f64).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Size,
    Rate,
    Duration,
}

fn expected(kind: Kind, input: &str) -> Result<f64, UnitError> {
    match kind {
        Kind::Size => parse_size(input).map(|n| n as f64),
        Kind::Rate => parse_rate(input),
        Kind::Duration => parse_duration(input).map(|d| d.as_secs_f64()),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Parses `wirebench ARGS` and reads one value back, or the error text.
fn cli(args: &[&str], read: fn(&Command) -> f64) -> Result<f64, String> {
    let mut argv = vec!["wirebench"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv)
        .map(|c| read(&c.command))
        .map_err(|e| e.to_string())
}

fn load(c: &Command) -> &wirebench::cmd::load::Args {
    match c {
        Command::Load(a) => a,
        other => panic!("not load: {other:?}"),
    }
}

fn threshold_limit(c: &Command) -> f64 {
    let t = &load(c).thresholds[0];
    match t.measure {
        Measure::Latency(_) => t.limit / 1e9,
        _ => t.limit,
    }
}

/// Every flag taking a unit: (kind, the arguments before the value, the flag, how to read it).
type Flag = (
    Kind,
    &'static [&'static str],
    &'static str,
    fn(&Command) -> f64,
);

const FLAGS: &[Flag] = &[
    (Kind::Rate, &["load"], "--rate", |c| match load(c).rate {
        Some(wirebench::cmd::load::Level::One(r)) => r,
        _ => -1.0,
    }),
    (Kind::Size, &["load"], "--payload", |c| {
        load(c).payload as f64
    }),
    (Kind::Size, &["load"], "--response-size", |c| {
        load(c).response_size.map_or(-1.0, |n| n as f64)
    }),
    (Kind::Duration, &["load"], "--duration", |c| {
        load(c).duration.map_or(-1.0, secs)
    }),
    (Kind::Duration, &["load"], "--warmup", |c| {
        secs(load(c).warmup)
    }),
    (Kind::Duration, &["load"], "--timeout", |c| {
        load(c).timeout.map_or(-1.0, secs)
    }),
    (Kind::Duration, &["load"], "--server-delay", |c| {
        secs(load(c).server_delay)
    }),
    (Kind::Duration, &["load"], "--max-lag", |c| {
        secs(load(c).max_lag)
    }),
    (
        Kind::Duration,
        &["load", "--stall-for", "1s"],
        "--stall-at",
        |c| load(c).stall_at.map_or(-1.0, secs),
    ),
    (Kind::Duration, &["load"], "--ready-timeout", |c| {
        secs(load(c).placement.ready_timeout)
    }),
    (Kind::Duration, &["floor"], "--duration", |c| match c {
        Command::Floor(a) => secs(a.duration),
        _ => unreachable!(),
    }),
    (Kind::Duration, &["floor"], "--warmup", |c| match c {
        Command::Floor(a) => secs(a.warmup),
        _ => unreachable!(),
    }),
    (Kind::Size, &["floor"], "--payload", |c| match c {
        Command::Floor(a) => a.payload as f64,
        _ => unreachable!(),
    }),
    (
        Kind::Duration,
        &["serve", "--transport", "tcp"],
        "--drain-grace",
        |c| match c {
            Command::Serve(a) => secs(a.drain_grace),
            _ => unreachable!(),
        },
    ),
    (
        Kind::Duration,
        &["proxy", "--upstream", "127.0.0.1:1"],
        "--stats-every",
        |c| match c {
            Command::Proxy(a) => secs(a.stats_every),
            _ => unreachable!(),
        },
    ),
];

#[test]
fn every_flag_reads_units_as_the_grammar_does() {
    for (kind, before, flag, read) in FLAGS {
        for input in INPUTS {
            let mut args: Vec<&str> = before.to_vec();
            args.extend([*flag, input]);
            let got = cli(&args, *read);
            match expected(*kind, input) {
                Ok(v) => assert_eq!(got, Ok(v), "{flag} {input}"),
                Err(e) => {
                    let msg = got.expect_err(&format!("{flag} {input} must be refused"));
                    assert!(
                        msg.contains(&e.reason),
                        "{flag} {input}: {msg} (expected {e})"
                    );
                }
            }
        }
    }
    // The limits of thresholds too: latencies are durations, throughput a rate.
    for input in INPUTS {
        for (kind, expr) in [
            (Kind::Duration, format!("p99 < {input}")),
            (Kind::Rate, format!("throughput > {input}")),
        ] {
            let got = cli(&["load", "--threshold", &expr], threshold_limit);
            match expected(kind, input) {
                Ok(v) => assert_eq!(got, Ok(v), "--threshold {expr}"),
                Err(e) => {
                    let msg = got.expect_err(&expr);
                    assert!(msg.contains(&e.reason), "{expr}: {msg}");
                }
            }
        }
    }
}

/// A suite with `key = "input"` in the table `table`, and how to read the value back.
struct Key {
    kind: Kind,
    /// The suite, with `{v}` where the input goes.
    toml: &'static str,
    read: fn(&Suite) -> f64,
}

fn point(suite: &Suite) -> &wirebench_scenarios::load::LoadSpec {
    &suite.load[0].spec
}

/// A suite whose one load point sets `key` to the input.
macro_rules! point_key {
    ($key:literal) => {
        concat!(
            "name = \"u\"\n[[load]]\nname = \"p\"\n",
            $key,
            " = \"{v}\"\n"
        )
    };
}

/// A suite whose `[table]` sets `key` to the input.
macro_rules! table_key {
    ($table:literal, $key:literal) => {
        concat!("name = \"u\"\n[", $table, "]\n", $key, " = \"{v}\"\n")
    };
}

fn key(kind: Kind, toml: &'static str, read: fn(&Suite) -> f64) -> Key {
    Key { kind, toml, read }
}

fn keys() -> Vec<(&'static str, Key)> {
    vec![
        (
            "rate",
            key(Kind::Rate, point_key!("rate"), |s| match point(s).mode {
                Mode::Open { rate, .. } => rate,
                Mode::Closed { .. } => -1.0,
            }),
        ),
        (
            "payload",
            key(Kind::Size, point_key!("payload"), |s| {
                point(s).payload as f64
            }),
        ),
        (
            "response_size",
            key(Kind::Size, point_key!("response_size"), |s| {
                point(s).response_size.map_or(-1.0, |n| n as f64)
            }),
        ),
        (
            "duration",
            key(Kind::Duration, point_key!("duration"), |s| {
                match point(s).length {
                    Length::Duration(d) => secs(d),
                    Length::Requests(_) => -1.0,
                }
            }),
        ),
        (
            "warmup",
            key(Kind::Duration, point_key!("warmup"), |s| {
                secs(point(s).warmup)
            }),
        ),
        (
            "timeout",
            key(Kind::Duration, point_key!("timeout"), |s| {
                point(s).timeout.map_or(-1.0, secs)
            }),
        ),
        (
            "server_delay",
            key(Kind::Duration, point_key!("server_delay"), |s| {
                secs(point(s).server_delay)
            }),
        ),
        (
            "stall_at",
            key(
                Kind::Duration,
                "name = \"u\"\n[[load]]\nname = \"p\"\nstall_for = \"1s\"\nstall_at = \"{v}\"\n",
                |s| point(s).stall.map_or(-1.0, |st| secs(st.at)),
            ),
        ),
        (
            "floor.duration",
            key(Kind::Duration, table_key!("floor", "duration"), |s| {
                secs(s.floor.duration)
            }),
        ),
        (
            "floor.warmup",
            key(Kind::Duration, table_key!("floor", "warmup"), |s| {
                secs(s.floor.warmup)
            }),
        ),
        (
            "floor.payload",
            key(Kind::Size, table_key!("floor", "payload"), |s| {
                s.floor.payload as f64
            }),
        ),
        (
            "validity.max_lag_p99",
            key(Kind::Duration, table_key!("validity", "max_lag_p99"), |s| {
                secs(s.validity.max_lag_p99)
            }),
        ),
        (
            "thresholds (latency)",
            key(
                Kind::Duration,
                "name = \"u\"\nthresholds = [\"p99 < {v}\"]\n[[load]]\nname = \"p\"\n",
                |s| limit(&s.load[0].thresholds[0]),
            ),
        ),
        (
            "thresholds (throughput)",
            key(
                Kind::Rate,
                "name = \"u\"\nthresholds = [\"throughput > {v}\"]\n[[load]]\nname = \"p\"\n",
                |s| limit(&s.load[0].thresholds[0]),
            ),
        ),
    ]
}

fn limit(t: &Threshold) -> f64 {
    match t.measure {
        Measure::Latency(_) => t.limit / 1e9,
        _ => t.limit,
    }
}

#[test]
fn every_suite_key_reads_units_as_the_grammar_does() {
    for (name, key) in keys() {
        for input in INPUTS {
            let got = Suite::parse(&key.toml.replace("{v}", input), "u.toml")
                .map(|s| (key.read)(&s))
                .map_err(|e| e.to_string());
            match expected(key.kind, input) {
                // A measured duration of zero is refused by the load point itself, as
                // `load --duration 0s` is by the same check.
                Ok(v) if name == "duration" && v == 0.0 => {
                    let msg = got.expect_err(input);
                    assert!(msg.contains("duration must be positive"), "{msg}");
                }
                Ok(v) => assert_eq!(got, Ok(v), "{name} = {input:?}"),
                Err(e) => {
                    let msg = got.expect_err(&format!("{name} = {input:?} must be refused"));
                    assert!(
                        msg.contains(&e.reason),
                        "{name} = {input:?}: {msg} (expected {e})"
                    );
                    assert!(msg.starts_with("u.toml:"), "{msg}");
                }
            }
        }
    }
}

#[test]
fn numbers_in_a_suite_are_read_like_their_text() {
    let s = Suite::parse(
        "name = \"u\"\n[[load]]\nname = \"p\"\nrate = 5000\npayload = 2048\n",
        "u.toml",
    )
    .expect("parses");
    assert!(matches!(point(&s).mode, Mode::Open { rate, .. } if rate == 5000.0));
    assert_eq!(point(&s).payload, 2048);
    let e = Suite::parse(
        "name = \"u\"\n[[load]]\nname = \"p\"\nrate = -5\n",
        "u.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("a rate cannot be negative"), "{e}");
}
