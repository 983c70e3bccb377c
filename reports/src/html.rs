//! `report.html`: one self-contained page (inline CSS and SVG, no URL of any kind) rendered
//! from saved results: headline table, the floor, a percentile spectrum and latency over
//! time per load point, and the conformance matrix. Readable on a laptop and on a phone.

use std::fmt::Write;

use crate::charts::{self, Series, css_color};
use crate::conformance::Verdict;
use crate::histogram::decode;
use crate::results::{LatencySummary, Results, RunRecord};
use crate::setup;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Nanoseconds as a short human string (`12.3 µs`, `4.56 ms`).
pub fn dur(ns: u64) -> String {
    let ns = ns as f64;
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// A rate as a short string (`12.3k/s`).
pub fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M/s", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.1}k/s", r / 1e3)
    } else {
        format!("{r:.0}/s")
    }
}

pub(crate) const CSS: &str = r#"
:root { --fg:#1d1d1f; --muted:#6e6e73; --line:#e3e3e8; --bg:#fff; --bad:#b3261e; --ok:#1e7d32; --warn:#8a5a00; }
* { box-sizing: border-box; }
body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--fg); background: var(--bg); margin: 0 auto; max-width: 1100px; padding: 12px; }
h1 { font-size: 1.5em; margin: .4em 0 .2em; }
h2 { font-size: 1.2em; margin: 1.6em 0 .4em; border-bottom: 1px solid var(--line); padding-bottom: .2em; }
h3 { font-size: 1.05em; margin: 1.2em 0 .3em; }
p, li { max-width: 80ch; }
.muted { color: var(--muted); }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: .4em 0; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: #f5f5f7; font-weight: 600; }
td.l, th.l { text-align: left; }
tr.group td { background: #fafafa; font-weight: 600; text-align: left; white-space: normal; }
tr.acct td { color: var(--muted); font-size: .92em; white-space: normal; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-right: .35em; vertical-align: -1px; }
.valid { color: var(--ok); }
.invalid { color: var(--bad); font-weight: 600; }
.pass { background: #e7f5e9; color: var(--ok); }
.fail { background: #fbe9e7; color: var(--bad); font-weight: 600; }
.unsupported { background: #f3f3f3; color: var(--muted); }
.banner { border: 1px solid #f0c36d; background: #fff8e6; padding: 8px 12px; border-radius: 6px; margin: .6em 0; color: var(--warn); }
.chart svg { width: 100%; height: auto; max-width: 640px; display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 8px 24px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: .4em 0; }
dt { color: var(--muted); }
dd { margin: 0; word-break: break-word; }
details { margin: .4em 0; }
summary { cursor: pointer; }
@media (max-width: 600px) { body { font-size: 14px; padding: 8px; } th, td { padding: 3px 5px; } }
"#;

fn points(results: &Results) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in &results.runs {
        if !v.contains(&r.point) {
            v.push(r.point.clone());
        }
    }
    v
}

fn transports(results: &Results) -> Vec<String> {
    let mut v = results.transports.clone();
    for r in &results.runs {
        if !v.contains(&r.transport) {
            v.push(r.transport.clone());
        }
    }
    for c in &results.conformance {
        if !v.contains(&c.transport) {
            v.push(c.transport.clone());
        }
    }
    v
}

/// The headline drawn: throughput, and p50 (solid) before p99 (light), per point and
/// transport, so a reader sees the ranking before reading the table.
fn headline_charts(out: &mut String, results: &Results, ts: &[String]) {
    let cats = points(results);
    let series = |value: &dyn Fn(&RunRecord) -> (f64, Option<f64>)| -> Vec<charts::BarSeries> {
        ts.iter()
            .filter(|t| results.runs.iter().any(|r| &r.transport == *t))
            .map(|t| {
                let runs: Vec<Option<&RunRecord>> = cats
                    .iter()
                    .map(|p| {
                        results
                            .runs
                            .iter()
                            .find(|r| &r.transport == t && &r.point == p)
                    })
                    .collect();
                charts::BarSeries {
                    label: t.clone(),
                    color: color_of(ts, t),
                    values: runs.iter().map(|r| r.map(value)).collect(),
                    trusted: runs
                        .iter()
                        .map(|r| r.is_none_or(|r| r.validity.valid))
                        .collect(),
                }
            })
            .collect()
    };
    let throughput = series(&|r| (r.summary.throughput_per_s, None));
    let latency = series(&|r| {
        (
            r.summary.latency.p50_ns as f64 / 1e3,
            Some(r.summary.latency.p99_ns as f64 / 1e3),
        )
    });
    out.push_str("<div class=\"grid\"><div class=\"chart\">");
    out.push_str(&charts::bars(&charts::Bars {
        title: "throughput (calls/s; outline: not valid)",
        x_desc: "calls/s",
        format: &rate,
        categories: &cats,
        series: &throughput,
        // inproc's millions beside a broker's thousands: only a log axis shows both.
        log: true,
    }));
    out.push_str("</div><div class=\"chart\">");
    out.push_str(&charts::bars(&charts::Bars {
        title: "latency: p50 (solid), p99 (light); outline: not valid",
        x_desc: "latency",
        format: &|us| dur((us * 1e3) as u64),
        categories: &cats,
        series: &latency,
        log: true,
    }));
    out.push_str("</div></div>");
}

fn color_of(transports: &[String], t: &str) -> usize {
    transports.iter().position(|x| x == t).unwrap_or(0)
}

fn swatch(transports: &[String], t: &str) -> String {
    format!(
        "<span class=\"swatch\" style=\"background:{}\"></span>{}",
        css_color(color_of(transports, t)),
        escape(t)
    )
}

/// Quantiles for a spectrum: x = 1/(1-q) from 1 to `count` in tenths of a decade.
fn spectrum_points(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.is_empty() {
        return pts;
    }
    let limit = (h.len() as f64).max(10.0);
    for k in 0..=70 {
        let x = 10f64.powf(f64::from(k) / 10.0);
        if x > limit {
            break;
        }
        let q = 1.0 - 1.0 / x;
        pts.push((x, h.value_at_quantile(q) as f64 / 1e3));
    }
    pts.push((limit, h.max() as f64 / 1e3));
    pts
}

/// An open loop's schedule in one line: rate, due, sent, never sent, achieved.
pub fn offered_text(o: &crate::results::OfferedLoad) -> String {
    let mut t = format!(
        "{} offered: {} requests due, {} sent",
        rate(o.rate_per_s),
        o.due,
        o.sent
    );
    if o.unsent > 0 {
        let _ = write!(t, ", {} never sent", o.unsent);
        if let Some(l) = &o.latency_with_unsent {
            let _ = write!(
                t,
                " (with them at their lower bound: p50 ≥ {}, p99 ≥ {})",
                dur(l.p50_ns),
                dur(l.p99_ns)
            );
        }
    }
    let _ = write!(t, "; achieved {}", rate(o.achieved_per_s));
    t
}

fn validity_cell(r: &RunRecord) -> String {
    let mut cell = if r.validity.valid {
        "<span class=\"valid\">valid</span>".to_owned()
    } else {
        format!(
            "<span class=\"invalid\" title=\"{}\">{}</span>",
            escape(&r.validity.why()),
            r.validity.label()
        )
    };
    let breaches: Vec<String> = r
        .breaches()
        .map(|b| format!("{} (measured {})", b.threshold, b.measured))
        .collect();
    if !breaches.is_empty() {
        let _ = write!(
            cell,
            " <span class=\"invalid\" title=\"{}\">{} threshold{} breached</span>",
            escape(&breaches.join("; ")),
            breaches.len(),
            if breaches.len() == 1 { "" } else { "s" }
        );
    }
    if let Some(line) = r.repeats_line() {
        let _ = write!(cell, " <span class=\"muted\">{}</span>", escape(&line));
    }
    cell
}

fn cpu_cell(r: &RunRecord) -> String {
    let s = &r.summary;
    let server = s
        .server
        .as_ref()
        .map_or("–".to_owned(), |u| format!("{:.1}", u.cpu_us_per_call));
    format!("{:.1} / {server}", s.client.cpu_us_per_call)
}

fn headline(out: &mut String, results: &Results, ts: &[String]) {
    let floor_p50 = results.floor.as_ref().map(|f| f.latency.p50_ns);
    out.push_str("<div class=\"scroll\"><table><thead><tr><th class=\"l\">load point</th><th class=\"l\">transport</th><th>throughput</th><th>p50</th><th>p99</th><th>p99.9</th><th>CPU µs/call<br>client / server</th>");
    if floor_p50.is_some() {
        out.push_str("<th>p50 ÷ floor</th>");
    }
    out.push_str("<th class=\"l\">validity</th></tr></thead><tbody>");
    for p in points(results) {
        let runs: Vec<&RunRecord> = results.runs.iter().filter(|r| r.point == p).collect();
        let desc = runs.first().map(|r| describe(r)).unwrap_or_default();
        let _ = write!(
            out,
            "<tr class=\"group\"><td colspan=\"9\"><a href=\"#p-{}\">{}</a> <span class=\"muted\">{}</span></td></tr>",
            escape(&p),
            escape(&p),
            escape(&desc)
        );
        for r in runs {
            let l = &r.summary.latency;
            let _ = write!(
                out,
                "<tr><td></td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                swatch(ts, &r.transport),
                rate(r.summary.throughput_per_s),
                dur(l.p50_ns),
                dur(l.p99_ns),
                dur(l.p999_ns),
                cpu_cell(r)
            );
            if let Some(f) = floor_p50 {
                let ratio = l.p50_ns as f64 / f.max(1) as f64;
                let _ = if ratio < 0.1 {
                    write!(out, "<td>{ratio:.3}×</td>")
                } else {
                    write!(out, "<td>{ratio:.2}×</td>")
                };
            }
            let _ = write!(out, "<td class=\"l\">{}</td></tr>", validity_cell(r));
        }
    }
    out.push_str("</tbody></table></div>");
}

/// Connection setup per transport and mode, and each TLS run beside its plaintext twin.
fn setup_section(out: &mut String, results: &Results, ts: &[String]) {
    let rows = setup::setup_rows(results);
    if rows.is_empty() {
        return;
    }
    out.push_str("<h2>Connection setup and the cost of TLS</h2>");
    out.push_str("<p class=\"muted\">Before each load point's warm-up, 16 new connections in a row, each with its first 0-byte unary call (so TCP/QUIC and TLS handshakes, HTTP/2 settings and broker sessions are all in); the table shows each transport's best point.</p>");
    out.push_str("<div class=\"scroll\"><table><thead><tr><th class=\"l\">transport</th><th class=\"l\">TLS</th><th>setups</th><th>p50</th><th>p90</th><th>max</th></tr></thead><tbody>");
    for r in &rows {
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            swatch(ts, r.transport),
            escape(r.tls),
            r.setup.count,
            dur(r.setup.p50_ns),
            dur(r.setup.p90_ns),
            dur(r.setup.max_ns)
        );
    }
    out.push_str("</tbody></table></div>");
    let pairs = setup::tls_pairs(results);
    if pairs.is_empty() {
        return;
    }
    out.push_str("<p>Each TLS point beside the same point in plaintext (same transport and parameters): plaintext → TLS, and the change.</p>");
    out.push_str("<div class=\"scroll\"><table><thead><tr><th class=\"l\">transport</th><th class=\"l\">point</th><th class=\"l\">TLS</th><th>setup p50</th><th>p50</th><th>p99</th><th>throughput</th><th>client CPU µs/call</th><th>server CPU µs/call</th></tr></thead><tbody>");
    for p in pairs {
        let (a, b) = (&p.plain.summary, &p.tls.summary);
        let ns = |old: u64, new: u64| {
            format!(
                "{} → {} <span class=\"muted\">{}</span>",
                dur(old),
                dur(new),
                setup::change(old as f64, new as f64)
            )
        };
        let num = |old: f64, new: f64, f: &dyn Fn(f64) -> String| {
            format!(
                "{} → {} <span class=\"muted\">{}</span>",
                f(old),
                f(new),
                setup::change(old, new)
            )
        };
        let cpu = |v: f64| format!("{v:.1}");
        let setup_cell = match (a.connect, b.connect) {
            (Some(x), Some(y)) => ns(x.p50_ns, y.p50_ns),
            _ => "–".into(),
        };
        let server_cpu = match (&a.server, &b.server) {
            (Some(x), Some(y)) => num(x.cpu_us_per_call, y.cpu_us_per_call, &cpu),
            _ => "–".into(),
        };
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\"><a href=\"#p-{}\">{}</a></td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            swatch(ts, &p.tls.transport),
            escape(&p.tls.point),
            escape(&p.tls.point),
            escape(&p.tls.params.tls),
            setup_cell,
            ns(a.latency.p50_ns, b.latency.p50_ns),
            ns(a.latency.p99_ns, b.latency.p99_ns),
            num(a.throughput_per_s, b.throughput_per_s, &rate),
            num(a.client.cpu_us_per_call, b.client.cpu_us_per_call, &cpu),
            server_cpu
        );
    }
    out.push_str("</tbody></table></div>");
}

/// A one-line description of a run's parameters.
pub fn describe(r: &RunRecord) -> String {
    let p = &r.params;
    let mut s = match p.mode.as_str() {
        "open" => format!(
            "{} open loop, {} {}, ≤{} in flight",
            p.method,
            p.schedule.as_deref().unwrap_or(""),
            rate(p.rate.unwrap_or(0.0)),
            p.max_in_flight.unwrap_or(0)
        ),
        _ => format!(
            "{} closed loop, {} in flight",
            p.method,
            p.concurrency.unwrap_or(0)
        ),
    };
    let _ = write!(s, ", {} conn, {} B", p.connections, p.payload_bytes);
    if p.tls != "none" {
        let _ = write!(s, ", {}", p.tls);
    }
    if let Some(rsz) = p.response_bytes {
        let _ = write!(s, " → {rsz} B");
    }
    if p.method != "Unary" {
        let _ = write!(s, ", {} msgs/call", p.messages_per_call);
    }
    match (p.duration_s, p.requests) {
        (Some(d), _) => {
            let _ = write!(s, ", {d} s");
        }
        (None, Some(n)) => {
            let _ = write!(s, ", {n} calls");
        }
        _ => {}
    }
    s
}

fn latency_row(out: &mut String, label: &str, l: &LatencySummary) {
    let _ = write!(
        out,
        "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(label),
        l.count,
        dur(l.p50_ns),
        dur(l.p90_ns),
        dur(l.p99_ns),
        dur(l.p999_ns),
        dur(l.p9999_ns),
        dur(l.max_ns)
    );
}

fn cpus(v: &[usize]) -> String {
    if v.is_empty() {
        "?".into()
    } else {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn mib(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

/// A ramped run's stages, each summarised on its own (requests charged to the stage they were
/// due in).
fn stages_table(out: &mut String, r: &RunRecord) {
    if r.stages.is_empty() {
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table><thead><tr><th class=\"l\">stage</th><th>offered</th>\
         <th>due</th><th>never sent</th><th>achieved</th><th>errors</th><th>p50</th><th>p99</th>\
         <th>lag p99</th><th class=\"l\">verdict</th></tr></thead><tbody>",
    );
    for st in &r.stages {
        let offered = if st.rate_from == st.rate_to {
            rate(st.rate_to)
        } else {
            format!("{} → {}", rate(st.rate_from), rate(st.rate_to))
        };
        let verdict = if st.why.is_empty() {
            st.verdict.clone()
        } else {
            format!("{}: {}", st.verdict, st.why)
        };
        let _ = write!(
            out,
            "<tr{}><td class=\"l\">{} ({:.1}–{:.1} s)</td><td>{offered}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            if st.verdict == "valid" {
                ""
            } else {
                " class=\"invalid\""
            },
            st.index + 1,
            st.start_s,
            st.start_s + st.duration_s,
            st.due,
            st.unsent,
            rate(st.achieved_per_s),
            st.errors,
            dur(st.latency.p50_ns),
            dur(st.latency.p99_ns),
            dur(st.generator_lag.p99_ns),
            escape(&verdict)
        );
    }
    out.push_str("</tbody></table></div>");
}

fn run_details(out: &mut String, r: &RunRecord, ts: &[String]) {
    let s = &r.summary;
    let _ = write!(
        out,
        "<details><summary>{} details</summary>",
        swatch(ts, &r.transport)
    );
    out.push_str("<div class=\"scroll\"><table><thead><tr><th class=\"l\"></th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th></tr></thead><tbody>");
    let label = if r.params.mode == "open" {
        "latency (from intended start)"
    } else {
        "latency"
    };
    latency_row(out, label, &s.latency);
    if let Some(l) = &s.service_time {
        latency_row(out, "service time (from actual start)", l);
    }
    if let Some(l) = &s.generator_lag {
        latency_row(out, "generator lag", l);
    }
    if let Some(l) = &s.message_latency {
        latency_row(out, "per message", l);
    }
    out.push_str("</tbody></table></div>");
    stages_table(out, r);
    out.push_str("<dl>");
    let mut dd = |k: &str, v: String| {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), v);
    };
    dd(
        "calls",
        format!(
            "{} in {:.2} s ({}), {} failed, {} unanswered",
            s.calls,
            s.elapsed_s,
            rate(s.throughput_per_s),
            s.errors,
            s.incomplete
        ),
    );
    if s.messages_sent + s.messages_received > 0 {
        dd(
            "stream messages",
            format!(
                "{} sent, {} received ({})",
                s.messages_sent,
                s.messages_received,
                rate(s.messages_per_s)
            ),
        );
    }
    dd(
        "status codes",
        escape(
            &s.status_counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    );
    match (&s.bytes, &s.bytes_not_measured) {
        (Some(b), _) => dd(
            "wire bytes per call",
            format!(
                "{:.0} sent, {:.0} received",
                b.sent_per_call, b.received_per_call
            ),
        ),
        (None, Some(why)) => dd("wire bytes per call", format!("not measured: {why}")),
        (None, None) => {}
    }
    if let Some(h) = &s.host {
        dd(
            "host",
            format!(
                "other processes used {:.2} of {} CPUs over the {:.1} s measured; {:.0} ms stolen",
                h.other_cpus, h.cpus, h.window_s, h.steal_ms
            ),
        );
    }
    dd(
        "client",
        format!(
            "{:.1} µs CPU/call (user {:.2} s, sys {:.2} s), peak RSS {}, CPUs {}, worker busy {}",
            s.client.cpu_us_per_call,
            s.client.user_s,
            s.client.system_s,
            mib(s.client.peak_rss_bytes),
            cpus(&s.client.cpus),
            s.worker_busy
                .iter()
                .map(|b| format!("{:.0}%", b * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    dd(
        "server",
        match &s.server {
            Some(u) => format!(
                "{} — {:.1} µs CPU/call (user {:.2} s, sys {:.2} s), peak RSS {}, CPUs {}",
                escape(&r.server.placement),
                u.cpu_us_per_call,
                u.user_s,
                u.system_s,
                mib(u.peak_rss_bytes),
                cpus(&u.cpus)
            ),
            None => escape(&format!(
                "{} ({})",
                r.server.placement,
                r.server.note.as_deref().unwrap_or("not measured")
            )),
        },
    );
    dd("pinning", escape(&r.params.pin));
    if let Some(o) = &r.summary.offered {
        dd("offered load", escape(&offered_text(o)));
    }
    if let Some(why) = &r.validity.unsustained {
        dd(
            "unsustained",
            format!("<span class=\"invalid\">{}</span>", escape(why)),
        );
    }
    for t in &r.thresholds {
        let (class, verdict) = if t.passed {
            ("valid", "kept")
        } else {
            ("invalid", "BREACHED")
        };
        dd(
            "threshold",
            format!(
                "{}: measured {} — <span class=\"{class}\">{verdict}</span>",
                escape(&t.threshold),
                escape(&t.measured)
            ),
        );
    }
    for reason in &r.validity.reasons {
        dd(
            "invalid",
            format!("<span class=\"invalid\">{}</span>", escape(reason)),
        );
    }
    for note in &r.validity.notes {
        dd("note", escape(note));
    }
    out.push_str("</dl></details>");
}

fn point_section(out: &mut String, results: &Results, p: &str, ts: &[String]) {
    let runs: Vec<&RunRecord> = results.runs.iter().filter(|r| r.point == p).collect();
    let Some(first) = runs.first() else { return };
    let _ = write!(
        out,
        "<h3 id=\"p-{}\">{}</h3><p class=\"muted\">{}</p>",
        escape(p),
        escape(p),
        escape(&describe(first))
    );
    let mut spectrum = Vec::new();
    let mut timeline = Vec::new();
    let mut xmax = 0.0f64;
    let mut dropped = Vec::new();
    for r in &runs {
        let c = color_of(ts, &r.transport);
        if let Ok(h) = decode(&r.histograms.latency) {
            spectrum.push(Series {
                label: r.transport.clone(),
                color: c,
                points: spectrum_points(&h),
                secondary: false,
            });
        }
        if let Some(Ok(h)) = r.histograms.service_time.as_deref().map(decode) {
            spectrum.push(Series {
                label: format!("{} service time", r.transport),
                color: c,
                points: spectrum_points(&h),
                secondary: true,
            });
        }
        let drawn = drawn_intervals(r);
        xmax = xmax.max(drawn.end_s);
        if let Some(note) = drawn.dropped {
            dropped.push(note);
        }
        let p99: Vec<(f64, f64)> = drawn
            .points
            .iter()
            .map(|(x, i)| (*x, i.latency.p99_ns as f64 / 1e3))
            .collect();
        let p50: Vec<(f64, f64)> = drawn
            .points
            .iter()
            .map(|(x, i)| (*x, i.latency.p50_ns as f64 / 1e3))
            .collect();
        timeline.push(Series {
            label: format!("{} p99", r.transport),
            color: c,
            points: p99,
            secondary: false,
        });
        timeline.push(Series {
            label: format!("{} p50", r.transport),
            color: c,
            points: p50,
            secondary: true,
        });
    }
    if p == "floor" {
        return;
    }
    out.push_str("<div class=\"grid\"><div class=\"chart\">");
    out.push_str(&charts::spectrum(
        &format!("{p}: latency by percentile"),
        &spectrum,
    ));
    out.push_str("</div><div class=\"chart\">");
    out.push_str(&charts::over_time(
        &format!("{p}: latency over time (1 s intervals)"),
        &timeline,
        xmax,
    ));
    if !dropped.is_empty() {
        let _ = write!(
            out,
            "<p class=\"muted\">Not drawn: {}: too short a last interval for its \
             percentiles to mean anything (its calls are in every other figure).</p>",
            escape(&dropped.join("; "))
        );
    }
    out.push_str("</div></div>");
    for r in runs {
        run_details(out, r, ts);
    }
}

/// A run's intervals as the latency-over-time chart draws them.
struct Drawn<'a> {
    /// Each interval with the x at the middle of the time it covers.
    points: Vec<(f64, &'a crate::results::IntervalRecord)>,
    /// Where the drawn data ends (seconds into the measured phase).
    end_s: f64,
    /// What was left out, said under the chart.
    dropped: Option<String>,
}

/// The intervals worth drawing: the measured phase ends inside its last interval (the last
/// answers trickle in), so that interval may cover a few milliseconds and a call or two, and
/// its "p99" is one sample. A last interval covering less than half an interval is left out
/// (unless it is the only one) and named; the others are drawn at the middle of what they
/// cover.
fn drawn_intervals(r: &RunRecord) -> Drawn<'_> {
    let iv = &r.intervals;
    let len = match iv.as_slice() {
        [a, b, ..] if b.start_s > a.start_s => b.start_s - a.start_s,
        _ => 1.0,
    };
    let end = r.summary.elapsed_s;
    let covered = |i: &crate::results::IntervalRecord| {
        if end > i.start_s {
            (i.start_s + len).min(end) - i.start_s
        } else {
            len
        }
    };
    let mut dropped = None;
    let mut keep = iv.len();
    if let Some(last) = iv.last()
        && iv.len() > 1
        && covered(last) < len / 2.0
    {
        keep -= 1;
        dropped = Some(format!(
            "{}'s last {} ({} call{})",
            r.transport,
            dur((covered(last) * 1e9) as u64),
            last.calls,
            if last.calls == 1 { "" } else { "s" }
        ));
    }
    let points: Vec<_> = iv[..keep]
        .iter()
        .map(|i| (i.start_s + covered(i) / 2.0, i))
        .collect();
    let end_s = iv[..keep]
        .iter()
        .map(|i| i.start_s + covered(i))
        .fold(0.0, f64::max);
    Drawn {
        points,
        end_s,
        dropped,
    }
}

fn conformance(out: &mut String, results: &Results, ts: &[String]) {
    if results.conformance.is_empty() {
        out.push_str("<p class=\"muted\">Conformance was not run.</p>");
        return;
    }
    let cols: Vec<&String> = ts
        .iter()
        .filter(|t| results.conformance.iter().any(|c| &c.transport == *t))
        .collect();
    let mut cases: Vec<(&str, &str)> = Vec::new();
    for c in &results.conformance {
        if !cases.iter().any(|(n, _)| *n == c.case) {
            cases.push((&c.case, &c.group));
        }
    }
    for t in &cols {
        let (mut p, mut f, mut u) = (0, 0, 0);
        for c in results.conformance.iter().filter(|c| &c.transport == *t) {
            match c.verdict {
                Verdict::Pass => p += 1,
                Verdict::Fail => f += 1,
                Verdict::Unsupported => u += 1,
            }
        }
        let _ = write!(
            out,
            "<p>{}: {p} pass, {} fail, {u} unsupported</p>",
            swatch(ts, t),
            if f > 0 {
                format!("<span class=\"invalid\">{f}</span>")
            } else {
                "0".into()
            }
        );
    }
    out.push_str("<div class=\"scroll\"><table><thead><tr><th class=\"l\">group</th><th class=\"l\">case</th>");
    for t in &cols {
        let _ = write!(out, "<th>{}</th>", escape(t));
    }
    out.push_str("</tr></thead><tbody>");
    for (case, group) in cases {
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td>",
            escape(group),
            escape(case)
        );
        for t in &cols {
            match results
                .conformance
                .iter()
                .find(|c| c.case == case && &c.transport == *t)
            {
                Some(c) => {
                    let _ = write!(
                        out,
                        "<td class=\"{}\" title=\"{}\">{}</td>",
                        c.verdict.as_str(),
                        escape(c.detail.as_deref().unwrap_or("")),
                        c.verdict.as_str()
                    );
                }
                None => out.push_str("<td>–</td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    let reasons: Vec<_> = results
        .conformance
        .iter()
        .filter(|c| c.verdict != Verdict::Pass && c.detail.is_some())
        .collect();
    if !reasons.is_empty() {
        out.push_str("<details><summary>failures and unsupported reasons</summary><ul>");
        for c in reasons {
            let _ = write!(
                out,
                "<li><b>{}</b> {} — {}: {}</li>",
                escape(&c.transport),
                escape(&c.case),
                c.verdict.as_str(),
                escape(c.detail.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</ul></details>");
    }
}

/// Renders the whole report.
pub fn render(all: &Results) -> String {
    let fixed = all.without_steps();
    let results = &*fixed;
    let ts = transports(all);
    let mut out = String::with_capacity(256 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>wirebench — {}</title><style>{CSS}</style></head><body>",
        escape(&results.suite.name)
    );
    let e = &results.environment;
    // The description is a sentence of its own (when the suite has one); the facts of the run
    // follow on their own line, so neither starts with a dangling separator.
    let git = match &e.git_sha {
        Some(sha) => format!(
            "git {}{}",
            &sha[..sha.len().min(12)],
            if e.git_dirty == Some(true) {
                " (dirty)"
            } else {
                ""
            }
        ),
        None => String::new(),
    };
    let facts = [
        format!("started {}", results.started_at),
        e.cpu_model.clone(),
        format!("{} cores", e.cores),
        e.build_profile.clone(),
        git,
    ]
    .into_iter()
    .filter(|s| !s.trim().is_empty())
    .collect::<Vec<_>>()
    .join(" · ");
    let _ = write!(out, "<h1>wirebench: {}</h1>", escape(&results.suite.name));
    if !results.suite.description.trim().is_empty() {
        let _ = write!(out, "<p>{}</p>", escape(&results.suite.description));
    }
    let _ = write!(out, "<p class=\"muted\">{}</p>", escape(&facts));
    if e.build_profile != "release" {
        out.push_str("<div class=\"banner\">This is a debug build: its numbers are not representative. Use <code>cargo run --release</code>.</div>");
    }
    if results.interrupted || !results.complete {
        out.push_str("<div class=\"banner\">This run did not complete (interrupted or still running): the report shows what finished.</div>");
    }
    // One banner per kind of run whose numbers need a second look, with how many there are.
    let count = |keep: &dyn Fn(&RunRecord) -> bool| results.runs.iter().filter(|r| keep(r)).count();
    let banners: [(usize, &str); 3] = [
        (
            count(&|r| r.validity.label() == "INVALID"),
            "runs are marked INVALID: their numbers measure the load generator, not the \
             transport. The reasons are in each run's details.",
        ),
        (
            count(&|r| r.breaches().next().is_some()),
            "runs breached a threshold (shown in the headline's validity column and each run's \
             details).",
        ),
        (
            count(&|r| r.validity.label() == "UNSUSTAINED"),
            "open-loop runs are UNSUSTAINED: the system under test could not keep up with the \
             offered rate, so requests queued or were never sent. Their percentiles cover the \
             requests sent; each run's details count the rest.",
        ),
    ];
    for (n, what) in banners {
        if n > 0 {
            let _ = write!(
                out,
                "<div class=\"banner\">{n} of {} {what}</div>",
                results.runs.len()
            );
        }
    }

    out.push_str("<h2>Headline</h2>");
    if results.runs.is_empty() && !all.runs.is_empty() {
        out.push_str(
            "<p class=\"muted\">No fixed load points: this run stepped its load (below).</p>",
        );
    } else if results.runs.is_empty() {
        out.push_str("<p class=\"muted\">No load runs.</p>");
    } else {
        headline(&mut out, results, &ts);
        headline_charts(&mut out, results, &ts);
        out.push_str("<p class=\"muted\">Open-loop latency is measured from each request's intended start (coordinated omission corrected). CPU is user + system time of each process over the measured phase divided by calls. Scheduler ticks (4 ms on these machines) show up as p99.9 tails under load: a tail near 4 ms is the kernel's, not the transport's.</p>");
    }

    crate::curves::html_section(&mut out, all, &ts);

    out.push_str("<h2>The floor</h2>");
    match &results.floor {
        Some(f) => {
            let _ = write!(
                out,
                "<p>A blocking TCP ping-pong between two threads, {} B each way, one message in flight: what the kernel's loopback alone costs. Measured in this run for {:.1} s (pin {}; client CPUs {}, server CPUs {}).</p>",
                f.payload_bytes,
                f.duration_s,
                escape(&f.pin),
                cpus(&f.client_cpus),
                cpus(&f.server_cpus)
            );
            out.push_str("<div class=\"scroll\"><table><thead><tr><th class=\"l\"></th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th></tr></thead><tbody>");
            latency_row(&mut out, "round trip", &f.latency);
            out.push_str("</tbody></table></div>");
        }
        None => out.push_str("<p class=\"muted\">The floor was not measured in this run.</p>"),
    }

    setup_section(&mut out, results, &ts);

    if !results.runs.is_empty() {
        out.push_str("<h2>Load points</h2>");
        for p in points(results) {
            point_section(&mut out, results, &p, &ts);
        }
    }
    crate::faults::html_section(&mut out, results);
    if !results.skipped.is_empty() || !results.errors.is_empty() {
        out.push_str("<h2>Not run</h2><ul>");
        for s in &results.skipped {
            let _ = write!(
                out,
                "<li>{} × {}: unsupported — {}</li>",
                escape(&s.transport),
                escape(&s.point),
                escape(&s.reason)
            );
        }
        for e in &results.errors {
            let _ = write!(
                out,
                "<li class=\"invalid\">{} × {}: failed — {}</li>",
                escape(&e.transport),
                escape(&e.point),
                escape(&e.error)
            );
        }
        out.push_str("</ul>");
    }

    out.push_str("<h2>Conformance</h2>");
    conformance(&mut out, results, &ts);

    out.push_str("<h2>Environment</h2><dl>");
    let mem = e.memory_bytes.map_or("?".into(), |b| {
        format!("{:.1} GiB", b as f64 / 1073741824.0)
    });
    for (k, v) in [
        ("tool", results.tool.clone()),
        (
            "suite",
            format!("{} ({})", results.suite.name, results.suite.source),
        ),
        ("started", results.started_at.clone()),
        (
            "finished",
            results.finished_at.clone().unwrap_or_else(|| "—".into()),
        ),
        (
            "git",
            format!(
                "{}{}",
                e.git_sha.clone().unwrap_or_else(|| "?".into()),
                if e.git_dirty == Some(true) {
                    " (uncommitted changes)"
                } else {
                    ""
                }
            ),
        ),
        ("rustc", e.rustc.clone()),
        ("build", e.build_profile.clone()),
        ("kernel", e.kernel.clone()),
        ("os", e.os.clone()),
        ("cpu", format!("{} × {}", e.cores, e.cpu_model)),
        ("memory", mem),
        ("host", e.hostname.clone().unwrap_or_else(|| "?".into())),
        ("command", e.command.join(" ")),
    ] {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    out.push_str("</dl>");
    if !results.suite.toml.is_empty() {
        let _ = write!(
            out,
            "<details><summary>the suite as run</summary><pre>{}</pre></details>",
            escape(&results.suite.toml)
        );
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{IntervalRecord, SuiteRecord};

    fn run_with_intervals(starts: &[f64], elapsed_s: f64) -> RunRecord {
        let mut r = RunRecord {
            transport: "tcp".into(),
            point: "p".into(),
            ..RunRecord::default()
        };
        r.summary.elapsed_s = elapsed_s;
        r.intervals = starts
            .iter()
            .map(|&start_s| IntervalRecord {
                start_s,
                calls: 1,
                ..IntervalRecord::default()
            })
            .collect();
        r
    }

    #[test]
    fn a_sliver_of_a_last_interval_is_not_drawn_and_is_named() {
        // 2 s measured, the last answer 3 ms after: a third "interval" of one call.
        let r = run_with_intervals(&[0.0, 1.0, 2.0], 2.003);
        let d = drawn_intervals(&r);
        assert_eq!(d.points.len(), 2);
        assert_eq!(d.points[1].0, 1.5);
        assert_eq!(d.end_s, 2.0, "the axis ends with the data");
        assert_eq!(d.dropped.as_deref(), Some("tcp's last 3.00 ms (1 call)"));
        // Most of an interval is drawn, at the middle of what it covers.
        let r = run_with_intervals(&[0.0, 1.0, 2.0], 2.8);
        let d = drawn_intervals(&r);
        assert_eq!(d.points.len(), 3);
        assert!((d.points[2].0 - 2.4).abs() < 1e-9);
        assert!((d.end_s - 2.8).abs() < 1e-9);
        assert!(d.dropped.is_none());
        // A run shorter than one interval still has its one point.
        let r = run_with_intervals(&[0.0], 0.3);
        let d = drawn_intervals(&r);
        assert_eq!(d.points.len(), 1);
    }

    #[test]
    fn a_suite_without_a_description_leaves_no_dangling_separator() {
        let results = Results::new(
            "wirebench test".into(),
            "2026-12-08T00:00:00Z".into(),
            Default::default(),
            SuiteRecord {
                name: "mine".into(),
                ..SuiteRecord::default()
            },
        );
        let html = render(&results);
        assert!(
            html.contains("<p class=\"muted\">started 2026-12-08T00:00:00Z · "),
            "{html}"
        );
        assert!(!html.contains(">· "), "{html}");
    }
}
