//! Runs a [`Plan`] step by step and emits what happens as [`RunEvent`]s: the executor does the
//! work (the floor, conformance, load points, fault plans) and knows nothing of how it is
//! shown or saved — that is the reporters'.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use wirebench_core::Transport;
use wirebench_reports::histogram::{encode, summarize};
use wirebench_reports::results::{FloorRecord, RunFailure, Skipped};
use wirebench_scenarios::suite::FloorSpec;
use wirebench_transports::AnyTransport;

use super::events::{EventBus, RunEvent, StepResult};
use super::plan::{Plan, Step};
use crate::affinity::Pin;
use crate::brokers::BrokerArgs;
use crate::cmd::conformance::{conformance_env, run_all, to_outcome};
use crate::faultplan::{PlanOutcome, run_plan};
use crate::floor::{ProbeConfig, measure_floor};
use crate::runner::{RunContext, run_point};

/// How the run ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every planned step ran.
    pub complete: bool,
    /// Ctrl-C stopped it.
    pub interrupted: bool,
    /// Conformance cases that failed.
    pub conformance_failures: usize,
}

/// Runs `plan` with `ctx` (the load points' context, its `live` sink the bus) and `brokers`,
/// emitting to `bus`. An error a reporter returns (the results could not be saved) stops the
/// run; so does bad input about the whole run (an unreachable `--target`), after the results
/// so far are saved.
pub fn execute(
    plan: &Plan,
    ctx: &RunContext,
    brokers: &BrokerArgs,
    bus: &EventBus,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut conformance_rt = None;
    // Each point's p50 over its repeats, for a note when the last one is done.
    let mut p50s: Vec<Vec<f64>> = vec![Vec::new(); plan.points];
    let mut done = 0;
    for (index, planned) in plan.steps.iter().enumerate() {
        if ctx.interrupted.load(Ordering::SeqCst) {
            break;
        }
        bus.emit(RunEvent::StepStarted {
            index,
            label: planned.label.clone(),
            estimate: planned.estimate,
        })?;
        let result = match &planned.step {
            Step::Floor(spec) => floor(spec, ctx.pin),
            Step::Conformance { transport, cases } => {
                let rt = match &mut conformance_rt {
                    Some(rt) => rt,
                    None => conformance_rt.insert(
                        tokio::runtime::Builder::new_multi_thread()
                            .enable_all()
                            .build()
                            .context("starting the conformance runtime")?,
                    ),
                };
                let reports = rt.block_on(run_all(
                    std::slice::from_ref(transport),
                    cases.as_deref(),
                    brokers,
                    conformance_env(),
                    |_| {},
                ));
                outcome.conformance_failures +=
                    reports.iter().filter(|r| r.outcome.is_fail()).count();
                StepResult::Conformance {
                    transport: transport.name().into(),
                    outcomes: reports.iter().map(to_outcome).collect(),
                }
            }
            Step::Unsupported {
                transport,
                point,
                reason,
            } => StepResult::Skipped(Skipped {
                transport: transport.name().into(),
                point: point.clone(),
                reason: reason.clone(),
            }),
            Step::Load {
                transport,
                spec,
                point,
                repeat,
                repeats,
                gate,
            } => match run_point(*transport, spec, ctx) {
                Ok(mut record) => {
                    record.gate = gate.clone();
                    p50s[*point].push(record.summary.latency.p50_ns as f64 / 1e3);
                    StepResult::Load {
                        point: *point,
                        record: Box::new(record),
                    }
                }
                Err(e) => {
                    // Bad input about the whole run (an unreachable --target) stops it;
                    // anything else is recorded and the run goes on.
                    let failure =
                        failure(*transport, load_point(&spec.name, *repeat, *repeats), &e);
                    if ctx.target.is_some() && crate::exit::is_bad_input(&e) {
                        bus.emit(RunEvent::StepFinished {
                            index,
                            label: planned.label.clone(),
                            result: StepResult::Failed(failure),
                        })?;
                        bus.emit(RunEvent::Finished {
                            complete: false,
                            interrupted: false,
                        })?;
                        return Err(e);
                    }
                    StepResult::Failed(failure)
                }
            },
            Step::Fault {
                transport,
                plan: fp,
                policy,
            } => match run_plan(*transport, fp, policy.as_ref(), ctx) {
                Ok(PlanOutcome::Ran(r)) => StepResult::Fault(r),
                Ok(PlanOutcome::Skipped(reason)) => StepResult::Skipped(Skipped {
                    transport: transport.name().into(),
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
                }),
                Err(e) => StepResult::Failed(failure(*transport, format!("fault {}", fp.name), &e)),
            },
        };
        bus.emit(RunEvent::StepFinished {
            index,
            label: planned.label.clone(),
            result,
        })?;
        done += 1;
        if let Step::Load {
            transport,
            spec,
            point,
            repeat,
            repeats,
            ..
        } = &planned.step
            && repeat == repeats
            && p50s[*point].len() > 1
        {
            let list: Vec<String> = p50s[*point].iter().map(|p| format!("{p:.1}")).collect();
            bus.emit(RunEvent::Note(format!(
                "{} {}: p50 over {} repeats: {} µs",
                transport.name(),
                spec.name,
                list.len(),
                list.join(", ")
            )))?;
        }
    }
    outcome.interrupted = ctx.interrupted.load(Ordering::SeqCst);
    outcome.complete = done == plan.steps.len() && !outcome.interrupted;
    bus.emit(RunEvent::Finished {
        complete: outcome.complete,
        interrupted: outcome.interrupted,
    })?;
    Ok(outcome)
}

fn load_point(name: &str, repeat: u32, repeats: u32) -> String {
    if repeats > 1 {
        format!("{name} (repeat {repeat})")
    } else {
        name.to_owned()
    }
}

fn failure(transport: AnyTransport, point: String, e: &anyhow::Error) -> RunFailure {
    RunFailure {
        transport: transport.name().into(),
        point,
        error: format!("{e:#}"),
    }
}

fn floor(spec: &FloorSpec, pin: Pin) -> StepResult {
    let cfg = ProbeConfig {
        payload: spec.payload,
        duration: spec.duration,
        warmup: spec.warmup,
        pin,
        in_flight: 1,
    };
    let measured = measure_floor(&cfg).and_then(|p| {
        Ok(FloorRecord {
            payload_bytes: spec.payload as u64,
            duration_s: spec.duration.as_secs_f64(),
            pin: pin.name().into(),
            latency: summarize(&p.histogram),
            histogram: encode(&p.histogram).map_err(|e| anyhow::anyhow!(e))?,
            client_cpus: p.client_cpus.0,
            server_cpus: p.server_cpus.0,
        })
    });
    match measured {
        Ok(r) => StepResult::Floor(Box::new(r)),
        Err(e) => StepResult::Failed(RunFailure {
            transport: "-".into(),
            point: "floor".into(),
            error: format!("{e:#}"),
        }),
    }
}

/// The live sink a run's load points report to: the bus itself.
pub fn live(bus: &Arc<EventBus>) -> Arc<dyn crate::load::live::LiveSink> {
    bus.clone()
}
