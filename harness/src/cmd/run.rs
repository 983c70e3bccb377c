//! `wirebench run`: the product's main job. Runs a suite — the floor, conformance, and every
//! load point against every selected transport — saving `results.json` after each step, then
//! renders `report.html` and `summary.md` beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use wirebench_core::{Capability, Transport};
use wirebench_reports::histogram::{encode, summarize};
use wirebench_reports::results::{
    FloorRecord, Results, RunFailure, RunRecord, Skipped, SuiteRecord,
};
use wirebench_scenarios::faultplan::PolicyChoice;
use wirebench_scenarios::suite::Suite;
use wirebench_scenarios::units::parse_duration;
use wirebench_transports::registry::AnyTransport;

use crate::affinity::Pin;
use crate::brokers::{Availability, BrokerArgs, availability};
use crate::cmd::conformance::{conformance_env, run_all, to_outcome};
use crate::exit::{FAILED, HARNESS, INTERRUPTED, bad_input};
use crate::faultplan::{PlanOutcome, run_plan};
use crate::floor::{ProbeConfig, measure_floor};
use crate::progress::Progress;
use crate::runner::{RunContext, run_point};
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
    /// CPU placement: none (the scheduler decides), same (client and server on CPU 0),
    /// split (client CPU 0, server CPU 1).
    #[arg(long, value_enum, default_value_t = Pin::None)]
    pub pin: Pin,
    /// Drive this already-running server instead of starting one (needs exactly one
    /// transport; conformance still runs in-process).
    #[arg(long)]
    pub target: Option<String>,
    /// With --target: the server's process id, to read its CPU and memory.
    #[arg(long, requires = "target")]
    pub target_pid: Option<u32>,
    /// Start servers with this shell command instead of `wirebench serve` (it must print the
    /// ready line; see `wirebench serve --help`).
    #[arg(long, conflicts_with = "target")]
    pub server_cmd: Option<String>,
    /// How long a started server may take to become ready.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// Server runtime threads (default: one per CPU).
    #[arg(long)]
    pub server_threads: Option<u32>,
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

fn prepare_out(out: Option<PathBuf>) -> Result<PathBuf> {
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

fn select_transports(args: &Args, suite: &Suite) -> Result<Vec<AnyTransport>> {
    let list = match (&args.transport, &suite.transports) {
        (Some(l), _) => Some(l.clone()),
        (None, Some(v)) => Some(v.join(",")),
        (None, None) => None,
    };
    super::parse_transports(list.as_deref())
}

fn save(results: &Results, path: &Path) -> Result<()> {
    results
        .save(path)
        .with_context(|| format!("saving {}", path.display()))
}

/// Runs `wirebench run`.
pub fn run(args: Args) -> Result<ExitCode> {
    let suite = Suite::load(&args.suite).map_err(|e| bad_input(e.to_string()))?;
    let transports = select_transports(&args, &suite)?;
    if transports.is_empty() {
        return Err(bad_input("no transport selected"));
    }
    args.brokers.validate()?;
    // A broker transport whose broker program is missing is skipped with the install hint
    // (recorded in the results), or, under CI, counted as a failure.
    let mut unavailable = Vec::new();
    let transports: Vec<AnyTransport> = transports
        .into_iter()
        .filter(|t| match availability(t, &args.brokers) {
            Availability::Ready => true,
            Availability::Skipped(why) => {
                eprintln!("skipped {why}");
                unavailable.push((*t, why, false));
                false
            }
            Availability::Missing(why) => {
                eprintln!("FAIL {why}");
                unavailable.push((*t, why, true));
                false
            }
        })
        .collect();
    if args.target.is_some() && transports.len() != 1 {
        return Err(bad_input(
            "--target drives one server: pick its transport with --transport",
        ));
    }
    if args.target.is_some()
        && let Some(t) = transports
            .iter()
            .find(|t| t.capabilities().gap(Capability::OutOfProcess).is_some())
    {
        return Err(bad_input(format!(
            "{} cannot be reached in another process, so --target does not apply",
            t.name()
        )));
    }
    // A bad policy table is bad input before anything runs, not an error halfway through.
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
    let dir = prepare_out(args.out.clone())?;
    let results_path = dir.join("results.json");
    let interrupted = interrupt::install();

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
    for (t, why, missing) in &unavailable {
        if *missing {
            results.errors.push(RunFailure {
                transport: t.name().into(),
                point: "broker".into(),
                error: why.clone(),
            });
        } else {
            results.skipped.push(Skipped {
                transport: t.name().into(),
                point: "all".into(),
                reason: why.clone(),
            });
        }
    }
    save(&results, &results_path)?;

    let ctx = RunContext {
        pin: args.pin,
        validity: suite.validity,
        interrupted: interrupted.clone(),
        ready_timeout: args.ready_timeout,
        target: args.target.clone(),
        target_pid: args.target_pid,
        server_cmd: args.server_cmd.clone(),
        server_threads: args.server_threads,
        client_options: suite
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.client.clone()))
            .collect::<BTreeMap<_, _>>(),
        server_options: suite
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.server.clone()))
            .collect::<BTreeMap<_, _>>(),
        server_listen: transports
            .iter()
            .filter_map(|t| {
                args.brokers
                    .url_for(t)
                    .map(|u| (t.name().to_owned(), u.to_owned()))
            })
            .collect(),
        tls: Default::default(),
    };

    // The plan, for progress and its ETA.
    let do_floor = suite.floor.enabled && !args.no_floor;
    let do_conformance = suite.conformance.enabled && !args.no_conformance;
    let conformance_estimate = Duration::from_secs(4);
    let mut steps = usize::from(do_floor);
    let mut total = if do_floor {
        suite.floor.duration + suite.floor.warmup
    } else {
        Duration::ZERO
    };
    let mut plan = Vec::new();
    for t in &transports {
        if do_conformance {
            steps += 1;
            total += conformance_estimate;
        }
        for p in &suite.load {
            if p.transports
                .as_ref()
                .is_some_and(|l| !l.iter().any(|n| n == t.name()))
            {
                continue;
            }
            let repeat = args.repeat.unwrap_or(p.repeat);
            plan.push((*t, p.spec.clone(), repeat, p.gate.clone()));
            steps += repeat as usize;
            total += (p.spec.estimate() + Duration::from_millis(300)) * repeat;
        }
    }
    // Fault plans: each plan against each of its transports, without and/or with a policy.
    let mut fault_plan = Vec::new();
    if !args.no_faults {
        for fp in &suite.faults {
            for t in &transports {
                if fp
                    .transports
                    .as_ref()
                    .is_some_and(|l| !l.iter().any(|n| n == t.name()))
                {
                    continue;
                }
                let variants: Vec<Option<&toml::Table>> = match &fp.policy {
                    PolicyChoice::None => vec![None],
                    PolicyChoice::With {
                        also_without,
                        config,
                    } => {
                        let mut v = Vec::new();
                        if *also_without {
                            v.push(None);
                        }
                        v.push(Some(config));
                        v
                    }
                };
                for policy in variants {
                    steps += 1;
                    total += fp.load.warmup + fp.duration() + Duration::from_secs(1);
                    fault_plan.push((*t, fp, policy));
                }
            }
        }
    }
    eprintln!(
        "wirebench run: suite {} ({}), transports {}, about {} s; output in {}",
        suite.name,
        suite.source,
        results.transports.join(", "),
        total.as_secs(),
        dir.display()
    );
    let mut progress = Progress::new(total, steps, args.plain);
    let mut conformance_failures = 0usize;

    if do_floor && !interrupted.load(Ordering::SeqCst) {
        progress.begin("floor", suite.floor.duration + suite.floor.warmup);
        let cfg = ProbeConfig {
            payload: suite.floor.payload,
            duration: suite.floor.duration,
            warmup: suite.floor.warmup,
            pin: args.pin,
            in_flight: 1,
        };
        match measure_floor(&cfg) {
            Ok(p) => {
                let latency = summarize(&p.histogram);
                progress.end(&format!(
                    "floor: p50 {:.1} µs, p99 {:.1} µs",
                    latency.p50_ns as f64 / 1e3,
                    latency.p99_ns as f64 / 1e3
                ));
                results.floor = Some(FloorRecord {
                    payload_bytes: suite.floor.payload as u64,
                    duration_s: suite.floor.duration.as_secs_f64(),
                    pin: format!("{:?}", args.pin).to_lowercase(),
                    latency,
                    histogram: encode(&p.histogram).map_err(|e| anyhow::anyhow!(e))?,
                    client_cpus: p.client_cpus.0,
                    server_cpus: p.server_cpus.0,
                });
            }
            Err(e) => {
                progress.end(&format!("floor failed: {e:#}"));
                results.errors.push(RunFailure {
                    transport: "-".into(),
                    point: "floor".into(),
                    error: format!("{e:#}"),
                });
            }
        }
        save(&results, &results_path)?;
    }

    if do_conformance {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the conformance runtime")?;
        for t in &transports {
            if interrupted.load(Ordering::SeqCst) {
                break;
            }
            progress.begin(&format!("{} conformance", t.name()), conformance_estimate);
            let reports = rt.block_on(run_all(
                std::slice::from_ref(t),
                suite.conformance.cases.as_deref(),
                &args.brokers,
                conformance_env(),
                |_| {},
            ));
            let outcomes: Vec<_> = reports.iter().map(to_outcome).collect();
            let failed: Vec<_> = reports.iter().filter(|r| r.outcome.is_fail()).collect();
            conformance_failures += failed.len();
            let passed = reports
                .iter()
                .filter(|r| r.outcome.verdict() == "pass")
                .count();
            progress.end(&format!(
                "{} conformance: {passed} pass, {} fail, {} unsupported{}",
                t.name(),
                failed.len(),
                reports.len() - passed - failed.len(),
                failed
                    .iter()
                    .map(|r| format!(
                        "\n    FAIL {}: {}",
                        r.case,
                        r.outcome.detail().unwrap_or("")
                    ))
                    .collect::<String>()
            ));
            results.conformance.extend(outcomes);
            save(&results, &results_path)?;
        }
    }

    // Repeats are interleaved: round 1 runs every point once, round 2 again, and so on, each
    // repeat with its own server. On a shared machine the host's state drifts over tens of
    // seconds; back-to-back repeats all saw one state, so a file's spread understated the
    // noise between files and `compare`'s rank test took that drift for a change. Spread over
    // the whole run, each point's repeats sample it. A point's repeats fold into one record
    // (see `RunRecord::from_repeats`), saved after every repeat so an interrupted run keeps
    // what it measured.
    let mut runnable = vec![true; plan.len()];
    for (k, (t, spec, _, _)) in plan.iter().enumerate() {
        if let Some((cap, reason)) = t.capabilities().first_missing(&spec.needs()) {
            let name = t.name();
            results.skipped.push(Skipped {
                transport: name.into(),
                point: spec.name.clone(),
                reason: format!("{name} does not support {}: {reason}", cap.name()),
            });
            progress.begin(&format!("{name} {}", spec.name), Duration::ZERO);
            progress.end(&format!("{name} {}: unsupported ({reason})", spec.name));
            runnable[k] = false;
        }
    }
    save(&results, &results_path)?;
    let first_slot = results.runs.len();
    let mut done: Vec<Vec<RunRecord>> = vec![Vec::new(); plan.len()];
    let rounds = plan.iter().map(|p| p.2).max().unwrap_or(0);
    'rounds: for i in 0..rounds {
        for (k, (t, spec, repeat, gate)) in plan.iter().enumerate() {
            if interrupted.load(Ordering::SeqCst) {
                break 'rounds;
            }
            if !runnable[k] || i >= *repeat {
                continue;
            }
            let name = t.name();
            let label = if *repeat > 1 {
                format!("{name} {} ({}/{repeat})", spec.name, i + 1)
            } else {
                format!("{name} {}", spec.name)
            };
            progress.begin(&label, spec.estimate() + Duration::from_millis(300));
            match run_point(*t, spec, &ctx) {
                Ok(mut r) => {
                    r.gate = gate.clone();
                    let s = &r.summary;
                    progress.end(&format!(
                        "{label}: {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs{}",
                        s.throughput_per_s,
                        s.latency.p50_ns as f64 / 1e3,
                        s.latency.p99_ns as f64 / 1e3,
                        if r.validity.valid {
                            String::new()
                        } else {
                            format!(" — INVALID: {}", r.validity.reasons.join("; "))
                        }
                    ));
                    done[k].push(r);
                    results.runs.truncate(first_slot);
                    results.runs.extend(
                        done.iter()
                            .filter_map(|d| RunRecord::from_repeats(d.clone())),
                    );
                }
                Err(e) => {
                    // Bad input about the whole run (an unreachable --target) stops it;
                    // anything else is recorded and the run goes on.
                    if args.target.is_some() && crate::exit::is_bad_input(&e) {
                        progress.end(&format!("{label}: {e:#}"));
                        finish(&mut results, &results_path, &dir, false, false)?;
                        return Err(e);
                    }
                    progress.end(&format!("{label}: FAILED: {e:#}"));
                    results.errors.push(RunFailure {
                        transport: name.into(),
                        point: if *repeat > 1 {
                            format!("{} (repeat {})", spec.name, i + 1)
                        } else {
                            spec.name.clone()
                        },
                        error: format!("{e:#}"),
                    });
                }
            }
            save(&results, &results_path)?;
            if i + 1 == *repeat && done[k].len() > 1 {
                let p50s: Vec<String> = done[k]
                    .iter()
                    .map(|r| format!("{:.1}", r.summary.latency.p50_ns as f64 / 1e3))
                    .collect();
                progress.note(&format!(
                    "{name} {}: p50 over {} repeats: {} µs",
                    spec.name,
                    done[k].len(),
                    p50s.join(", ")
                ));
            }
        }
    }
    for (t, fp, policy) in &fault_plan {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let name = t.name();
        let label = format!(
            "{name} fault {}{}",
            fp.name,
            if policy.is_some() { " +policy" } else { "" }
        );
        progress.begin(
            &label,
            fp.load.warmup + fp.duration() + Duration::from_secs(1),
        );
        match run_plan(*t, fp, *policy, &ctx) {
            Ok(PlanOutcome::Ran(r)) => {
                let worst = r
                    .phases
                    .iter()
                    .skip(1)
                    .map(|p| p.error_rate)
                    .fold(0.0, f64::max);
                let rec = r
                    .recovery
                    .iter()
                    .filter_map(|x| x.p99_recovered_ms)
                    .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
                progress.end(&format!(
                    "{label}: {} sent, worst phase error rate {:.1}%, p99 recovered {}{}",
                    r.accounting.sent,
                    worst * 100.0,
                    rec.map_or("—".into(), |ms| format!("after {ms:.0} ms")),
                    if r.validity.valid {
                        String::new()
                    } else {
                        format!(" — INVALID: {}", r.validity.reasons.join("; "))
                    }
                ));
                results.fault_runs.push(*r);
            }
            Ok(PlanOutcome::Skipped(reason)) => {
                progress.end(&format!("{label}: skipped ({reason})"));
                results.skipped.push(Skipped {
                    transport: name.into(),
                    point: format!(
                        "fault {}{}",
                        fp.name,
                        if policy.is_some() {
                            " (with policy)"
                        } else {
                            ""
                        }
                    ),
                    reason,
                });
            }
            Err(e) => {
                progress.end(&format!("{label}: FAILED: {e:#}"));
                results.errors.push(RunFailure {
                    transport: name.into(),
                    point: format!("fault {}", fp.name),
                    error: format!("{e:#}"),
                });
            }
        }
        save(&results, &results_path)?;
    }
    progress.finish();
    let was_interrupted = interrupted.load(Ordering::SeqCst);
    let rendered = finish(
        &mut results,
        &results_path,
        &dir,
        !was_interrupted,
        was_interrupted,
    )?;
    println!("results: {}", results_path.display());
    println!("report:  {}", rendered.html.display());
    println!("summary: {}", rendered.summary.display());
    if let Some(junit) = &rendered.junit {
        println!("junit:   {}", junit.display());
    }
    Ok(if was_interrupted {
        ExitCode::from(INTERRUPTED)
    } else if !results.errors.is_empty() {
        eprintln!(
            "error: {} step(s) failed to run (see the report's \"Not run\" section)",
            results.errors.len()
        );
        ExitCode::from(HARNESS)
    } else if conformance_failures > 0 {
        eprintln!("{conformance_failures} conformance case(s) failed");
        ExitCode::from(FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Marks the results finished (or not), saves them and renders the reports.
fn finish(
    results: &mut Results,
    path: &Path,
    dir: &Path,
    complete: bool,
    interrupted: bool,
) -> Result<wirebench_reports::Rendered> {
    results.finished_at = Some(environment::now_rfc3339());
    results.complete = complete;
    results.interrupted = interrupted;
    save(results, path)?;
    wirebench_reports::render_all(results, dir).context("rendering the reports")
}
