//! Every conformance case against every transport, each a separate test named
//! `<transport>::<case>` (so `cargo test -- tcp::unary_large` runs one). Cases a transport
//! does not support are listed as ignored.

use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use wirebench::proxy::HarnessFaults;
use wirebench_scenarios::conformance::{self, Env, Outcome};
use wirebench_transports::Transport;
use wirebench_transports::registry::AnyTransport;

fn main() {
    let args = Arguments::from_args();
    conformance::install_panic_counter();
    let env = Arc::new(Env {
        faults: Some(HarnessFaults::shared()),
        ..Env::default()
    });
    let mut trials = Vec::new();
    for transport in AnyTransport::all() {
        for case in conformance::cases() {
            let name = format!("{}::{}", transport.name(), case.name);
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
    libtest_mimic::run(&args, trials).exit();
}
