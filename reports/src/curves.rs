//! Stepped series (a stepped schedule, or the steps of a capacity search): latency against
//! achieved throughput for every transport on one chart per series, the knees ringed and the
//! SLO drawn, with the knees in a table and every step's figures beneath. Steps are runs of
//! their own in `results.json`; here they are drawn as the curve they make, not as dozens of
//! separate points.

use std::fmt::Write;

use crate::charts::{self, Curve, LatencyThroughput};
use crate::html::{dur, escape, rate};
use crate::results::{CapacityRecord, Results, RunRecord};

/// The series of stepped runs, in the order they first appear.
pub fn series(results: &Results) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in &results.runs {
        if let Some(s) = &r.step
            && !v.contains(&s.series)
        {
            v.push(s.series.clone());
        }
    }
    v
}

/// The runs of `series` on `transport` that make its curve: for a capacity search, the run
/// that decided each rate (a rate run again near the SLO counts once); else every step. In the
/// order of the stepped value.
fn curve_runs<'a>(
    results: &'a Results,
    series: &str,
    transport: &str,
    capacity: Option<&CapacityRecord>,
) -> Vec<&'a RunRecord> {
    let mut runs: Vec<&RunRecord> = results
        .runs
        .iter()
        .filter(|r| r.transport == transport)
        .filter(|r| r.step.as_ref().is_some_and(|s| s.series == series))
        .filter(|r| capacity.is_none_or(|c| c.steps.iter().any(|s| s.point == r.point)))
        .collect();
    runs.sort_by(|a, b| {
        let v = |r: &RunRecord| r.step.as_ref().map_or(0.0, |s| s.value);
        v(a).total_cmp(&v(b))
    });
    runs
}

/// The HTML section, when the results hold stepped runs.
pub fn html_section(out: &mut String, results: &Results, ts: &[String]) {
    let all = series(results);
    if all.is_empty() {
        return;
    }
    out.push_str("<h2>Latency against throughput</h2>");
    out.push_str(
        "<p>Each step is a run of its own at one offered rate (or concurrency), on the same \
         server; the curve joins the steps in the order of the offered load, at the \
         throughput each achieved. Where the curve turns up, the system is saturated: more \
         offered load buys queueing, not throughput. Steps the generator invalidated are drawn \
         hollow and not joined.</p>",
    );
    for s in all {
        series_section(out, results, &s, ts);
    }
}

fn series_section(out: &mut String, results: &Results, series: &str, ts: &[String]) {
    let capacity: Vec<&CapacityRecord> = results
        .capacity
        .iter()
        .filter(|c| c.series == series)
        .collect();
    let slo_line = capacity.iter().find_map(|c| c.slo_line.clone());
    let quantile = slo_line.as_ref().map_or("p99", |l| l.quantile.as_str());
    let slo_text = capacity.first().map(|c| c.slo.join(", "));
    let _ = write!(out, "<h3>{}</h3>", escape(series));
    if let Some(slo) = &slo_text {
        let _ = write!(
            out,
            "<p>The knee: the highest offered rate whose step met the SLO <b>{}</b> and \
             kept up with its schedule.</p>",
            escape(slo)
        );
        knee_table(out, &capacity, ts);
    }
    let mut curves = Vec::new();
    for t in ts {
        let cap = capacity.iter().copied().find(|c| &c.transport == t);
        let runs = curve_runs(results, series, t, cap);
        if runs.is_empty() {
            continue;
        }
        let at = |r: &RunRecord| {
            (
                r.summary.throughput_per_s,
                r.summary.latency.quantile(quantile).unwrap_or(0) as f64 / 1e3,
            )
        };
        let knee_point = cap.and_then(|c| {
            let knee = c.knee_per_s?;
            let step = c.steps.iter().find(|s| s.rate_per_s == knee)?;
            runs.iter().find(|r| r.point == step.point).map(|r| at(r))
        });
        curves.push(Curve {
            label: match cap.and_then(|c| c.knee_per_s) {
                Some(k) => format!("{t} (knee {})", rate(k)),
                None => t.clone(),
            },
            color: ts.iter().position(|x| x == t).unwrap_or(0),
            points: runs
                .iter()
                .filter(|r| r.validity.reasons.is_empty())
                .map(|r| at(r))
                .collect(),
            apart: runs
                .iter()
                .filter(|r| !r.validity.reasons.is_empty())
                .map(|r| at(r))
                .collect(),
            knee: knee_point,
        });
    }
    let slo_label = slo_line
        .as_ref()
        .map(|l| format!("{} < {}", l.quantile, dur(l.limit_ns)));
    let title = format!("{quantile} latency against achieved throughput");
    let y_desc = format!("{quantile} latency");
    out.push_str("<div class=\"chart\">");
    out.push_str(&charts::latency_throughput(&LatencyThroughput {
        title: &title,
        y_desc: &y_desc,
        curves: &curves,
        slo: slo_line
            .as_ref()
            .zip(slo_label.as_deref())
            .map(|(l, text)| (l.limit_ns as f64 / 1e3, text)),
    }));
    out.push_str("</div>");
    for t in ts {
        let cap = capacity.iter().copied().find(|c| &c.transport == t);
        steps_table(out, results, series, t, cap);
    }
}

fn knee_table(out: &mut String, capacity: &[&CapacityRecord], ts: &[String]) {
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th class=\"l\">transport</th><th>knee</th>\
         <th>missed at</th><th>bracket</th><th>runs</th><th class=\"l\">verdict</th></tr>\
         </thead><tbody>",
    );
    for c in capacity {
        let color = charts::css_color(ts.iter().position(|x| x == &c.transport).unwrap_or(0));
        let decided = matches!(
            c.outcome.as_str(),
            "found" | "above-ceiling" | "below-floor"
        );
        let _ = write!(
            out,
            "<tr{}><td class=\"l\"><span class=\"swatch\" style=\"background:{color}\"></span>{}</td>\
             <td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            if decided { "" } else { " class=\"invalid\"" },
            escape(&c.transport),
            c.knee_per_s.map_or("—".into(), rate),
            c.missed_per_s.map_or("—".into(), rate),
            c.bracket
                .map_or("—".into(), |b| format!("+{:.1}%", 100.0 * b)),
            c.steps.iter().map(|s| s.runs).sum::<u32>(),
            escape(&c.verdict)
        );
    }
    out.push_str("</tbody></table></div>");
}

/// Every step of one transport's series, collapsed: the curve as numbers.
fn steps_table(
    out: &mut String,
    results: &Results,
    series: &str,
    transport: &str,
    capacity: Option<&CapacityRecord>,
) {
    let mut runs: Vec<&RunRecord> = results
        .runs
        .iter()
        .filter(|r| r.transport == transport)
        .filter(|r| r.step.as_ref().is_some_and(|s| s.series == series))
        .collect();
    if runs.is_empty() {
        return;
    }
    runs.sort_by_key(|r| r.step.as_ref().map_or(0, |s| s.index));
    let _ = write!(
        out,
        "<details><summary>{}: {} steps, in the order run</summary><div class=\"scroll\">\
         <table><thead><tr><th class=\"l\">step</th><th>offered</th><th>achieved</th>\
         <th>p50</th><th>p99</th><th>p99.9</th><th>errors</th><th>CPU µs/call client / \
         server</th><th class=\"l\">verdict</th></tr></thead><tbody>",
        escape(transport),
        runs.len()
    );
    for r in runs {
        let s = &r.summary;
        let step = capacity.and_then(|c| c.steps.iter().find(|st| st.point == r.point));
        let verdict = match step {
            Some(st) => format!("{}: {}", st.verdict, st.why),
            None if capacity.is_some() => format!(
                "run again near the SLO (decided with the others at this rate); {}",
                r.validity.label()
            ),
            None => match r.validity.why() {
                w if w.is_empty() => r.validity.label().to_owned(),
                w => format!("{}: {w}", r.validity.label()),
            },
        };
        let offered = match r.step.as_ref() {
            Some(st) if st.knob == "concurrency" => format!("{} in flight", st.value),
            Some(st) => rate(st.value),
            None => "—".into(),
        };
        let errors = if s.calls + s.incomplete == 0 {
            "—".into()
        } else {
            format!(
                "{:.2}%",
                100.0 * (s.errors + s.incomplete) as f64 / (s.calls + s.incomplete) as f64
            )
        };
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{:.1} / {}</td><td class=\"l\">{}</td></tr>",
            escape(&r.point),
            offered,
            rate(s.throughput_per_s),
            dur(s.latency.p50_ns),
            dur(s.latency.p99_ns),
            dur(s.latency.p999_ns),
            errors,
            s.client.cpu_us_per_call,
            s.server
                .as_ref()
                .map_or("—".into(), |u| format!("{:.1}", u.cpu_us_per_call)),
            escape(&verdict)
        );
    }
    out.push_str("</tbody></table></div></details>");
}

/// The Markdown lines: the knees, then each series' steps in one table.
pub fn markdown_section(out: &mut String, results: &Results) {
    if !results.capacity.is_empty() {
        out.push_str("## Capacity\n\n| transport | SLO | knee | missed at | verdict |\n");
        out.push_str("|---|---|--:|--:|---|\n");
        for c in &results.capacity {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                c.transport,
                c.slo.join(", "),
                c.knee_per_s.map_or("—".into(), rate),
                c.missed_per_s.map_or("—".into(), rate),
                c.verdict.replace('|', "\\|")
            );
        }
        out.push('\n');
    }
    // A capacity search's steps are summed up by its knees above; a stepped schedule's are
    // its result.
    let stepped: Vec<&RunRecord> = results
        .runs
        .iter()
        .filter(|r| {
            r.step
                .as_ref()
                .is_some_and(|s| results.capacity.iter().all(|c| c.series != s.series))
        })
        .collect();
    if stepped.is_empty() {
        return;
    }
    out.push_str("## Steps\n\n| step | transport | achieved | p50 | p99 | p99.9 | validity |\n");
    out.push_str("|---|---|--:|--:|--:|--:|---|\n");
    for r in stepped {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.point,
            r.transport,
            rate(r.summary.throughput_per_s),
            dur(r.summary.latency.p50_ns),
            dur(r.summary.latency.p99_ns),
            dur(r.summary.latency.p999_ns),
            r.validity.label()
        );
    }
    out.push('\n');
}
