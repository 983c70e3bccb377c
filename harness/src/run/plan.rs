//! The plan of a `wirebench run`: every step it will take, in order, with what each is
//! expected to take — built from a suite and the command line without running anything, so
//! its order, its interleaving of repeats and its ETA are plain data to test.

use std::time::Duration;

use wirebench_core::Transport;
use wirebench_scenarios::capacity::CapacityPoint;
use wirebench_scenarios::faultplan::{FaultPlan, PolicyChoice};
use wirebench_scenarios::load::LoadSpec;
use wirebench_scenarios::steps::Place;
use wirebench_scenarios::suite::{FloorSpec, Suite};
use wirebench_scenarios::threshold::Threshold;
use wirebench_transports::AnyTransport;

/// What a conformance step is expected to take (the cases run in a few seconds).
const CONFORMANCE_ESTIMATE: Duration = Duration::from_secs(4);
/// Starting and stopping a load point's server, on top of the point's own time.
const POINT_OVERHEAD: Duration = Duration::from_millis(300);
/// Starting and stopping a fault plan's server and proxy.
const FAULT_OVERHEAD: Duration = Duration::from_secs(1);

/// One step of a run.
#[derive(Clone, Debug)]
pub enum Step {
    /// The loopback floor.
    Floor(FloorSpec),
    /// Every conformance case against one transport.
    Conformance {
        /// The transport.
        transport: AnyTransport,
        /// Only these cases (`None`: all).
        cases: Option<Vec<String>>,
    },
    /// One repeat of one load point against one transport.
    Load {
        /// The transport.
        transport: AnyTransport,
        /// The point.
        spec: LoadSpec,
        /// Which point of the plan (repeats of one point fold into one record).
        point: usize,
        /// This repeat, from 1.
        repeat: u32,
        /// Of how many.
        repeats: u32,
        /// The metrics whose regression fails `compare`'s gate.
        gate: Option<Vec<String>>,
        /// The absolute limits its runs are held to.
        thresholds: Vec<Threshold>,
        /// Its place in a stepped point's series.
        step: Option<Place>,
    },
    /// A load point the transport cannot run, with why (recorded as skipped, never run).
    Unsupported {
        /// The transport.
        transport: AnyTransport,
        /// The point's name.
        point: String,
        /// Why not.
        reason: String,
    },
    /// One capacity search against one transport (its steps run on one server).
    Capacity {
        /// The transport.
        transport: AnyTransport,
        /// The search.
        point: Box<CapacityPoint>,
    },
    /// One fault plan against one transport, without or with its policy.
    Fault {
        /// The transport.
        transport: AnyTransport,
        /// The plan.
        plan: FaultPlan,
        /// The policy table, when this variant runs with it.
        policy: Option<toml::Table>,
    },
}

/// A step with its label and time estimate.
#[derive(Clone, Debug)]
pub struct PlannedStep {
    /// What it is.
    pub step: Step,
    /// How progress names it (`tcp unary-1 (2/5)`).
    pub label: String,
    /// What it is expected to take.
    pub estimate: Duration,
}

/// What the command line asks of a suite.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Skip the floor.
    pub no_floor: bool,
    /// Skip conformance.
    pub no_conformance: bool,
    /// Skip the fault plans.
    pub no_faults: bool,
    /// Repeats of every load point, overriding the suite's.
    pub repeat: Option<u32>,
}

/// Every step of a run, in the order they run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The steps.
    pub steps: Vec<PlannedStep>,
    /// How many load points (each transport × point) the load steps belong to.
    pub points: usize,
}

impl Plan {
    /// The plan for `suite` against `transports`: the floor, conformance per transport, then
    /// the load points — repeats interleaved over the whole run (round 1 runs every point
    /// once, round 2 again, ...), so each point's repeats sample the host's drift over the run
    /// rather than a few seconds of it — then the fault plans.
    pub fn build(suite: &Suite, transports: &[AnyTransport], sel: &Selection) -> Plan {
        let mut steps = Vec::new();
        if suite.floor.enabled && !sel.no_floor {
            steps.push(PlannedStep {
                label: "floor".into(),
                estimate: suite.floor.duration + suite.floor.warmup,
                step: Step::Floor(suite.floor.clone()),
            });
        }
        if suite.conformance.enabled && !sel.no_conformance {
            for t in transports {
                steps.push(PlannedStep {
                    label: format!("{} conformance", t.name()),
                    estimate: CONFORMANCE_ESTIMATE,
                    step: Step::Conformance {
                        transport: *t,
                        cases: suite.conformance.cases.clone(),
                    },
                });
            }
        }
        let points = load_steps(suite, transports, sel, &mut steps);
        capacity_steps(suite, transports, &mut steps);
        if !sel.no_faults {
            fault_steps(suite, transports, &mut steps);
        }
        Plan { steps, points }
    }

    /// What the whole run is expected to take.
    pub fn eta(&self) -> Duration {
        self.steps.iter().map(|s| s.estimate).sum()
    }

    /// What is left after the first `done` steps.
    pub fn remaining(&self, done: usize) -> Duration {
        self.steps.iter().skip(done).map(|s| s.estimate).sum()
    }
}

/// The load points' steps: the points each transport cannot run, noted (in the suite's
/// order, before the rounds) and never run; then the rounds of repeats. Returns how many
/// points there are.
fn load_steps(
    suite: &Suite,
    transports: &[AnyTransport],
    sel: &Selection,
    steps: &mut Vec<PlannedStep>,
) -> usize {
    let mut points = Vec::new();
    for t in transports {
        for p in &suite.load {
            if !selects(p.transports.as_ref(), t) {
                continue;
            }
            if let Some(unsupported) = unsupported(t, &p.spec.name, &p.spec) {
                steps.push(unsupported);
                continue;
            }
            points.push((*t, p, sel.repeat.unwrap_or(p.repeat)));
        }
    }
    let rounds = points.iter().map(|(_, _, r)| *r).max().unwrap_or(0);
    for round in 1..=rounds {
        for (point, (t, p, repeats)) in points.iter().enumerate() {
            if round > *repeats {
                continue;
            }
            let label = if *repeats > 1 {
                format!("{} {} ({round}/{repeats})", t.name(), p.spec.name)
            } else {
                format!("{} {}", t.name(), p.spec.name)
            };
            steps.push(PlannedStep {
                label,
                estimate: p.spec.estimate() + POINT_OVERHEAD,
                step: Step::Load {
                    transport: *t,
                    spec: p.spec.clone(),
                    point,
                    repeat: round,
                    repeats: *repeats,
                    gate: p.gate.clone(),
                    thresholds: p.thresholds.clone(),
                    step: p.step.clone(),
                },
            });
        }
    }
    points.len()
}

/// Whether a point's transport list (`None`: all selected) names `t`.
fn selects(list: Option<&Vec<String>>, t: &AnyTransport) -> bool {
    list.is_none_or(|l| l.iter().any(|n| n == t.name()))
}

/// The step recording that `t` cannot run the load `spec` of point `name`, if it cannot.
fn unsupported(t: &AnyTransport, name: &str, spec: &LoadSpec) -> Option<PlannedStep> {
    let (cap, reason) = t.capabilities().first_missing(&spec.needs())?;
    Some(PlannedStep {
        label: format!("{} {name}", t.name()),
        estimate: Duration::ZERO,
        step: Step::Unsupported {
            transport: *t,
            point: name.to_owned(),
            reason: format!("{} does not support {}: {reason}", t.name(), cap.name()),
        },
    })
}

/// The capacity searches' steps: each against each of its transports that can run its load.
fn capacity_steps(suite: &Suite, transports: &[AnyTransport], steps: &mut Vec<PlannedStep>) {
    for c in &suite.capacity {
        for t in transports {
            if !selects(c.transports.as_ref(), t) {
                continue;
            }
            if let Some(unsupported) = unsupported(t, &c.name, &c.spec) {
                steps.push(unsupported);
                continue;
            }
            steps.push(PlannedStep {
                label: format!("{} {} (capacity under {})", t.name(), c.name, c.slo_text()),
                estimate: c.estimate(),
                step: Step::Capacity {
                    transport: *t,
                    point: Box::new(c.clone()),
                },
            });
        }
    }
}

/// The fault plans' steps: each plan against each of its transports, without and/or with
/// its policy.
fn fault_steps(suite: &Suite, transports: &[AnyTransport], steps: &mut Vec<PlannedStep>) {
    for fp in &suite.faults {
        for t in transports {
            if !selects(fp.transports.as_ref(), t) {
                continue;
            }
            let variants: Vec<Option<&toml::Table>> = match &fp.policy {
                PolicyChoice::None => vec![None],
                PolicyChoice::With {
                    also_without: true,
                    config,
                } => vec![None, Some(config)],
                PolicyChoice::With { config, .. } => vec![Some(config)],
            };
            for policy in variants {
                steps.push(PlannedStep {
                    label: format!(
                        "{} fault {}{}",
                        t.name(),
                        fp.name,
                        if policy.is_some() { " +policy" } else { "" }
                    ),
                    estimate: fp.load.warmup + fp.duration() + FAULT_OVERHEAD,
                    step: Step::Fault {
                        transport: *t,
                        plan: fp.clone(),
                        policy: policy.cloned(),
                    },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(text: &str) -> Suite {
        Suite::parse(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn transports(names: &[&str]) -> Vec<AnyTransport> {
        names
            .iter()
            .map(|n| AnyTransport::by_name(n).expect("a transport of this build"))
            .collect()
    }

    const TWO_POINTS: &str = r#"
        name = "t"
        [floor]
        duration = "1s"
        warmup = "500ms"
        [[load]]
        name = "a"
        concurrency = 1
        duration = "2s"
        warmup = "1s"
        repeat = 3
        [[load]]
        name = "b"
        concurrency = 1
        duration = "1s"
        warmup = "0s"
    "#;

    #[test]
    fn floor_then_conformance_then_rounds_of_points() {
        let p = Plan::build(
            &suite(TWO_POINTS),
            &transports(&["inproc", "tcp"]),
            &Selection::default(),
        );
        let labels: Vec<&str> = p.steps.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "floor",
                "inproc conformance",
                "tcp conformance",
                "inproc a (1/3)",
                "inproc b",
                "tcp a (1/3)",
                "tcp b",
                "inproc a (2/3)",
                "tcp a (2/3)",
                "inproc a (3/3)",
                "tcp a (3/3)",
            ]
        );
        assert_eq!(p.points, 4);
        // Repeats of one point share its index, so they fold into one record.
        let points_of_tcp_a: Vec<usize> = p
            .steps
            .iter()
            .filter(|s| s.label.starts_with("tcp a"))
            .filter_map(|s| match &s.step {
                Step::Load { point, .. } => Some(*point),
                _ => None,
            })
            .collect();
        assert_eq!(points_of_tcp_a, [2, 2, 2]);
    }

    #[test]
    fn the_eta_adds_every_step() {
        let p = Plan::build(
            &suite(TWO_POINTS),
            &transports(&["tcp"]),
            &Selection::default(),
        );
        // floor 1.5 s + conformance 4 s + a: 3 × (3 s + 0.3 s) + b: 1 × (1 s + 0.3 s).
        let expected = Duration::from_millis(1500 + 4000 + 3 * 3300 + 1300);
        assert_eq!(p.eta(), expected);
        assert_eq!(p.remaining(p.steps.len()), Duration::ZERO);
        assert_eq!(p.remaining(1), expected - Duration::from_millis(1500));
    }

    #[test]
    fn the_command_line_trims_the_plan() {
        let sel = Selection {
            no_floor: true,
            no_conformance: true,
            repeat: Some(1),
            ..Selection::default()
        };
        let p = Plan::build(&suite(TWO_POINTS), &transports(&["tcp"]), &sel);
        let labels: Vec<&str> = p.steps.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["tcp a", "tcp b"]);
    }

    #[test]
    fn points_a_transport_cannot_run_are_noted_not_run() {
        let s = suite(
            r#"
            name = "t"
            [floor]
            enabled = false
            [conformance]
            enabled = false
            [[load]]
            name = "secure"
            tls = "mtls"
            concurrency = 1
            requests = 10
            "#,
        );
        let p = Plan::build(&s, &transports(&["nats", "tcp"]), &Selection::default());
        assert_eq!(p.steps.len(), 2);
        assert!(
            matches!(&p.steps[0].step, Step::Unsupported { point, reason, .. }
                if point == "secure" && reason.contains("nats does not support tls")),
            "{:?}",
            p.steps[0]
        );
        assert!(matches!(p.steps[1].step, Step::Load { .. }));
        assert_eq!(p.points, 1);
    }
}
