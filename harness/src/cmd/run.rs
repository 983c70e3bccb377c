//! `wirebench run`: the product's main job. Runs a suite — the floor, conformance, and every
//! load point against every selected transport — saving `results.json` after each step, then
//! renders `report.html` and `summary.md` beside it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use wirebench_core::{Capability, Transport};
use wirebench_reports::results::{Results, RunFailure, Skipped, SuiteRecord};
use wirebench_scenarios::faultplan::PolicyChoice;
use wirebench_scenarios::suite::Suite;
use wirebench_scenarios::threshold::Threshold;
use wirebench_transports::AnyTransport;

use crate::brokers::{Availability, BrokerArgs, availability};
use crate::cmd::args::PlacementArgs;
use crate::exit::{FAILED, HARNESS, INTERRUPTED, bad_input};
use crate::run::events::{EventBus, RunEvent};
use crate::run::executor::{self, Outcome, execute};
use crate::run::plan::{Plan, Selection};
use crate::run::reporters::{self, ResultsSink};
use crate::runner::RunContext;
use crate::{environment, interrupt};

/// Arguments of `wirebench run`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Writes results.json, report.html and summary.md into the output \
    folder and prints their paths. results.json is saved after every step, so an error or \
    Ctrl-C keeps what finished.\n\n\
    Examples:\n  cargo run --release -- run\n  \
    wirebench run --suite ci --transport tcp\n  \
    wirebench run --suite ./my-suite.toml --out /tmp/wb\n  \
    wirebench run --transport tcp --target 127.0.0.1:7000 --target-pid 4242"
)]
pub struct Args {
    /// A built-in suite (quick, ci) or a suite file (see scenarios/suites/README.md).
    #[arg(long, default_value = "quick")]
    pub suite: String,
    /// Transports to run, comma-separated (default: the suite's list, else every transport).
    #[arg(long)]
    pub transport: Option<String>,
    /// Output folder (default: a fresh timestamped folder under target/wirebench/). It must
    /// not already hold a results.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where servers come from and where processes run.
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Skip conformance.
    #[arg(long)]
    pub no_conformance: bool,
    /// Skip the floor.
    #[arg(long)]
    pub no_floor: bool,
    /// Skip the suite's fault plans (`[[fault]]`).
    #[arg(long)]
    pub no_faults: bool,
    /// Run every load point this many times per transport, each with its own server
    /// (overrides the suite's `repeat`; 1 to 50). `compare` judges repeated runs by their
    /// spread between runs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(wirebench_scenarios::suite::MAX_REPEAT)))]
    pub repeat: Option<u32>,
    /// Plain progress lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// An absolute limit every load point's runs must keep, added to the suite's (repeatable):
    /// `p99 < 1ms`, `errors < 0.1%`, `throughput > 4500/s`. A breach exits 1.
    #[arg(long = "threshold", value_name = "LIMIT", value_parser = parse_threshold)]
    pub thresholds: Vec<Threshold>,
    /// Brokers for broker transports (without one, a private broker is started per server).
    #[command(flatten)]
    pub brokers: BrokerArgs,
}

fn default_out() -> Result<PathBuf> {
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("wirebench");
    let stamp = environment::now_rfc3339().replace(':', "-");
    for n in 1..1000 {
        let dir = if n == 1 {
            root.join(&stamp)
        } else {
            root.join(format!("{stamp}-{n}"))
        };
        if !dir.exists() {
            return Ok(dir);
        }
    }
    anyhow::bail!("no free output folder name under {}", root.display())
}

pub(crate) fn prepare_out(out: Option<PathBuf>) -> Result<PathBuf> {
    let dir = match out {
        Some(d) => {
            if d.join("results.json").exists() {
                return Err(bad_input(format!(
                    "{} already holds a results.json; choose another --out (nothing was \
                     overwritten)",
                    d.display()
                )));
            }
            if d.exists() && !d.is_dir() {
                return Err(bad_input(format!("--out {} is not a folder", d.display())));
            }
            d
        }
        None => default_out()?,
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        bad_input(format!(
            "cannot create output folder {}: {e}",
            dir.display()
        ))
    })?;
    Ok(dir)
}

/// Runs `wirebench run`: checks the input, plans, runs the plan with its reporters, and says
/// where the results are.
pub fn run(args: Args) -> Result<ExitCode> {
    let mut suite = Suite::load(&args.suite).map_err(|e| bad_input(e.to_string()))?;
    for p in &mut suite.load {
        p.thresholds.extend(args.thresholds.iter().cloned());
    }
    check_suite(&mut suite)?;
    let (transports, unavailable) = select_transports(&args, &suite)?;
    let dir = prepare_out(args.out.clone())?;
    let interrupted = interrupt::install();
    let plan = Plan::build(
        &suite,
        &transports,
        &Selection {
            no_floor: args.no_floor,
            no_conformance: args.no_conformance,
            no_faults: args.no_faults,
            repeat: args.repeat,
        },
    );
    let results = initial_results(&suite, &transports, &unavailable);
    let sink = Arc::new(ResultsSink::new(results, &dir, plan.points)?);
    let bus = Arc::new(EventBus::new(vec![
        reporters::progress(args.plain),
        sink.clone(),
    ]));
    let ctx = run_context(&args, &suite, &transports, interrupted, &bus);
    bus.emit(RunEvent::Started {
        suite: format!("suite {} ({})", suite.name, suite.source),
        transports: transports.iter().map(|t| t.name().to_owned()).collect(),
        steps: plan.steps.len(),
        eta: plan.eta(),
        out: Some(dir.clone()),
    })?;
    let outcome = execute(&plan, &ctx, &args.brokers, &bus)?;
    println!("results: {}", sink.path().display());
    if let Some(r) = sink.rendered() {
        println!("report:  {}", r.html.display());
        println!("summary: {}", r.summary.display());
        if let Some(junit) = &r.junit {
            println!("junit:   {}", junit.display());
        }
    }
    Ok(exit_code(&outcome, sink.errors(), &sink.breaches()))
}

/// `--threshold`'s parser.
pub fn parse_threshold(s: &str) -> Result<Threshold, String> {
    Threshold::parse(s).map_err(|e| e.why)
}

/// A transport that cannot run here: skipped (with the install hint), or under CI a failure.
struct Unavailable {
    transport: AnyTransport,
    why: String,
    failed: bool,
}

/// The transports to run, and those whose broker is missing.
fn select_transports(args: &Args, suite: &Suite) -> Result<(Vec<AnyTransport>, Vec<Unavailable>)> {
    let list = match (&args.transport, &suite.transports) {
        (Some(l), _) => Some(l.clone()),
        (None, Some(v)) => Some(v.join(",")),
        (None, None) => None,
    };
    let transports = super::parse_transports(list.as_deref())?;
    if transports.is_empty() {
        return Err(bad_input("no transport selected"));
    }
    args.brokers.validate()?;
    let mut unavailable = Vec::new();
    let transports: Vec<AnyTransport> = transports
        .into_iter()
        .filter(|t| match availability(t, &args.brokers) {
            Availability::Ready => true,
            Availability::Skipped(why) => {
                eprintln!("skipped {why}");
                unavailable.push(Unavailable {
                    transport: *t,
                    why,
                    failed: false,
                });
                false
            }
            Availability::Missing(why) => {
                eprintln!("FAIL {why}");
                unavailable.push(Unavailable {
                    transport: *t,
                    why,
                    failed: true,
                });
                false
            }
        })
        .collect();
    if args.placement.target.is_some() && transports.len() != 1 {
        return Err(bad_input(
            "--target drives one server: pick its transport with --transport",
        ));
    }
    if args.placement.target.is_some()
        && let Some(t) = transports
            .iter()
            .find(|t| t.capabilities().gap(Capability::OutOfProcess).is_some())
    {
        return Err(bad_input(format!(
            "{} cannot be reached in another process, so --target does not apply",
            t.name()
        )));
    }
    Ok((transports, unavailable))
}

/// What is wrong with a suite before anything runs: a bad policy table is bad input, not an
/// error halfway through; options for a transport this build lacks are worth a warning.
fn check_suite(suite: &mut Suite) -> Result<()> {
    // Every transport name the file writes must exist; written in any case, it is stored
    // in the registry's spelling so the plan matches it.
    for n in &suite.transport_names {
        wirebench_transports::registry::transport(&n.name)
            .map_err(|e| bad_input(format!("{}: {e}", n.at)))?;
    }
    let canonical = |list: &mut Option<Vec<String>>| {
        for name in list.iter_mut().flatten() {
            if let Ok(t) = wirebench_transports::registry::transport(name) {
                *name = t.name().to_owned();
            }
        }
    };
    canonical(&mut suite.transports);
    for p in &mut suite.load {
        canonical(&mut p.transports);
    }
    for f in &mut suite.faults {
        canonical(&mut f.transports);
    }
    for fp in &suite.faults {
        if let PolicyChoice::With { config, .. } = &fp.policy {
            crate::faultplan::policy_layer(config).map_err(|e| {
                bad_input(format!("{}: fault plan {:?}: {e}", suite.source, fp.name))
            })?;
        }
    }
    for name in suite.options.keys() {
        if AnyTransport::by_name(name).is_none() {
            eprintln!(
                "warning: {}: options for transport {name:?}, which this build does not have",
                suite.source
            );
        }
    }
    Ok(())
}

/// The results as they stand before the first step: the run's identity, and the transports
/// that cannot run here.
fn initial_results(
    suite: &Suite,
    transports: &[AnyTransport],
    unavailable: &[Unavailable],
) -> Results {
    let mut results = Results::new(
        format!("wirebench {}", env!("CARGO_PKG_VERSION")),
        environment::now_rfc3339(),
        environment::collect(),
        SuiteRecord {
            name: suite.name.clone(),
            description: suite.description.clone(),
            source: suite.source.clone(),
            toml: suite.text.clone(),
        },
    );
    results.transports = transports.iter().map(|t| t.name().to_owned()).collect();
    for u in unavailable {
        let name = u.transport.name().to_owned();
        if u.failed {
            results.errors.push(RunFailure {
                transport: name,
                point: "broker".into(),
                error: u.why.clone(),
            });
        } else {
            results.skipped.push(Skipped {
                transport: name,
                point: "all".into(),
                reason: u.why.clone(),
            });
        }
    }
    results
}

/// How the run's load points and fault plans run.
fn run_context(
    args: &Args,
    suite: &Suite,
    transports: &[AnyTransport],
    interrupted: Arc<AtomicBool>,
    bus: &Arc<EventBus>,
) -> RunContext {
    let per_transport =
        |side: fn(&wirebench_scenarios::suite::TransportOptions) -> &BTreeMap<String, String>| {
            suite
                .options
                .iter()
                .map(|(k, v)| (k.clone(), side(v).clone()))
                .collect::<BTreeMap<_, _>>()
        };
    RunContext {
        pin: args.placement.pin,
        validity: suite.validity,
        interrupted,
        ready_timeout: args.placement.ready_timeout,
        target: args.placement.target.clone(),
        target_pid: args.placement.target_pid,
        server_cmd: args.placement.server_cmd.clone(),
        server_threads: args.placement.server_threads,
        client_options: per_transport(|o| &o.client),
        server_options: per_transport(|o| &o.server),
        server_listen: transports
            .iter()
            .filter_map(|t| {
                args.brokers
                    .url_for(t)
                    .map(|u| (t.name().to_owned(), u.to_owned()))
            })
            .collect(),
        tls: Default::default(),
        live: Some(executor::live(bus)),
        start_at: None,
    }
}

/// The documented exit codes: 130 interrupted, 3 a step could not run, 1 a conformance case
/// failed or a threshold was breached, else 0.
fn exit_code(outcome: &Outcome, errors: usize, breaches: &[String]) -> ExitCode {
    if outcome.interrupted {
        ExitCode::from(INTERRUPTED)
    } else if errors > 0 {
        eprintln!("error: {errors} step(s) failed to run (see the report's \"Not run\" section)");
        ExitCode::from(HARNESS)
    } else if outcome.conformance_failures > 0 || !breaches.is_empty() {
        if outcome.conformance_failures > 0 {
            eprintln!(
                "{} conformance case(s) failed",
                outcome.conformance_failures
            );
        }
        for b in breaches {
            eprintln!("threshold breached: {b}");
        }
        ExitCode::from(FAILED)
    } else {
        ExitCode::SUCCESS
    }
}
