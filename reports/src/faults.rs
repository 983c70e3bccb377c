//! The fault section of the reports: per plan, a timeline chart per run (latency p50/p99
//! and error rate over time, fault phases shaded) and a recovery table with every
//! transport side by side; and the recovery figures for `summary.md`.

use std::fmt::Write;

use crate::charts::{self, Band, Series};
use crate::html::{dur, escape, rate};
use crate::results::{FaultRunRecord, Results};

/// The plans in the order they first ran.
fn plans(results: &Results) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    for f in &results.fault_runs {
        if !v.contains(&f.plan.as_str()) {
            v.push(&f.plan);
        }
    }
    v
}

fn label(f: &FaultRunRecord) -> String {
    if f.policy == "none" {
        f.transport.clone()
    } else {
        format!("{} + policy", f.transport)
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0} ms"))
}

fn signed(ns: i64) -> String {
    if ns < 0 {
        format!("−{}", dur(ns.unsigned_abs()))
    } else {
        format!("+{}", dur(ns.unsigned_abs()))
    }
}

fn timeline(f: &FaultRunRecord) -> String {
    let bands: Vec<Band> = f
        .phases
        .iter()
        .map(|p| Band {
            start: p.start_s,
            end: p.start_s + p.duration_s,
            label: p.name.clone(),
            faulty: !p.faults.is_empty() || p.process.is_some(),
        })
        .collect();
    let pts = |q: fn(&crate::results::LatencySummary) -> u64| -> Vec<(f64, f64)> {
        f.intervals
            .iter()
            .filter(|iv| iv.latency.count > 0)
            .map(|iv| (iv.start_s + f.interval_s / 2.0, q(&iv.latency) as f64 / 1e3))
            .collect()
    };
    let series = [
        Series {
            label: "p99".into(),
            color: 0,
            points: pts(|l| l.p99_ns),
            secondary: false,
        },
        Series {
            label: "p50".into(),
            color: 0,
            points: pts(|l| l.p50_ns),
            secondary: true,
        },
    ];
    let errors: Vec<(f64, f64)> = f
        .intervals
        .iter()
        .map(|iv| {
            (
                iv.start_s + f.interval_s / 2.0,
                100.0 * iv.errors as f64 / iv.calls.max(1) as f64,
            )
        })
        .collect();
    charts::fault_timeline(
        &format!("{} · {} (errors % in red)", f.plan, label(f)),
        &bands,
        &series,
        &errors,
    )
}

/// Appends the HTML fault section (nothing when the results hold no fault run).
pub fn html_section(out: &mut String, results: &Results) {
    if results.fault_runs.is_empty() {
        return;
    }
    out.push_str("<h2>Fault runs</h2>");
    out.push_str(
        "<p>Each plan runs an open loop through the fault proxy. Its first phase is clean and \
         goes through the same proxy: it is the baseline every fault phase is compared with. \
         Requests are charged to the phase they were sent in; latency is that of successful \
         calls, from the intended start. <em>Detected</em>: from the fault's start to the first \
         failed call; <em>first ok</em>: from the heal to the first success; <em>p99 back</em>: \
         from the heal to the first rolling window whose p99 is within 2× of the clean p99.</p>",
    );
    for plan in plans(results) {
        let runs: Vec<&FaultRunRecord> = results
            .fault_runs
            .iter()
            .filter(|f| f.plan == plan)
            .collect();
        let _ = write!(out, "<h3>{}</h3>", escape(plan));
        if let Some(first) = runs.first() {
            let phases: Vec<String> = first
                .phases
                .iter()
                .map(|p| {
                    let what = p
                        .faults
                        .iter()
                        .cloned()
                        .chain(p.process.iter().map(|x| format!("process {x}")))
                        .collect::<Vec<_>>();
                    format!(
                        "{} {:.1} s{}",
                        escape(&p.name),
                        p.duration_s,
                        if what.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", escape(&what.join(", ")))
                        }
                    )
                })
                .collect();
            let _ = write!(
                out,
                "<p>{}, open loop at {}, {} B; phases: {}.</p>",
                escape(&first.params.method),
                rate(first.params.rate.unwrap_or(0.0)),
                first.params.payload_bytes,
                phases.join(" → ")
            );
        }
        out.push_str(
            "<div class=\"scroll\"><table><thead><tr><th class=\"l\">transport</th>\
             <th class=\"l\">phase</th><th>sent</th><th>ok</th><th>failed</th><th>timed out</th>\
             <th>errors</th><th>ok/s</th><th>p50</th><th>p99</th><th>Δp50</th><th>Δp99</th>\
             <th>detected</th><th>first ok</th><th>p99 back</th></tr></thead><tbody>",
        );
        for f in &runs {
            for (i, p) in f.phases.iter().enumerate() {
                let rec = f.recovery.iter().find(|r| r.phase == p.name);
                let _ = write!(
                    out,
                    "<tr{}><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    if f.validity.valid {
                        ""
                    } else {
                        " class=\"invalid\""
                    },
                    if i == 0 {
                        escape(&label(f))
                    } else {
                        String::new()
                    },
                    escape(&p.name),
                    p.sent,
                    p.ok,
                    p.failed,
                    p.timed_out,
                    p.error_rate * 100.0,
                    rate(p.throughput_per_s),
                    if p.ok > 0 {
                        dur(p.latency.p50_ns)
                    } else {
                        "—".into()
                    },
                    if p.ok > 0 {
                        dur(p.latency.p99_ns)
                    } else {
                        "—".into()
                    },
                    rec.filter(|_| p.ok > 0)
                        .map_or(String::new(), |r| signed(r.p50_rise_ns)),
                    rec.filter(|_| p.ok > 0)
                        .map_or(String::new(), |r| signed(r.p99_rise_ns)),
                    rec.map_or(String::new(), |r| ms(r.detected_ms)),
                    rec.map_or(String::new(), |r| ms(r.first_success_ms)),
                    rec.map_or(String::new(), |r| ms(r.p99_recovered_ms)),
                );
            }
            // The accounting is a sentence, not a figure: a row of its own under the run's
            // phases, as wide as the table, so it is never cut off on a narrow screen.
            let _ = write!(
                out,
                "<tr class=\"acct\"><td></td><td class=\"l\" colspan=\"14\">{}</td></tr>",
                escape(&accounting(f))
            );
        }
        out.push_str("</tbody></table></div>");
        for f in &runs {
            out.push_str(&timeline(f));
            if !f.events.is_empty() {
                out.push_str("<p class=\"muted\">");
                for e in &f.events {
                    let _ = write!(out, "{:.2} s: {}. ", e.at_s, escape(&e.what));
                }
                out.push_str("</p>");
            }
            for r in &f.validity.reasons {
                let _ = write!(out, "<p class=\"invalid\">INVALID: {}</p>", escape(r));
            }
        }
    }
}

/// Every request of a fault run accounted for, in one line.
fn accounting(f: &FaultRunRecord) -> String {
    let a = &f.accounting;
    let mut s = format!(
        "accounting: {} sent = {} ok + {} failed + {} timed out",
        a.sent, a.ok, a.failed, a.timed_out
    );
    if a.unanswered > 0 {
        s.push_str(&format!(" + {} unanswered", a.unanswered));
    }
    s.push_str(if a.balanced { " ✓" } else { " — MISMATCH" });
    if a.unsent > 0 {
        s.push_str(&format!("; {} due never sent", a.unsent));
    }
    s
}

/// Appends the recovery figures for `summary.md`.
pub fn markdown_section(out: &mut String, results: &Results) {
    if results.fault_runs.is_empty() {
        return;
    }
    out.push_str("## Fault runs\n\n");
    out.push_str(
        "| plan | transport | phase | errors | p50 (Δ vs clean) | p99 | detected | first ok | p99 back | accounting |\n",
    );
    out.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|---|\n");
    for f in &results.fault_runs {
        let a = &f.accounting;
        let acct = format!(
            "{} sent, {} ok, {} failed, {} timed out{}",
            a.sent,
            a.ok,
            a.failed,
            a.timed_out,
            if a.balanced {
                String::new()
            } else {
                format!(
                    ", **{} unaccounted**",
                    a.sent.abs_diff(a.ok + a.failed + a.timed_out) + a.unanswered
                )
            }
        );
        for r in &f.recovery {
            let Some(p) = f.phases.iter().find(|p| p.name == r.phase) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1}% | {} | {} | {} | {} | {} | {} |",
                f.plan,
                label(f),
                p.name,
                p.error_rate * 100.0,
                if p.ok > 0 {
                    format!("{} ({})", dur(p.latency.p50_ns), signed(r.p50_rise_ns))
                } else {
                    "—".into()
                },
                if p.ok > 0 {
                    dur(p.latency.p99_ns)
                } else {
                    "—".into()
                },
                ms(r.detected_ms),
                ms(r.first_success_ms),
                ms(r.p99_recovered_ms),
                acct
            );
        }
    }
    out.push('\n');
}
