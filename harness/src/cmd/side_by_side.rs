//! The table `wirebench load --transport a,b,c` ends with: the same point on each transport,
//! one row each, with each one's verdict, so the transports are compared at a glance and a
//! number that cannot be trusted is never shown without saying so.

use std::fmt::Write;

use wirebench_reports::results::{LatencySummary, RunFailure, RunRecord};

use super::load::us;

/// The table, then a line per run that is not valid or breached a threshold, then the runs
/// that failed.
///
/// The steps of a stepped schedule are rows too, named by transport and step.
pub fn table(records: &[RunRecord], failures: &[RunFailure]) -> String {
    let mut out = String::new();
    let stepped = records.iter().any(|r| r.step.is_some());
    let name = |r: &RunRecord| match &r.step {
        Some(_) => format!("{} {}", r.transport, r.point),
        None => r.transport.clone(),
    };
    if let Some(first) = records.first() {
        let p = &first.params;
        let _ = writeln!(
            out,
            "\n{} {} loop, {} B{}, {:.1} s measured per {}",
            p.method,
            p.mode,
            p.payload_bytes,
            p.rate
                .filter(|_| !stepped)
                .map(|r| format!(", offered {r:.0}/s"))
                .unwrap_or_default(),
            p.duration_s.unwrap_or(first.summary.elapsed_s),
            if stepped { "step" } else { "transport" },
        );
    }
    // The best p50 among the runs that can be trusted is the yardstick of the ratio column;
    // an invalid run's p50 measures something else and must not become everyone's 1.00x.
    let best = records
        .iter()
        .filter(|r| r.validity.valid)
        .map(|r| r.summary.latency.p50_ns)
        .filter(|&ns| ns > 0)
        .min();
    let header = [
        if stepped { "step" } else { "transport" },
        "calls/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "p50/best",
        "errors",
        "CPU µs/call",
        "B/call",
        "verdict",
    ];
    let mut rows: Vec<[String; 12]> = Vec::new();
    for r in records {
        let s = &r.summary;
        let l: &LatencySummary = &s.latency;
        let errors = s.errors + s.incomplete;
        let server = s
            .server
            .as_ref()
            .map_or("–".to_owned(), |u| format!("{:.1}", u.cpu_us_per_call));
        let mut verdict = r.validity.label().to_owned();
        if r.breaches().next().is_some() {
            verdict.push_str(", threshold BREACHED");
        }
        rows.push([
            name(r),
            format!("{:.0}", s.throughput_per_s),
            us(l.p50_ns),
            us(l.p90_ns),
            us(l.p99_ns),
            us(l.p999_ns),
            us(l.max_ns),
            match best {
                Some(b) if r.validity.valid => format!("{:.2}x", l.p50_ns as f64 / b as f64),
                _ => "–".into(),
            },
            if s.calls == 0 {
                "–".into()
            } else {
                format!("{errors} ({:.2}%)", errors as f64 * 100.0 / s.calls as f64)
            },
            format!("{:.1} / {server}", s.client.cpu_us_per_call),
            s.bytes
                .as_ref()
                .map_or("–".to_owned(), |b| format!("{:.0}", b.sent_per_call)),
            verdict,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            // Names and verdicts read left to right; numbers line up on the right.
            if i == 0 || i == cells.len() - 1 {
                l.push_str(c);
                l.push_str(&" ".repeat(pad));
            } else {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            }
            l.push_str("  ");
        }
        l.trim_end().to_owned() + "\n"
    };
    if !rows.is_empty() {
        out.push_str(&line(&header));
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            out.push_str(&line(&cells));
        }
        let open = records.iter().any(|r| r.params.mode == "open");
        out.push_str(
            "  CPU µs/call is client / server; B/call is wire bytes sent per call (– where the \
             transport cannot count them)\n",
        );
        if open {
            out.push_str(
                "  open loop: latency from each request's intended start (coordinated omission \
                 corrected)\n",
            );
        }
    }
    for r in records {
        if !r.validity.valid {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                name(r),
                r.validity.label(),
                r.validity.why()
            );
        }
        if let Some(o) = &r.summary.offered
            && o.unsent > 0
        {
            let _ = writeln!(
                out,
                "  {}: {} of {} due requests NEVER SENT (in no percentile above)",
                name(r),
                o.unsent,
                o.due
            );
        }
        for b in r.breaches() {
            let _ = writeln!(
                out,
                "  {}: threshold {} BREACHED (measured {})",
                name(r),
                b.threshold,
                b.measured
            );
        }
    }
    for f in failures {
        let _ = writeln!(out, "  {}: FAILED: {}", f.transport, f.error);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wirebench_reports::results::Validity;

    fn record(transport: &str, p50_us: u64, valid: bool) -> RunRecord {
        let mut r = RunRecord {
            transport: transport.into(),
            point: "load".into(),
            ..RunRecord::default()
        };
        r.params.mode = "closed".into();
        r.summary.calls = 1000;
        r.summary.latency.p50_ns = p50_us * 1000;
        r.validity = if valid {
            Validity {
                valid: true,
                ..Validity::default()
            }
        } else {
            Validity {
                valid: false,
                reasons: vec!["generator lag p99 3 ms over 1 ms".into()],
                ..Validity::default()
            }
        };
        r
    }

    #[test]
    fn ratios_are_to_the_best_valid_run_and_invalid_runs_say_why() {
        let text = table(
            &[
                record("tcp", 20, true),
                record("grpc", 50, true),
                record("quic", 10, false),
            ],
            &[RunFailure {
                transport: "nats".into(),
                point: "load".into(),
                error: "broker did not start".into(),
            }],
        );
        let row = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} row in\n{text}"))
                .to_owned()
        };
        assert!(row("tcp").contains("1.00x"), "{text}");
        assert!(row("grpc").contains("2.50x"), "{text}");
        // The invalid run is faster but is nobody's yardstick.
        assert!(!row("quic ").contains('x'), "{text}");
        assert!(row("quic ").contains("INVALID"), "{text}");
        assert!(text.contains("quic INVALID: generator lag"), "{text}");
        assert!(
            text.contains("nats: FAILED: broker did not start"),
            "{text}"
        );
    }
}
