//! Every conformance case against every transport, each a separate test named
//! `<transport>::<case>` (so `cargo test -- tcp::unary_large` runs one), then the whole suite
//! again over mutual TLS for the transports that support it, named `mtls/<transport>::<case>`.
//! Cases a transport does not support are listed as ignored.
//!
//! Broker transports start a private broker per case (nats: `nats-server` from PATH or
//! `WIREBENCH_NATS_SERVER`; mqtt: its embedded broker), or attach to `WIREBENCH_NATS_URL` /
//! `WIREBENCH_MQTT_URL` when set. Without a broker program their cases are ignored, with the
//! install hint on stderr — except under CI (`CI` set), where a single failing test
//! `<transport>::broker_available` says what is missing.
//!
//! The `mqtt` cases also run against an external broker, Debian's mosquitto, started by this
//! binary on a free port and stopped at the end: tests `mqtt@mosquitto::<case>` (missing
//! mosquitto: ignored with the hint, or under CI the failing test
//! `mqtt@mosquitto::broker_available`).

use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use wirebench::brokers::{Availability, BrokerArgs, availability};
use wirebench::proxy::HarnessFaults;
use wirebench_core::{Capability, Transport};
use wirebench_scenarios::conformance::{self, Env, Outcome};
use wirebench_tls::{TlsMaterial, TlsMode};
use wirebench_transports::registry::AnyTransport;

fn main() {
    let args = Arguments::from_args();
    conformance::install_panic_counter();
    let material = match TlsMaterial::generate() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("cannot generate TLS material: {e}");
            std::process::exit(101);
        }
    };
    let plain = Env {
        faults: Some(HarnessFaults::shared()),
        tls: Some(material.clone()),
        ..Env::default()
    };
    let mtls = Env {
        faults: Some(HarnessFaults::shared()),
        ..Env::default()
    }
    .with_tls(TlsMode::Mutual, material);
    let env_url = |name: &str| std::env::var(name).ok().filter(|u| !u.is_empty());
    let brokers = BrokerArgs::with_urls(
        ["WIREBENCH_NATS_URL", "WIREBENCH_MQTT_URL"]
            .into_iter()
            .filter_map(env_url),
    );
    let mut trials = Vec::new();
    for transport in AnyTransport::all() {
        let skip = match availability(&transport, &brokers) {
            Availability::Ready => false,
            Availability::Skipped(why) => {
                eprintln!("skipping {} cases: {why}", transport.name());
                true
            }
            Availability::Missing(why) => {
                trials.push(
                    Trial::test(
                        format!("{}::broker_available", transport.name()),
                        move || Err(Failed::from(why)),
                    )
                    .with_kind("broker"),
                );
                continue;
            }
        };
        for (prefix, base) in [("", &plain), ("mtls/", &mtls)] {
            if !prefix.is_empty() && !transport.capabilities().supports(Capability::MutualTls) {
                // Not listed at all: every case would be the same "no TLS" unsupported.
                continue;
            }
            let env = Arc::new(brokers.env_for(&transport, base));
            let label = format!("{prefix}{}", transport.name());
            add_cases(&mut trials, &label, transport, &env, skip);
        }
    }
    #[cfg(feature = "mqtt")]
    let mosquitto = mosquitto_cases(&mut trials, &plain);
    let conclusion = libtest_mimic::run(&args, trials);
    #[cfg(feature = "mqtt")]
    drop(mosquitto);
    conclusion.exit();
}

/// One trial per case, named `<label>::<case>`.
fn add_cases(
    trials: &mut Vec<Trial>,
    label: &str,
    transport: AnyTransport,
    env: &Arc<Env>,
    skip: bool,
) {
    for case in conformance::cases::<AnyTransport>() {
        let name = format!("{label}::{}", case.name);
        let unsupported = conformance::precheck(&case, &transport, env).is_some();
        let env = env.clone();
        trials.push(
            Trial::test(name, move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| Failed::from(format!("runtime: {e}")))?;
                let report = rt.block_on(conformance::run_case(&case, transport, env));
                match report.outcome {
                    Outcome::Pass { .. } => Ok(()),
                    Outcome::Fail { reason } => Err(reason.into()),
                    Outcome::Unsupported { reason } => {
                        Err(format!("unexpectedly unsupported: {reason}").into())
                    }
                }
            })
            .with_kind(case.group)
            .with_ignored_flag(unsupported || skip),
        );
    }
}

/// mqtt against an external broker: mosquitto, started for this run only (kept running, with
/// the runtime that reads its log, while the returned handle lives).
#[cfg(feature = "mqtt")]
fn mosquitto_cases(
    trials: &mut Vec<Trial>,
    plain: &Env,
) -> Option<(
    wirebench_transports::mqtt::mosquitto::Mosquitto,
    tokio::runtime::Runtime,
)> {
    use wirebench::brokers::in_ci;
    use wirebench_transports::mqtt::mosquitto;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("a runtime for mosquitto: {e}"),
    };
    let mosquitto = match rt.block_on(mosquitto::start()) {
        Ok(m) => Some(m),
        Err(e) if e.is_not_installed() && !in_ci() => {
            eprintln!("skipping mqtt@mosquitto cases: {e}");
            None
        }
        Err(e) => {
            let why = format!("mosquitto: {e}");
            trials.push(
                Trial::test("mqtt@mosquitto::broker_available", move || {
                    Err(Failed::from(why))
                })
                .with_kind("broker"),
            );
            None
        }
    };
    if let (Some(m), Some(mqtt)) = (&mosquitto, AnyTransport::by_name("mqtt")) {
        let external = BrokerArgs::with_urls([m.url()]);
        let env = Arc::new(external.env_for(&mqtt, plain));
        add_cases(trials, "mqtt@mosquitto", mqtt, &env, false);
    }
    mosquitto.map(|m| (m, rt))
}
