//! Several results files as one: `wirebench report a.json b.json` renders them in one report.
//! Runs, cases, fault runs and capacity searches are kept as they are; only names that would collide (the same
//! transport and point from two files) get their file's label, so nothing is silently
//! overwritten or averaged, and a merge of files from different machines says so.

use std::collections::BTreeMap;

use crate::compare::machine_differences;
use crate::results::Results;

/// One input: a short label that tells it apart from the others (its file name) and its
/// results.
#[derive(Clone, Debug)]
pub struct Part {
    /// How the file is named where names collide (`a.json` → `a`).
    pub label: String,
    /// Its results.
    pub results: Results,
}

/// The parts as one [`Results`]: the first part's environment and floor, every run, case,
/// skip, error and fault run of every part in order, and a description that names the files
/// (and warns when they come from different machines). `None` when `parts` is empty.
pub fn merge(parts: Vec<Part>) -> Option<Results> {
    let count = |key: &dyn Fn(&Results) -> Vec<String>| {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for p in &parts {
            // A name counts once per file: repeats inside one file are that file's business.
            let mut keys = key(&p.results);
            keys.sort();
            keys.dedup();
            for k in keys {
                *seen.entry(k).or_default() += 1;
            }
        }
        seen
    };
    // A point is relabelled as a whole when any transport ran it in two files: its runs
    // stay together per file ("load (before)": tcp and inproc), while files that ran a
    // point on different transports keep one point, side by side.
    let mut clashing_points: Vec<String> = Vec::new();
    {
        // Stepped runs are relabelled by their series below, never by their point.
        let runs = count(&|r| {
            r.runs
                .iter()
                .filter(|x| x.step.is_none())
                .map(|x| format!("{}\u{0}{}", x.point, x.transport))
                .collect()
        });
        for (k, n) in runs {
            let point = k.split('\u{0}').next().unwrap_or_default().to_owned();
            if n > 1 && !clashing_points.contains(&point) {
                clashing_points.push(point);
            }
        }
    }
    let cases = count(&|r| {
        r.conformance
            .iter()
            .map(|x| format!("{}/{}", x.transport, x.case))
            .collect()
    });
    let faults = count(&|r| {
        r.fault_runs
            .iter()
            .map(|x| format!("{}/{}/{}", x.transport, x.plan, x.policy))
            .collect()
    });
    // A series (steps, a capacity search) is relabelled as a whole when two files stepped it:
    // its runs, its steps' names and its knees stay together per file.
    let series = count(&|r| {
        r.runs
            .iter()
            .filter_map(|x| x.step.as_ref().map(|s| s.series.clone()))
            .chain(r.capacity.iter().map(|c| c.series.clone()))
            .collect()
    });
    let clash = |seen: &BTreeMap<String, usize>, k: String| seen.get(&k).is_some_and(|&n| n > 1);

    let mut parts = parts.into_iter();
    let first = parts.next()?;
    let mut out = first.results.clone();
    out.runs.clear();
    out.conformance.clear();
    out.fault_runs.clear();
    out.capacity.clear();
    out.skipped.clear();
    out.errors.clear();
    out.transports.clear();
    let mut names = Vec::new();
    let mut files = Vec::new();
    let mut machines = Vec::new();
    for part in std::iter::once(first).chain(parts) {
        let Part { label, results: r } = part;
        let differs = machine_differences(&out.environment, &r.environment);
        if !differs.is_empty() {
            machines.push(format!("{label}: {}", differs.join(", ")));
        }
        files.push(format!("{label} ({}, {})", r.suite.name, r.started_at));
        if !names.contains(&r.suite.name) {
            names.push(r.suite.name.clone());
        }
        for t in &r.transports {
            if !out.transports.contains(t) {
                out.transports.push(t.clone());
            }
        }
        if out.floor.is_none() {
            out.floor = r.floor.clone();
        }
        out.started_at = out.started_at.clone().min(r.started_at.clone());
        out.finished_at = match (out.finished_at.take(), r.finished_at.clone()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        out.complete &= r.complete;
        out.interrupted |= r.interrupted;
        let relabel = |name: &str| format!("{name} ({label})");
        for mut x in r.runs {
            match &mut x.step {
                Some(step) if clash(&series, step.series.clone()) => {
                    step.series = relabel(&step.series);
                    x.point = relabel(&x.point);
                }
                Some(_) => {}
                None if clashing_points.contains(&x.point) => x.point = relabel(&x.point),
                None => {}
            }
            out.runs.push(x);
        }
        for mut x in r.capacity {
            if clash(&series, x.series.clone()) {
                x.series = relabel(&x.series);
                for step in &mut x.steps {
                    step.point = relabel(&step.point);
                }
            }
            out.capacity.push(x);
        }
        for mut x in r.conformance {
            if clash(&cases, format!("{}/{}", x.transport, x.case)) {
                x.transport = format!("{} ({label})", x.transport);
            }
            out.conformance.push(x);
        }
        for mut x in r.fault_runs {
            if clash(&faults, format!("{}/{}/{}", x.transport, x.plan, x.policy)) {
                x.plan = format!("{} ({label})", x.plan);
            }
            out.fault_runs.push(x);
        }
        for mut x in r.skipped {
            x.point = format!("{} ({label})", x.point);
            out.skipped.push(x);
        }
        for mut x in r.errors {
            x.point = format!("{} ({label})", x.point);
            out.errors.push(x);
        }
    }
    out.suite.name = names.join(" + ");
    out.suite.description = format!("{} results files merged: {}", files.len(), files.join("; "));
    if !machines.is_empty() {
        out.suite.description.push_str(&format!(
            ". WARNING: not all made on one machine ({}), so differences between them may be \
             the machines', not the transports'",
            machines.join("; ")
        ));
    }
    out.suite.source = "merged".into();
    out.suite.toml = String::new();
    Some(out)
}

/// Labels for files, each as short as it can be while telling them apart: the file's stem
/// (`a.json` → `a`), or its folder and stem when stems repeat
/// (`2026-12-01/results.json` → `2026-12-01/results`), or its place in the list.
pub fn labels(paths: &[std::path::PathBuf]) -> Vec<String> {
    let stem = |p: &std::path::Path| {
        p.file_stem().map_or_else(
            || p.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    };
    let with_dir = |p: &std::path::Path| {
        let dir = p
            .parent()
            .and_then(|d| d.file_name())
            .map(|d| d.to_string_lossy().into_owned());
        match dir {
            Some(d) => format!("{d}/{}", stem(p)),
            None => stem(p),
        }
    };
    let unique = |v: &[String]| {
        let mut s = v.to_vec();
        s.sort();
        s.dedup();
        s.len() == v.len()
    };
    let stems: Vec<String> = paths.iter().map(|p| stem(p)).collect();
    if unique(&stems) {
        return stems;
    }
    let dirs: Vec<String> = paths.iter().map(|p| with_dir(p)).collect();
    if unique(&dirs) {
        return dirs;
    }
    (1..=paths.len()).map(|i| format!("file {i}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Environment, RunRecord, SuiteRecord};
    use std::path::PathBuf;

    fn results(suite: &str, cpu: &str, runs: &[(&str, &str)]) -> Results {
        let mut r = Results::new(
            "wirebench test".into(),
            "2026-12-01T10:00:00Z".into(),
            Environment {
                cpu_model: cpu.into(),
                cores: 2,
                ..Environment::default()
            },
            SuiteRecord {
                name: suite.into(),
                ..SuiteRecord::default()
            },
        );
        r.complete = true;
        for (t, p) in runs {
            r.transports.push((*t).into());
            r.runs.push(RunRecord {
                transport: (*t).into(),
                point: (*p).into(),
                ..RunRecord::default()
            });
        }
        r
    }

    /// A capacity search of tcp in `results`: steps at `rates`, the knee the first.
    fn searched(label_cpu: &str, rates: &[f64]) -> Results {
        use crate::results::{CapacityRecord, CapacityStep, StepInfo};
        let mut r = results("capacity", label_cpu, &[]);
        let mut steps = Vec::new();
        for (i, rate) in rates.iter().enumerate() {
            let point = format!("capacity@{rate}");
            r.runs.push(RunRecord {
                transport: "tcp".into(),
                point: point.clone(),
                step: Some(StepInfo {
                    series: "capacity".into(),
                    knob: "rate".into(),
                    value: *rate,
                    index: i as u32,
                }),
                ..RunRecord::default()
            });
            steps.push(CapacityStep {
                rate_per_s: *rate,
                point,
                verdict: "met".into(),
                why: String::new(),
                runs: 1,
            });
        }
        r.capacity.push(CapacityRecord {
            transport: "tcp".into(),
            series: "capacity".into(),
            knee_per_s: rates.first().copied(),
            steps,
            ..CapacityRecord::default()
        });
        r
    }

    #[test]
    fn two_searches_of_one_series_stay_apart_with_their_knees() {
        let merged = merge(vec![
            Part {
                label: "a".into(),
                results: searched("X", &[1000.0, 2000.0]),
            },
            Part {
                label: "b".into(),
                results: searched("X", &[1000.0, 4000.0]),
            },
        ])
        .unwrap();
        assert_eq!(merged.capacity.len(), 2);
        for (c, label) in merged.capacity.iter().zip(["a", "b"]) {
            let series = format!("capacity ({label})");
            assert_eq!(c.series, series);
            // Every step the record names is a run of that series, under its new name.
            for st in &c.steps {
                let run = merged.runs.iter().find(|r| r.point == st.point);
                let run = run.unwrap_or_else(|| panic!("no run {}", st.point));
                assert_eq!(run.step.as_ref().unwrap().series, series);
            }
        }
        assert_eq!(crate::curves::series(&merged).len(), 2);
    }

    #[test]
    fn every_run_is_kept_and_only_colliding_points_get_their_file() {
        let merged = merge(vec![
            Part {
                label: "before".into(),
                results: results(
                    "load",
                    "X",
                    &[("tcp", "load"), ("grpc", "load"), ("tcp", "big")],
                ),
            },
            Part {
                label: "after".into(),
                results: results(
                    "load",
                    "X",
                    &[("tcp", "load"), ("quic", "load"), ("grpc", "big")],
                ),
            },
        ])
        .expect("two parts");
        let names: Vec<String> = merged
            .runs
            .iter()
            .map(|r| format!("{}/{}", r.transport, r.point))
            .collect();
        // `load` ran on tcp in both files: each file's `load` keeps its runs together under
        // its own label; `big` ran on different transports, so it stays one point.
        assert_eq!(
            names,
            [
                "tcp/load (before)",
                "grpc/load (before)",
                "tcp/big",
                "tcp/load (after)",
                "quic/load (after)",
                "grpc/big"
            ]
        );
        assert_eq!(merged.transports, ["tcp", "grpc", "quic"]);
        assert!(merged.complete);
        assert!(!merged.suite.description.contains("WARNING"));
        assert!(
            merged
                .suite
                .description
                .starts_with("2 results files merged")
        );
    }

    #[test]
    fn files_from_different_machines_are_flagged() {
        let merged = merge(vec![
            Part {
                label: "a".into(),
                results: results("quick", "EPYC", &[("tcp", "p")]),
            },
            Part {
                label: "b".into(),
                results: results("quick", "Xeon", &[("grpc", "p")]),
            },
        ])
        .expect("two parts");
        assert!(
            merged.suite.description.contains("WARNING"),
            "{}",
            merged.suite.description
        );
        assert!(merged.suite.description.contains("Xeon"));
        assert!(merge(Vec::new()).is_none());
    }

    #[test]
    fn labels_are_as_short_as_tells_files_apart() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(labels(&[p("a.json"), p("x/b.json")]), ["a", "b"]);
        assert_eq!(
            labels(&[p("r/1/results.json"), p("r/2/results.json")]),
            ["1/results", "2/results"]
        );
        assert_eq!(
            labels(&[p("1/results.json"), p("1/results.json")]),
            ["file 1", "file 2"]
        );
    }
}
