//! The history as a static site: `index.html` (every run, every change `compare` found, and a
//! headline trend per load point) and one page per transport and point (throughput, p50, p99
//! and client CPU over the runs, the repeats' spread as bars, invalid runs drawn apart,
//! regressions and improvements marked where they happened). Self-contained: inline SVG, no
//! script, no external URL. Each run's own report is `runs/ID/report.html`, linked from its
//! rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{History, HistoryRun, PointFigures};
use crate::charts::{self, Trend, TrendLine, TrendMarker};
use crate::compare::Metric;
use crate::html::{CSS, dur, escape, rate};
use crate::results::write_atomic;

/// The metrics a point page draws, with their axis name and format.
const DRAWN: [(Metric, &str); 4] = [
    (Metric::Throughput, "calls/s"),
    (Metric::P50, "p50"),
    (Metric::P99, "p99"),
    (Metric::CpuClient, "client CPU µs/call"),
];

/// The folder of a run's report, relative to the site.
pub fn report_path(id: &str) -> String {
    format!("runs/{id}/report.html")
}

/// The page of a transport and point, relative to the site.
pub fn point_page(transport: &str, point: &str) -> String {
    let slug: String = format!("{transport}--{point}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("p/{slug}.html")
}

fn format_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Throughput => rate(v),
        Metric::P50 | Metric::P99 | Metric::P999 => dur(v as u64),
        Metric::CpuClient | Metric::CpuServer => format!("{v:.1} µs"),
    }
}

fn short_sha(r: &HistoryRun) -> String {
    match &r.git_sha {
        Some(s) => format!(
            "{}{}",
            &s[..s.len().min(7)],
            if r.git_dirty { "+" } else { "" }
        ),
        None => format!("#{}", r.id.split('-').next().unwrap_or("?")),
    }
}

fn page(title: &str, root: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head><body>{}{body}</body></html>",
        escape(title),
        if root.is_empty() {
            String::new()
        } else {
            format!("<p class=\"muted\"><a href=\"{root}index.html\">wirebench history</a></p>")
        }
    )
}

/// The (transport, point) pairs in the order first seen.
fn pairs(h: &History) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for r in &h.runs {
        for p in &r.points {
            let k = (p.transport.clone(), p.point.clone());
            if !v.contains(&k) {
                v.push(k);
            }
        }
    }
    v
}

/// The machine classes in the order first seen; one line each, never joined.
fn machines(h: &History) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in &h.runs {
        if !v.contains(&r.machine) {
            v.push(r.machine.clone());
        }
    }
    v
}

fn figures<'a>(r: &'a HistoryRun, transport: &str, point: &str) -> Option<&'a PointFigures> {
    r.points
        .iter()
        .find(|p| p.transport == transport && p.point == point)
}

/// One line per machine class for `metric` of a transport and point, and its markers.
fn lines(
    h: &History,
    transport: &str,
    point: &str,
    metric: Metric,
    color_base: usize,
) -> (Vec<TrendLine>, Vec<TrendMarker>) {
    let classes = machines(h);
    let mut out: Vec<TrendLine> = classes
        .iter()
        .enumerate()
        .map(|(i, m)| TrendLine {
            label: if classes.len() == 1 {
                transport.to_owned()
            } else {
                format!("{transport} · {m}")
            },
            color: color_base + i,
            ..TrendLine::default()
        })
        .collect();
    let mut markers = Vec::new();
    for (x, r) in h.runs.iter().enumerate() {
        let Some(f) = figures(r, transport, point) else {
            continue;
        };
        let Some(y) = f.value(metric) else { continue };
        let line = classes.iter().position(|m| *m == r.machine).unwrap_or(0);
        if f.validity == "valid" {
            out[line].points.push((x, y));
            if let Some((lo, hi)) = f.range(metric) {
                out[line].band.push((x, lo, hi));
            }
        } else {
            out[line].apart.push((x, y));
        }
        if let Some(c) = r
            .changes
            .iter()
            .find(|c| c.transport == transport && c.point == point && c.metric == metric)
        {
            markers.push(TrendMarker {
                x,
                y,
                regressed: c.regressed,
            });
        }
    }
    out.retain(|l| !l.points.is_empty() || !l.apart.is_empty());
    (out, markers)
}

fn chart(h: &History, transport: &str, point: &str, metric: Metric, name: &str) -> String {
    let (lines, markers) = lines(h, transport, point, metric, 0);
    let labels: Vec<String> = h.runs.iter().map(short_sha).collect();
    let scale = |v: f64| match metric {
        Metric::P50 | Metric::P99 | Metric::P999 => dur(v as u64),
        Metric::Throughput => rate(v),
        _ => format!("{v:.0}"),
    };
    charts::trend(&Trend {
        title: &format!("{transport} {point}: {name}"),
        y_desc: name,
        y_format: &scale,
        x_labels: &labels,
        lines: &lines,
        markers: &markers,
    })
}

fn change_text(c: &super::Change) -> String {
    format!(
        "{} {} {} {:+.1}%",
        c.transport,
        c.point,
        c.metric.name(),
        c.change * 100.0
    )
}

fn index(h: &History) -> String {
    let mut b = String::new();
    let classes = machines(h);
    let _ = write!(
        b,
        "<h1>wirebench history</h1><p class=\"muted\">{} runs{}, {} to {}.</p>",
        h.runs.len(),
        if classes.len() > 1 {
            format!(" from {} machine classes", classes.len())
        } else {
            String::new()
        },
        escape(h.runs.first().map_or("", |r| &r.started_at)),
        escape(h.runs.last().map_or("", |r| &r.started_at)),
    );
    if classes.len() > 1 {
        let _ = write!(
            b,
            "<div class=\"banner\">Runs come from {} machine classes ({}). Each class is its own \
             line and is compared only with itself: a difference between classes is the \
             machines', not the code's.</div>",
            classes.len(),
            escape(&classes.join("; "))
        );
    }
    b.push_str("<h2>Changes</h2>");
    let changed: Vec<&HistoryRun> = h.runs.iter().filter(|r| !r.changes.is_empty()).collect();
    if changed.is_empty() {
        b.push_str(
            "<p class=\"muted\">No step between consecutive runs of a machine class was beyond \
             the threshold and the noise.</p>",
        );
    } else {
        b.push_str("<ul>");
        let id_index: BTreeMap<&str, usize> = h
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        for r in changed {
            for c in &r.changes {
                let base = id_index.get(c.base.as_str()).map(|&i| &h.runs[i]);
                let _ = write!(
                    b,
                    "<li class=\"{}\">{} at <a href=\"{}\">{}</a> against <a href=\"{}\">{}</a>: \
                     <a href=\"{}\">{}</a></li>",
                    if c.regressed { "invalid" } else { "valid" },
                    if c.regressed { "regressed" } else { "improved" },
                    escape(&report_path(&r.id)),
                    escape(&short_sha(r)),
                    escape(&report_path(&c.base)),
                    escape(&base.map_or(c.base.clone(), short_sha)),
                    escape(&point_page(&c.transport, &c.point)),
                    escape(&change_text(c)),
                );
            }
        }
        b.push_str("</ul>");
    }
    b.push_str(
        "<h2>Runs</h2><div class=\"scroll\"><table><thead><tr><th>#</th>\
                <th class=\"l\">started</th><th class=\"l\">commit</th><th class=\"l\">suite</th>\
                <th class=\"l\">machine</th><th>valid runs</th><th>changes</th>\
                <th class=\"l\">report</th></tr></thead><tbody>",
    );
    for (i, r) in h.runs.iter().enumerate().rev() {
        let valid = r.points.iter().filter(|p| p.validity == "valid").count();
        let regressions = r.changes.iter().filter(|c| c.regressed).count();
        let improvements = r.changes.len() - regressions;
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
             <td class=\"l\">{}</td><td{}>{valid} of {}</td><td>{}</td>\
             <td class=\"l\"><a href=\"{}\">report</a></td></tr>",
            i + 1,
            escape(&r.started_at),
            escape(&short_sha(r)),
            escape(&r.suite),
            escape(&r.machine),
            if valid < r.points.len() {
                " class=\"invalid\""
            } else {
                ""
            },
            r.points.len(),
            match (regressions, improvements) {
                (0, 0) => String::new(),
                (r, 0) => format!("<span class=\"invalid\">{r} regressed</span>"),
                (0, i) => format!("<span class=\"valid\">{i} improved</span>"),
                (r, i) => format!(
                    "<span class=\"invalid\">{r} regressed</span>, \
                     <span class=\"valid\">{i} improved</span>"
                ),
            },
            escape(&report_path(&r.id)),
        );
    }
    b.push_str("</tbody></table></div><h2>Trends</h2>");
    // The headline: each point's p50, every transport a line.
    let mut by_point: Vec<(String, Vec<String>)> = Vec::new();
    for (t, p) in pairs(h) {
        match by_point.iter_mut().find(|(q, _)| *q == p) {
            Some((_, ts)) => ts.push(t),
            None => by_point.push((p, vec![t])),
        }
    }
    let labels: Vec<String> = h.runs.iter().map(short_sha).collect();
    for (p, ts) in &by_point {
        let mut all_lines = Vec::new();
        let mut all_markers = Vec::new();
        for (i, t) in ts.iter().enumerate() {
            let (l, m) = lines(h, t, p, Metric::P50, i * machines(h).len());
            all_lines.extend(l);
            all_markers.extend(m);
        }
        let links: Vec<String> = ts
            .iter()
            .map(|t| {
                format!(
                    "<a href=\"{}\">{}</a>",
                    escape(&point_page(t, p)),
                    escape(t)
                )
            })
            .collect();
        let _ = write!(
            b,
            "<h3>{}</h3><p>Per transport: {}.</p><div class=\"chart\">{}</div>",
            escape(p),
            links.join(", "),
            charts::trend(&Trend {
                title: &format!("{p}: p50"),
                y_desc: "p50",
                y_format: &|v| dur(v as u64),
                x_labels: &labels,
                lines: &all_lines,
                markers: &all_markers,
            })
        );
    }
    page("wirebench history", "", &b)
}

fn point(h: &History, transport: &str, point: &str) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>{} · {}</h1><p class=\"muted\">Valid runs are joined by a line; the shaded band and bars are the \
         spread of a point's repeats; an invalid or unsustained run is a hollow circle, apart. \
         ▼ marks a step <code>compare</code> judged a regression against the previous run of \
         the same machine class, ▲ an improvement.</p>\
         <div class=\"grid\" style=\"grid-template-columns: repeat(auto-fit, minmax(460px, 1fr))\">",
        escape(transport),
        escape(point)
    );
    for (metric, name) in DRAWN {
        let _ = write!(
            b,
            "<div class=\"chart\">{}</div>",
            chart(h, transport, point, metric, name)
        );
    }
    b.push_str("</div><h2>Runs</h2><div class=\"scroll\"><table><thead><tr><th>#</th>\
                <th class=\"l\">commit</th><th class=\"l\">started</th><th class=\"l\">validity</th>");
    for (_, name) in DRAWN {
        let _ = write!(b, "<th>{}</th>", escape(name));
    }
    b.push_str("<th class=\"l\">changes</th><th class=\"l\">report</th></tr></thead><tbody>");
    for (i, r) in h.runs.iter().enumerate().rev() {
        let Some(f) = figures(r, transport, point) else {
            continue;
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l{}\">{}</td>",
            i + 1,
            escape(&short_sha(r)),
            escape(&r.started_at),
            if f.validity == "valid" {
                " valid"
            } else {
                " invalid"
            },
            escape(&f.validity)
        );
        for (metric, _) in DRAWN {
            let _ = write!(
                b,
                "<td>{}</td>",
                f.value(metric)
                    .map_or("–".into(), |v| format_value(metric, v))
            );
        }
        let changes: Vec<String> = r
            .changes
            .iter()
            .filter(|c| c.transport == transport && c.point == point)
            .map(|c| {
                format!(
                    "<span class=\"{}\">{} {:+.1}%</span> vs <a href=\"../{}\">{}</a>",
                    if c.regressed { "invalid" } else { "valid" },
                    c.metric.name(),
                    c.change * 100.0,
                    escape(&report_path(&c.base)),
                    escape(c.base.split('-').next().unwrap_or("?"))
                )
            })
            .collect();
        let _ = write!(
            b,
            "<td class=\"l\">{}</td><td class=\"l\"><a href=\"../{}\">report</a></td></tr>",
            changes.join("; "),
            escape(&report_path(&r.id))
        );
    }
    b.push_str("</tbody></table></div>");
    page(
        &format!("{transport} {point} — wirebench history"),
        "../",
        &b,
    )
}

/// Writes `index.html` and every point page into `dir` (the runs' reports are written when
/// each run is added). Returns the pages written.
pub fn write(h: &History, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir.join("p"))?;
    let mut written = Vec::new();
    let index_path = dir.join("index.html");
    write_atomic(&index_path, index(h).as_bytes())?;
    written.push(index_path);
    for (t, p) in pairs(h) {
        let path = dir.join(point_page(&t, &p));
        write_atomic(&path, point(h, &t, &p).as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
