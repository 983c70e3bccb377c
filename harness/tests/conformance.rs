//! Every conformance case against every transport, each a separate test named
//! `<transport>::<case>` (so `cargo test -- tcp::unary_large` runs one), then the whole suite
//! again over mutual TLS for the transports that support it, named `mtls/<transport>::<case>`.
//! Cases a transport does not support are listed as ignored.
//!
//! Broker transports start a private broker per case (nats: `nats-server` from PATH or
//! `WIREBENCH_NATS_SERVER`), or attach to `WIREBENCH_NATS_URL` when set. Without a broker
//! program their cases are ignored, with the install hint on stderr — except under CI (`CI`
//! set), where a single failing test `<transport>::broker_available` says what is missing.

use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use wirebench::brokers::{Availability, BrokerArgs, availability};
use wirebench::proxy::HarnessFaults;
use wirebench_scenarios::conformance::{self, Env, Outcome};
use wirebench_transports::registry::AnyTransport;
use wirebench_transports::tls::{TlsMaterial, TlsMode};
use wirebench_transports::{Capability, Transport};

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
    let brokers = BrokerArgs {
        nats_url: std::env::var("WIREBENCH_NATS_URL")
            .ok()
            .filter(|u| !u.is_empty()),
    };
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
            for case in conformance::cases() {
                let name = format!("{prefix}{}::{}", transport.name(), case.name);
                let unsupported = conformance::precheck(&case, &transport, &env).is_some();
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
    }
    libtest_mimic::run(&args, trials).exit();
}
