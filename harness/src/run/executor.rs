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
    let mut ex = Executor {
        ctx,
        brokers,
        conformance_rt: None,
        conformance_failures: 0,
        p50s: vec![Vec::new(); plan.points],
    };
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
        let (result, stop) = ex.step(&planned.step)?;
        bus.emit(RunEvent::StepFinished {
            index,
            label: planned.label.clone(),
            result,
        })?;
        if let Some(e) = stop {
            bus.emit(RunEvent::Finished {
                complete: false,
                interrupted: false,
            })?;
            return Err(e);
        }
        done += 1;
        if let Some(note) = ex.repeats_note(&planned.step) {
            bus.emit(RunEvent::Note(note))?;
        }
    }
    let interrupted = ctx.interrupted.load(Ordering::SeqCst);
    let outcome = Outcome {
        complete: done == plan.steps.len() && !interrupted,
        interrupted,
        conformance_failures: ex.conformance_failures,
    };
    bus.emit(RunEvent::Finished {
        complete: outcome.complete,
        interrupted,
    })?;
    Ok(outcome)
}

/// What the executor keeps between steps.
struct Executor<'a> {
    ctx: &'a RunContext,
    brokers: &'a BrokerArgs,
    /// Made for the first conformance step, kept for the others.
    conformance_rt: Option<tokio::runtime::Runtime>,
    conformance_failures: usize,
    /// Each point's p50 over its repeats, for a note when the last one is done.
    p50s: Vec<Vec<f64>>,
}

impl Executor<'_> {
    /// Runs one step. The error is the run's own (no runtime); the second value, an error
    /// that must stop the whole run once the step's result is recorded.
    fn step(&mut self, step: &Step) -> Result<(StepResult, Option<anyhow::Error>)> {
        let result = match step {
            Step::Floor(spec) => floor(spec, self.ctx.pin),
            Step::Conformance { transport, cases } => self.conformance(*transport, cases)?,
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
                thresholds,
                step,
            } => match run_point(*transport, spec, self.ctx) {
                Ok(mut record) => {
                    record.gate = gate.clone();
                    record.step = step.as_ref().map(crate::cmd::load::step_info);
                    record.thresholds = crate::thresholds::check(thresholds, &record.summary);
                    self.p50s[*point].push(record.summary.latency.p50_ns as f64 / 1e3);
                    StepResult::Load {
                        point: *point,
                        record: Box::new(record),
                    }
                }
                Err(e) => {
                    let point = load_point(&spec.name, *repeat, *repeats);
                    let failure = StepResult::Failed(failure(*transport, point, &e));
                    // Bad input about the whole run (an unreachable --target) stops it;
                    // anything else is recorded and the run goes on.
                    if self.ctx.target.is_some() && crate::exit::is_bad_input(&e) {
                        return Ok((failure, Some(e)));
                    }
                    failure
                }
            },
            Step::Capacity { transport, point } => {
                let searched =
                    crate::capacity::search_transport(point, *transport, self.ctx, |_, _| Ok(()));
                match searched.failure {
                    // No step ran: a failure like any step's.
                    Some(f) if searched.runs.is_empty() => StepResult::Failed(f),
                    // What ran is kept; the failure is in the record's verdict.
                    _ => StepResult::Capacity {
                        record: Box::new(searched.record),
                        runs: searched.runs,
                    },
                }
            }
            Step::Fault {
                transport,
                plan,
                policy,
            } => match run_plan(*transport, plan, policy.as_ref(), self.ctx) {
                Ok(PlanOutcome::Ran(r)) => StepResult::Fault(r),
                Ok(PlanOutcome::Skipped(reason)) => StepResult::Skipped(Skipped {
                    transport: transport.name().into(),
                    point: format!(
                        "fault {}{}",
                        plan.name,
                        if policy.is_some() {
                            " (with policy)"
                        } else {
                            ""
                        }
                    ),
                    reason,
                }),
                Err(e) => {
                    StepResult::Failed(failure(*transport, format!("fault {}", plan.name), &e))
                }
            },
        };
        Ok((result, None))
    }

    fn conformance(
        &mut self,
        transport: AnyTransport,
        cases: &Option<Vec<String>>,
    ) -> Result<StepResult> {
        let rt = match &mut self.conformance_rt {
            Some(rt) => rt,
            None => self.conformance_rt.insert(
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("starting the conformance runtime")?,
            ),
        };
        let reports = rt.block_on(run_all(
            std::slice::from_ref(&transport),
            cases.as_deref(),
            self.brokers,
            conformance_env(),
            |_| {},
        ));
        self.conformance_failures += reports.iter().filter(|r| r.outcome.is_fail()).count();
        Ok(StepResult::Conformance {
            transport: transport.name().into(),
            outcomes: reports.iter().map(to_outcome).collect(),
        })
    }

    /// After the last repeat of a repeated point: its p50 in each repeat.
    fn repeats_note(&self, step: &Step) -> Option<String> {
        let Step::Load {
            transport,
            spec,
            point,
            repeat,
            repeats,
            ..
        } = step
        else {
            return None;
        };
        let p50s = &self.p50s[*point];
        (repeat == repeats && p50s.len() > 1).then(|| {
            let list: Vec<String> = p50s.iter().map(|p| format!("{p:.1}")).collect();
            format!(
                "{} {}: p50 over {} repeats: {} µs",
                transport.name(),
                spec.name,
                list.len(),
                list.join(", ")
            )
        })
    }
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
