//! The load engine against in-process servers: counts add up, streams count messages, and
//! open-loop latency is corrected for a stalled server while service time is not. Nothing
//! here asserts on the machine's speed: the stall test's bounds derive from the injected
//! stall alone.

use std::sync::Arc;
use std::time::Duration;

use wirebench::load::{self, EngineOptions, NoHooks, Target};
use wirebench_core::{ClientConfig, Code, Echo, Server, ServerConfig, Transport};
use wirebench_scenarios::load::{Length, LoadSpec, Mode, Schedule, Stall};
use wirebench_transports::AnyTransport;
use wirebench_transports::registry::AnyServer;

/// A server on its own runtime, for the test's lifetime.
struct Served {
    rt: tokio::runtime::Runtime,
    server: Option<AnyServer>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}

fn serve(name: &str) -> (Served, Target) {
    let transport = AnyTransport::by_name(name).expect("known transport");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("test setup");
    let server = rt
        .block_on(transport.serve(&ServerConfig::loopback(), Arc::new(Echo::default())))
        .expect("test setup");
    let endpoint = server.endpoint();
    let target = Target {
        transport,
        endpoint,
        client: ClientConfig::default(),
    };
    (
        Served {
            rt,
            server: Some(server),
        },
        target,
    )
}

fn run_with_timeout(spec: LoadSpec, target: Target) -> load::Outcome {
    run_with(
        spec,
        target,
        EngineOptions::default(),
        Duration::from_secs(60),
    )
}

/// Runs the engine with `opts`, failing the test if it has not returned within `limit`.
fn run_with(spec: LoadSpec, target: Target, opts: EngineOptions, limit: Duration) -> load::Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(load::run(&spec, &target, &opts, &mut NoHooks));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("load run did not finish within {limit:?}"))
        .expect("load run succeeded")
}

/// An open loop at `rate`/s with one call in flight, whose server stalls for `stall` once,
/// `at` into the measured phase.
fn stalled_open_loop(
    rate: f64,
    warmup: Duration,
    length: Duration,
    at: Duration,
    stall: Duration,
) -> LoadSpec {
    LoadSpec {
        mode: Mode::Open {
            rate,
            schedule: Schedule::Constant,
            max_in_flight: 1,
        },
        warmup,
        length: Length::Duration(length),
        stall: Some(Stall {
            at,
            duration: stall,
        }),
        ..LoadSpec::default()
    }
}

#[test]
fn closed_loop_counts_add_up() {
    for name in ["inproc", "tcp"] {
        let (served, target) = serve(name);
        let spec = LoadSpec {
            mode: Mode::Closed { concurrency: 8 },
            connections: 4,
            workers: 2,
            warmup: Duration::from_millis(50),
            length: Length::Requests(3000),
            ..LoadSpec::default()
        };
        let out = run_with_timeout(spec, target);
        let m = &out.merged;
        assert_eq!(m.latency.len(), 3000, "{name}");
        assert_eq!(m.status[Code::Ok.as_u32() as usize], 3000, "{name}");
        assert_eq!(out.incomplete, 0);
        assert_eq!(out.worker_busy.len(), 2);
        let interval_total: u64 = m.intervals.iter().map(|i| i.calls).sum();
        assert_eq!(interval_total, 3000);
        if name == "tcp" {
            let wire = out.wire.expect("tcp counts its bytes");
            // Each call carries at least its 64-byte payload each way.
            assert!(
                wire.sent >= 3000 * 64 && wire.received >= 3000 * 64,
                "{wire:?}"
            );
        }
        drop(served);
    }
}

#[test]
fn streams_count_messages() {
    let (_served, target) = serve("tcp");
    for (method, sent, received) in [
        (wirebench_core::Method::Bidi, 5, 5),
        (wirebench_core::Method::ServerStream, 1, 5),
        (wirebench_core::Method::ClientStream, 5, 1),
    ] {
        let spec = LoadSpec {
            method,
            messages: 5,
            mode: Mode::Closed { concurrency: 2 },
            warmup: Duration::ZERO,
            length: Length::Requests(200),
            ..LoadSpec::default()
        };
        let out = run_with_timeout(spec, target.clone());
        let m = &out.merged;
        assert_eq!(m.latency.len(), 200, "{method:?}");
        assert_eq!(m.status[0], 200, "{method:?}");
        assert_eq!(m.messages_sent, 200 * sent, "{method:?}");
        assert_eq!(m.messages_received, 200 * received, "{method:?}");
        let per_message = m.message.as_ref().map_or(0, |h| h.len());
        match method {
            wirebench_core::Method::ClientStream => assert_eq!(per_message, 0),
            _ => assert_eq!(per_message, 200 * 5, "{method:?}"),
        }
    }
}

#[test]
fn open_loop_records_lag_and_service_time_per_call() {
    let (_served, target) = serve("tcp");
    let spec = LoadSpec {
        mode: Mode::Open {
            rate: 2000.0,
            schedule: Schedule::Poisson,
            max_in_flight: 64,
        },
        warmup: Duration::from_millis(100),
        length: Length::Requests(1000),
        ..LoadSpec::default()
    };
    let out = run_with_timeout(spec, target);
    let m = &out.merged;
    assert_eq!(m.latency.len(), 1000);
    assert_eq!(m.service.as_ref().map(|h| h.len()), Some(1000));
    assert_eq!(m.lag.as_ref().map(|h| h.len()), Some(1000));
    // Latency runs from the intended start, service time from the actual start: the
    // former is never below the latter.
    let service = m.service.as_ref().expect("test setup");
    assert!(m.latency.value_at_quantile(0.5) >= service.value_at_quantile(0.5));
    assert!(m.latency.max() >= service.max());
}

/// The acceptance test for coordinated-omission correction: one caller (as wrk2 with one
/// connection), a steady 500/s, and one call that the server holds for a second. The calls
/// scheduled during that second cannot start until it ends; measured from their intended
/// starts they carry the stall, measured from their actual starts they do not.
#[test]
fn open_loop_latency_includes_a_stall_that_service_time_does_not() {
    let stall = Duration::from_secs(1);
    for name in ["inproc", "tcp"] {
        let (_served, target) = serve(name);
        let spec = stalled_open_loop(
            500.0,
            Duration::from_millis(100),
            Duration::from_secs(3),
            Duration::from_millis(500),
            stall,
        );
        let out = run_with_timeout(spec, target);
        let m = &out.merged;
        let service = m.service.as_ref().expect("test setup");
        let ns = |d: Duration| d.as_nanos() as u64;
        // About a third of the calls were scheduled inside the stall: the worst 10% waited
        // most of it.
        assert!(
            m.latency.value_at_quantile(0.90) >= ns(stall / 2),
            "{name}: corrected p90 {} ns should include the {stall:?} stall",
            m.latency.value_at_quantile(0.90)
        );
        // Only the stalled call itself was slow once started.
        assert!(
            service.value_at_quantile(0.99) < ns(stall / 2),
            "{name}: service p99 {} ns should not include the stall",
            service.value_at_quantile(0.99)
        );
        assert!(
            service.max() >= ns(stall),
            "{name}: the stalled call is the max"
        );
        // The waits were for the busy caller, not the generator's own lag.
        assert!(m.backpressured > 0, "{name}");
    }
}

/// A server that stops answering (a stall far longer than the run) with every caller stuck:
/// the open loop still ends `drain` after its nominal end, and the calls it could not send
/// count as unanswered instead of vanishing from the record.
#[test]
fn open_loop_ends_when_every_caller_is_stuck() {
    for name in ["inproc", "tcp"] {
        let (_served, target) = serve(name);
        let spec = stalled_open_loop(
            200.0,
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(100),
            Duration::from_secs(600),
        );
        let opts = EngineOptions {
            drain: Duration::from_millis(200),
            ..EngineOptions::default()
        };
        // The run must end on its own, long before the stall would.
        let out = run_with(spec, target, opts, Duration::from_secs(30));
        let answered = out.merged.latency.len();
        let unsent = out.merged.unsent;
        // 500 ms at 200/s: 100 requests, ~20 answered before the stall, one stuck in it, the
        // rest never sent.
        assert_eq!(
            answered + out.incomplete + unsent,
            100,
            "{name}: {answered} answered + {} unanswered + {unsent} never sent should be the \
             100 scheduled",
            out.incomplete
        );
        assert_eq!(out.incomplete, 1, "{name}: the one call stuck in the stall");
        assert!(unsent >= 70, "{name}: {unsent} never sent");
        assert_eq!(out.merged.sent, answered + out.incomplete, "{name}");
    }
}

/// An open loop that the server cannot keep up with (each call takes about 2 ms, one caller,
/// 1000 requests/s offered): every request due is accounted for — sent (late ones charged
/// from their intended start) or counted as never sent, with how long it had waited.
#[test]
fn an_unsustainable_open_loop_accounts_for_every_request_due() {
    let (_served, target) = serve("inproc");
    let spec = LoadSpec {
        mode: Mode::Open {
            rate: 1000.0,
            schedule: Schedule::Constant,
            max_in_flight: 1,
        },
        warmup: Duration::ZERO,
        length: Length::Duration(Duration::from_secs(1)),
        server_delay: Duration::from_millis(2),
        ..LoadSpec::default()
    };
    let out = run_with_timeout(spec, target);
    let m = &out.merged;
    // A constant schedule at 1000/s makes exactly 1000 requests due in 1 s.
    assert_eq!(
        m.sent + m.unsent,
        1000,
        "sent {} + never sent {}",
        m.sent,
        m.unsent
    );
    assert_eq!(m.latency.len() + out.incomplete, m.sent);
    // At ~2 ms a call at most ~500 fit; the rest waited for the caller and never went.
    assert!(m.unsent >= 400, "never sent: {}", m.unsent);
    let waits = m
        .unsent_wait
        .as_ref()
        .expect("an open loop keeps the waits");
    assert_eq!(waits.len(), m.unsent);
    // Requests due just before the end waited least, the first ones unsent nearly 1 s.
    assert!(waits.max() <= 1_000_000_000 + 1_000_000, "{}", waits.max());
    assert!(waits.max() >= 300_000_000, "{}", waits.max());
}
