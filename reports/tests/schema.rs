//! The checked-in JSON Schema accepts what this build writes (with every optional field set
//! and with none), and rejects what it must.

use std::collections::BTreeMap;

use wirebench_reports::conformance::{CaseOutcome, Verdict};
use wirebench_reports::histogram::{encode, latency_histogram, summarize};
use wirebench_reports::results::*;

fn schema() -> serde_json::Value {
    let text = include_str!("../schema/results.schema.json");
    serde_json::from_str(text).expect("the schema is JSON")
}

fn full() -> Results {
    let mut h = latency_histogram();
    for v in 1..1000 {
        h.saturating_record(v * 1000);
    }
    let hist = encode(&h).expect("test setup");
    let lat = summarize(&h);
    let mut r = Results::new(
        "wirebench test".into(),
        "2026-01-01T00:00:00Z".into(),
        Environment {
            git_sha: Some("abc".into()),
            git_dirty: Some(false),
            memory_bytes: Some(1),
            hostname: Some("h".into()),
            ..Environment::default()
        },
        SuiteRecord::default(),
    );
    r.transports = vec!["tcp".into()];
    r.floor = Some(FloorRecord {
        payload_bytes: 64,
        duration_s: 1.0,
        pin: "none".into(),
        latency: lat,
        histogram: hist.clone(),
        client_cpus: vec![0],
        server_cpus: vec![1],
    });
    r.conformance = vec![
        CaseOutcome {
            case: "a".into(),
            group: "g".into(),
            transport: "tcp".into(),
            verdict: Verdict::Pass,
            detail: None,
            elapsed_ms: 1.0,
        },
        CaseOutcome {
            case: "b".into(),
            group: "g".into(),
            transport: "tcp".into(),
            verdict: Verdict::Unsupported,
            detail: Some("why".into()),
            elapsed_ms: 1.0,
        },
    ];
    let usage = ProcessUsage {
        user_s: 1.0,
        system_s: 1.0,
        cpu_us_per_call: 2.0,
        peak_rss_bytes: Some(10),
        cpus: vec![0],
        note: Some("n".into()),
    };
    r.runs.push(RunRecord {
        transport: "tcp".into(),
        point: "p".into(),
        params: RunParams {
            method: "Unary".into(),
            mode: "open".into(),
            concurrency: None,
            rate: Some(100.0),
            schedule: Some("poisson".into()),
            max_in_flight: Some(8),
            connections: 1,
            workers: 1,
            payload_bytes: 64,
            response_bytes: Some(10),
            messages_per_call: 1,
            warmup_s: 1.0,
            duration_s: Some(1.0),
            requests: None,
            seed: 1,
            timeout_s: Some(1.0),
            stall_at_s: Some(0.5),
            stall_for_s: Some(0.1),
            server_delay_s: Some(0.001),
            pin: "split".into(),
            client_options: BTreeMap::from([("k".into(), "v".into())]),
            server_options: BTreeMap::new(),
            tls: "mtls".into(),
            pacing: Some("spin".into()),
            shard: Some(ShardParams {
                index: Some(1),
                count: Some(3),
                segment: "1/3:2/3".into(),
                source: "SLURM_PROCID".into(),
            }),
        },
        server: ServerInfo {
            placement: "child".into(),
            endpoint: "127.0.0.1:1".into(),
            pid: Some(1),
            note: None,
        },
        summary: RunSummary {
            calls: 999,
            status_counts: BTreeMap::from([("OK".into(), 999)]),
            latency: lat,
            service_time: Some(lat),
            generator_lag: Some(lat),
            message_latency: Some(lat),
            bytes: Some(WireTotals::default()),
            bytes_not_measured: Some("no wire".into()),
            host: Some(HostLoad {
                window_s: 2.0,
                cpus: 2,
                other_cpus: 0.9,
                steal_ms: 3.0,
            }),
            client: usage.clone(),
            server: Some(usage),
            worker_busy: vec![0.5],
            connect: Some(lat),
            offered: Some(OfferedLoad {
                rate_per_s: 5000.0,
                due: 15_000,
                sent: 3044,
                unsent: 11_956,
                achieved_per_s: 837.0,
                unsent_wait: Some(lat),
                latency_with_unsent: Some(lat),
            }),
            ..RunSummary::default()
        },
        validity: Validity {
            valid: false,
            reasons: vec!["r".into()],
            notes: vec!["n".into()],
            unsustained: Some("offered 5000/s, achieved 837/s".into()),
        },
        histograms: RunHistograms {
            latency: hist.clone(),
            service_time: Some(hist.clone()),
            generator_lag: Some(hist.clone()),
            message_latency: Some(hist.clone()),
        },
        intervals: vec![IntervalRecord {
            start_s: 0.0,
            calls: 999,
            errors: 0,
            latency: lat,
            histogram: hist,
        }],
        repeats: vec![RepeatSummary {
            throughput_per_s: 99.9,
            p50_ns: 1,
            p99_ns: 2,
            p999_ns: 3,
            cpu_client_us: 4.0,
            cpu_server_us: Some(5.0),
            valid: true,
        }],
        gate: Some(vec!["throughput".into(), "p50".into()]),
        thresholds: vec![ThresholdOutcome {
            threshold: "p99 < 1ms".into(),
            measured: "1.20 ms".into(),
            passed: false,
        }],
        step: None,
        stages: vec![StageRecord {
            index: 0,
            start_s: 0.0,
            duration_s: 1.0,
            rate_from: 0.0,
            rate_to: 100.0,
            due: 50,
            sent: 49,
            unsent: 1,
            completed: 49,
            errors: 0,
            achieved_per_s: 49.0,
            latency: lat,
            generator_lag: lat,
            verdict: "UNSUSTAINED".into(),
            why: "1 due request never sent".into(),
        }],
    });
    // One step of a capacity search: a run of its own, with its place in the series.
    let mut stepped = r.runs[0].clone();
    stepped.point = "p@100/s".into();
    stepped.step = Some(StepInfo {
        series: "p".into(),
        knob: "rate".into(),
        value: 100.0,
        index: 0,
    });
    r.runs.push(stepped);
    r.capacity.push(CapacityRecord {
        transport: "tcp".into(),
        series: "p".into(),
        slo: vec!["p99 < 2ms".into()],
        outcome: "found".into(),
        knee_per_s: Some(100.0),
        missed_per_s: Some(104.0),
        bracket: Some(0.04),
        tolerance: 0.05,
        verdict: "v".into(),
        steps: vec![CapacityStep {
            rate_per_s: 100.0,
            point: "p@100/s".into(),
            verdict: "met".into(),
            why: "p99 < 2ms: 1.2 ms".into(),
            runs: 1,
        }],
        slo_line: Some(SloLine {
            quantile: "p99".into(),
            limit_ns: 2_000_000,
        }),
        min_rate_per_s: Some(50.0),
    });
    let run0 = r.runs[0].clone();
    let phase =
        |name: &str, start: f64, faults: Vec<String>, process: Option<String>| FaultPhaseRecord {
            name: name.into(),
            start_s: start,
            duration_s: 1.0,
            faults,
            process,
            sent: 10,
            ok: 8,
            failed: 1,
            timed_out: 1,
            unanswered: 0,
            status_counts: BTreeMap::from([
                ("OK".into(), 8),
                ("UNAVAILABLE".into(), 1),
                ("DEADLINE_EXCEEDED".into(), 1),
            ]),
            throughput_per_s: 8.0,
            error_rate: 0.2,
            latency: run0.summary.latency,
            histogram: run0.histograms.latency.clone(),
        };
    r.fault_runs.push(FaultRunRecord {
        plan: "reset".into(),
        transport: "tcp".into(),
        policy: "with".into(),
        policy_config: Some(serde_json::json!({"retry": {"max": 3}})),
        protocol: "tcp".into(),
        target: "server".into(),
        params: run0.params.clone(),
        server: run0.server.clone(),
        interval_s: 0.1,
        phases: vec![
            phase("clean", 0.0, vec![], None),
            phase("fault", 1.0, vec!["reset".into()], None),
            phase("crash", 2.0, vec![], Some("kill".into())),
        ],
        recovery: vec![RecoveryRecord {
            phase: "fault".into(),
            detected_ms: Some(1.0),
            first_success_ms: Some(2.0),
            p99_recovered_ms: None,
            window_ms: 500.0,
            clean_p99_ns: 1000,
            p50_rise_ns: -5,
            p99_rise_ns: 7,
        }],
        accounting: Accounting {
            sent: 30,
            ok: 24,
            failed: 3,
            timed_out: 3,
            unanswered: 0,
            balanced: true,
            unsent: 2,
        },
        proxy: BTreeMap::from([("resets".into(), 3)]),
        events: vec![FaultEvent {
            at_s: 2.0,
            what: "SIGKILL to pid 1".into(),
        }],
        validity: Validity::default(),
        intervals: run0.intervals.clone(),
    });
    r.skipped.push(Skipped {
        transport: "x".into(),
        point: "p".into(),
        reason: "r".into(),
    });
    r.errors.push(RunFailure {
        transport: "x".into(),
        point: "p".into(),
        error: "e".into(),
    });
    r
}

fn check(value: &serde_json::Value) -> Result<(), String> {
    let schema = schema();
    let v = jsonschema::validator_for(&schema).map_err(|e| format!("schema: {e}"))?;
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

#[test]
fn full_and_minimal_results_validate() {
    check(&serde_json::to_value(full()).expect("test setup")).expect("test setup");
    let minimal = Results::new(
        "t".into(),
        "s".into(),
        Environment::default(),
        SuiteRecord::default(),
    );
    check(&serde_json::to_value(minimal).expect("test setup")).expect("test setup");
    let mut closed = full();
    let run = &mut closed.runs[0];
    run.params.mode = "closed".into();
    run.params.rate = None;
    run.params.schedule = None;
    run.params.max_in_flight = None;
    run.params.concurrency = Some(4);
    run.summary.service_time = None;
    run.summary.server = None;
    run.summary.bytes = None;
    run.histograms.service_time = None;
    closed.floor = None;
    check(&serde_json::to_value(closed).expect("test setup")).expect("test setup");
}

#[test]
fn schema_rejects_drift() {
    let mut v = serde_json::to_value(full()).expect("test setup");
    v["runs"][0]["summary"]["surprise"] = 1.into();
    assert!(check(&v).is_err(), "an unknown field must be refused");
    let mut v = serde_json::to_value(full()).expect("test setup");
    v["version"] = 2.into();
    assert!(check(&v).is_err());
    let mut v = serde_json::to_value(full()).expect("test setup");
    v["runs"][0]["params"]["mode"] = "sideways".into();
    assert!(check(&v).is_err());
    let mut v = serde_json::to_value(full()).expect("test setup");
    v["fault_runs"][0]["phases"][0]["process"] = "explode".into();
    assert!(
        check(&v).is_err(),
        "an unknown process fault must be refused"
    );
    let mut v = serde_json::to_value(full()).expect("test setup");
    v["fault_runs"][0]["accounting"]["lost"] = 1.into();
    assert!(
        check(&v).is_err(),
        "an unknown accounting field must be refused"
    );
}

#[test]
fn html_report_is_self_contained() {
    let r = full();
    let html = wirebench_reports::html::render(&r);
    assert!(html.starts_with("<!DOCTYPE html>"));
    for needle in ["http:", "https:", "src=", "<link", "@import", "url("] {
        assert!(!html.contains(needle), "report contains {needle:?}");
    }
    assert!(html.contains("<svg"), "charts are inline SVG");
    assert!(html.contains("INVALID"));
    assert!(html.contains("name=\"viewport\""));
    let md = wirebench_reports::markdown::render(&r);
    assert!(md.contains("| p | tcp |"), "{md}");
    assert!(html.contains("Fault runs") && html.contains("tcp + policy"));
    assert!(md.contains("| reset | tcp + policy | fault |"), "{md}");
    // The capacity search is drawn as a curve with its knee, not as a point of its own.
    assert!(html.contains("Latency against throughput") && html.contains("knee"));
    assert!(!md.contains("| p@100/s |"), "{md}");
    assert!(md.contains("## Capacity"), "{md}");
}

/// The checked-in history schema accepts what `wirebench history` writes (with a spread, a
/// change and a latest run), and each kept latest run is itself a valid results document.
#[test]
fn a_history_validates_and_its_latest_runs_are_results() {
    use wirebench_reports::compare::CompareConfig;
    use wirebench_reports::history::History;
    let text = include_str!("../schema/history.schema.json");
    let schema: serde_json::Value = serde_json::from_str(text).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let mut first = full();
    let again = first.runs[0].repeats[0].clone();
    first.runs[0].repeats.push(again);
    let mut second = first.clone();
    second.started_at = "2026-01-02T00:00:00Z".into();
    second.runs[0].summary.latency.p50_ns *= 3;
    let mut h = History::default();
    h.add(&first, "a.json", &CompareConfig::default());
    h.add(&second, "b.json", &CompareConfig::default());
    assert!(h.runs[0].points[0].spread.is_some());
    let value = serde_json::to_value(&h).expect("serializes");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    for latest in h.latest.values() {
        check(&serde_json::to_value(latest).expect("serializes")).expect("a results document");
    }
    // And a foreign document is refused.
    assert!(!validator.is_valid(&serde_json::json!({"schema": "wirebench-results"})));
}
