//! Every conformance case against every transport, each a separate test named
//! `<transport>::<case>` (so `cargo test -- tcp::unary_large` runs one), then the whole suite
//! again over mutual TLS for the transports that support it, named `mtls/<transport>::<case>`.
//! Cases a transport does not support are listed as ignored.

use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
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
    let mut trials = Vec::new();
    for (prefix, env) in [("", Arc::new(plain)), ("mtls/", Arc::new(mtls))] {
        for transport in AnyTransport::all() {
            if !prefix.is_empty() && !transport.capabilities().supports(Capability::MutualTls) {
                // Not listed at all: every case would be the same "no TLS" unsupported.
                continue;
            }
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
                    .with_ignored_flag(unsupported),
                );
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
