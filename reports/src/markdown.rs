//! `summary.md`: the headline table in Markdown, for a CI job summary or a pull request.

use std::fmt::Write;

use crate::conformance::Verdict;
use crate::html::{describe, dur, rate};
use crate::results::Results;
use crate::setup;

/// Renders the summary.
pub fn render(all: &Results) -> String {
    let fixed = all.without_steps();
    let results = &*fixed;
    let mut out = String::new();
    let e = &results.environment;
    let _ = writeln!(out, "# wirebench: {}\n", results.suite.name);
    let _ = writeln!(
        out,
        "{} · {} cores · {} build · git {}{}\n",
        e.cpu_model,
        e.cores,
        e.build_profile,
        e.git_sha.as_deref().map_or("?", |s| &s[..s.len().min(12)]),
        if results.complete {
            ""
        } else {
            " · **incomplete run**"
        }
    );
    if let Some(f) = &results.floor {
        let _ = writeln!(
            out,
            "Floor (blocking TCP ping-pong, {} B): p50 {}, p99 {}, p99.9 {}\n",
            f.payload_bytes,
            dur(f.latency.p50_ns),
            dur(f.latency.p99_ns),
            dur(f.latency.p999_ns)
        );
    }
    if !results.runs.is_empty() {
        out.push_str("| load point | transport | throughput | p50 | p99 | p99.9 | CPU µs/call client / server | validity |\n");
        out.push_str("|---|---|--:|--:|--:|--:|--:|---|\n");
        for r in &results.runs {
            let s = &r.summary;
            let server = s
                .server
                .as_ref()
                .map_or("–".to_owned(), |u| format!("{:.1}", u.cpu_us_per_call));
            let mut validity = if r.validity.valid {
                "valid".to_owned()
            } else {
                format!("**{}**: {}", r.validity.label(), r.validity.why())
            };
            for b in r.breaches() {
                validity = format!(
                    "{validity}; **threshold breached**: {} (measured {})",
                    b.threshold, b.measured
                );
            }
            if let Some(line) = r.repeats_line() {
                validity = format!("{validity}; {line}");
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.1} / {server} | {} |",
                r.point,
                r.transport,
                rate(s.throughput_per_s),
                dur(s.latency.p50_ns),
                dur(s.latency.p99_ns),
                dur(s.latency.p999_ns),
                s.client.cpu_us_per_call,
                validity.replace('|', "\\|")
            );
        }
        out.push('\n');
        let setups = setup::setup_rows(results);
        if !setups.is_empty() {
            let parts: Vec<String> = setups
                .iter()
                .map(|r| {
                    let mode = if r.tls == "none" {
                        String::new()
                    } else {
                        format!("+{}", r.tls)
                    };
                    format!("{}{mode} {}", r.transport, dur(r.setup.p50_ns))
                })
                .collect();
            let _ = writeln!(
                out,
                "Connection setup (connect + first call, p50): {}\n",
                parts.join(", ")
            );
        }
        let pairs = setup::tls_pairs(results);
        if !pairs.is_empty() {
            out.push_str(
                "| TLS cost | plaintext → TLS p50 | throughput | CPU µs/call client | server |\n",
            );
            out.push_str("|---|--:|--:|--:|--:|\n");
            for p in pairs {
                let (a, b) = (&p.plain.summary, &p.tls.summary);
                let server = match (&a.server, &b.server) {
                    (Some(x), Some(y)) => setup::change(x.cpu_us_per_call, y.cpu_us_per_call),
                    _ => "–".into(),
                };
                let _ = writeln!(
                    out,
                    "| {} {} ({}) | {} → {} | {} | {} | {server} |",
                    p.tls.transport,
                    p.tls.point,
                    p.tls.params.tls,
                    dur(a.latency.p50_ns),
                    dur(b.latency.p50_ns),
                    setup::change(a.throughput_per_s, b.throughput_per_s),
                    setup::change(a.client.cpu_us_per_call, b.client.cpu_us_per_call),
                );
            }
            out.push('\n');
        }
        let mut seen = Vec::new();
        for r in &results.runs {
            if !seen.contains(&&r.point) {
                seen.push(&r.point);
                let _ = writeln!(out, "- **{}**: {}", r.point, describe(r));
            }
        }
        out.push('\n');
    }
    if !results.conformance.is_empty() {
        let mut ts: Vec<&str> = Vec::new();
        for c in &results.conformance {
            if !ts.contains(&c.transport.as_str()) {
                ts.push(&c.transport);
            }
        }
        out.push_str("Conformance: ");
        let parts: Vec<String> = ts
            .iter()
            .map(|t| {
                let of = |v| {
                    results
                        .conformance
                        .iter()
                        .filter(|c| c.transport == *t && c.verdict == v)
                        .count()
                };
                format!(
                    "{t} {} pass / {} fail / {} unsupported",
                    of(Verdict::Pass),
                    of(Verdict::Fail),
                    of(Verdict::Unsupported)
                )
            })
            .collect();
        out.push_str(&parts.join("; "));
        out.push_str("\n\n");
    }
    crate::curves::markdown_section(&mut out, all);
    crate::faults::markdown_section(&mut out, results);
    for s in &results.skipped {
        let _ = writeln!(
            out,
            "- not run: {} × {}: {}",
            s.transport, s.point, s.reason
        );
    }
    for e in &results.errors {
        let _ = writeln!(
            out,
            "- **failed**: {} × {}: {}",
            e.transport, e.point, e.error
        );
    }
    out
}
