//! Inline SVG charts drawn with plotters (SVG backend only, no font libraries): the latency
//! percentile spectrum on a log axis and latency over time.

use plotters::prelude::*;

/// A line to draw: its label, colour index and (x, y) points.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Index into the palette (one per transport, stable across charts).
    pub color: usize,
    /// Points in chart units.
    pub points: Vec<(f64, f64)>,
    /// Drawn thin and light (a secondary line such as a median).
    pub secondary: bool,
}

/// Distinguishable colours, one per transport.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

/// The palette colour `i` as a CSS hex string (for tables next to the charts).
pub fn css_color(i: usize) -> String {
    let c = PALETTE[i % PALETTE.len()];
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// Formats microseconds compactly for axis labels.
fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{}ms", trim(us / 1000.0))
    } else {
        format!("{}µs", trim(us))
    }
}

/// A log axis's labels, spaced for the range drawn: plotters puts key points at every integer
/// mantissa, and on a narrow range (800 µs to 1 ms) those stack into each other. Only
/// mantissas far enough apart for the decades shown get a label (1-2-3-5 within a decade or
/// so, 1-2-5 up to 2.5 decades, powers of ten beyond); the mesh lines stay.
fn log_ticks(ymin: f64, ymax: f64) -> impl Fn(&f64) -> String {
    let decades = (ymax / ymin.max(f64::MIN_POSITIVE)).log10();
    let allowed: &'static [f64] = if decades > 2.5 {
        &[1.0, 10.0]
    } else if decades > 1.2 {
        &[1.0, 2.0, 5.0, 10.0]
    } else {
        &[1.0, 2.0, 3.0, 5.0, 10.0]
    };
    move |&us: &f64| {
        if us <= 0.0 || !us.is_finite() {
            return String::new();
        }
        let mantissa = us / 10f64.powf(us.log10().floor());
        if allowed.iter().any(|m| (mantissa - m).abs() < 1e-6 * m) {
            fmt_us(us)
        } else {
            String::new()
        }
    }
}

fn trim(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Labels the x axis of a spectrum: x = 1/(1-q) shown as the percentile q.
pub fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".into();
    }
    let q = 100.0 * (1.0 - 1.0 / x);
    let digits = (x.log10().round() as usize).saturating_sub(2);
    format!("{q:.digits$}%")
}

fn y_bounds(series: &[Series]) -> Option<(f64, f64)> {
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| *y > 0.0 && y.is_finite());
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    (lo <= hi).then(|| (lo / 1.5, hi * 1.5))
}

fn no_data(title: &str) -> String {
    format!(
        "<svg viewBox=\"0 0 640 60\" role=\"img\"><text x=\"10\" y=\"35\" \
         font-family=\"sans-serif\" font-size=\"14\">{}: no data</text></svg>",
        crate::html::escape(title)
    )
}

/// Removes the SVG namespace URL plotters writes: inline SVG in HTML needs none, and the
/// report contains no URL of any kind.
fn inline(svg: String) -> String {
    svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
}

/// A percentile spectrum: latency (µs, log) against 1/(1-q) (log, labelled as percentiles).
pub fn spectrum(title: &str, series: &[Series]) -> String {
    let Some((ymin, ymax)) = y_bounds(series) else {
        return no_data(title);
    };
    let xmax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(10.0f64, f64::max)
        * 1.2;
    let mut svg = String::new();
    let drawn = draw_spectrum(&mut svg, title, series, xmax, ymin, ymax);
    match drawn {
        Ok(()) => inline(svg),
        Err(_) => no_data(title),
    }
}

/// What drawing a chart into an SVG string gives: plotters' own error (a chart that cannot be
/// drawn is shown as "no data").
type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw_spectrum(
    svg: &mut String,
    title: &str,
    series: &[Series],
    xmax: f64,
    ymin: f64,
    ymax: f64,
) -> Drawn {
    {
        let root = SVGBackend::with_string(svg, (640, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 19))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d((1f64..xmax).log_scale(), (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&log_ticks(ymin, ymax))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        draw_lines(&mut chart, series, true)?;
        root.present()?;
    }
    Ok(())
}

/// Latency over time: one line per series, x in seconds, y in µs (log).
/// The x axis ends at `xmax` seconds, the end of the data drawn (so it never runs on past
/// the measured phase); at least as far as the last point.
pub fn over_time(title: &str, series: &[Series], xmax: f64) -> String {
    let Some((ymin, ymax)) = y_bounds(series) else {
        return no_data(title);
    };
    let last = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0f64, f64::max);
    let xmax = if xmax > last { xmax } else { last + 0.5 };
    let mut svg = String::new();
    let drawn = draw_over_time(&mut svg, title, series, xmax, ymin, ymax);
    match drawn {
        Ok(()) => inline(svg),
        Err(_) => no_data(title),
    }
}

fn draw_over_time(
    svg: &mut String,
    title: &str,
    series: &[Series],
    xmax: f64,
    ymin: f64,
    ymax: f64,
) -> Drawn {
    {
        let root = SVGBackend::with_string(svg, (640, 340)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 19))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("seconds into the measured phase")
            .y_desc("latency")
            .y_label_formatter(&log_ticks(ymin, ymax))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        draw_lines(&mut chart, series, true)?;
        root.present()?;
    }
    Ok(())
}

/// One transport's bars across the categories of a [`bars`] chart.
#[derive(Clone, Debug)]
pub struct BarSeries {
    /// Legend label.
    pub label: String,
    /// Palette index.
    pub color: usize,
    /// Per category: the solid bar's value, and optionally a longer light one behind it (a
    /// p99 behind its p50). `None`: the transport did not run that category.
    pub values: Vec<Option<(f64, Option<f64>)>>,
    /// Per category: whether the run can be trusted. An untrusted (invalid or unsustained)
    /// run's bars are drawn as outlines only, so they cannot be read as results.
    pub trusted: Vec<bool>,
}

/// Horizontal grouped bars: one row per category (labelled on the left, where long names
/// fit), one bar per series within it.
#[derive(Clone, Copy)]
pub struct Bars<'a> {
    /// The chart's title.
    pub title: &'a str,
    /// The value axis's name.
    pub x_desc: &'a str,
    /// How a value is written on its axis.
    pub format: &'a dyn Fn(f64) -> String,
    /// The rows, top down.
    pub categories: &'a [String],
    /// One series per transport.
    pub series: &'a [BarSeries],
    /// A log value axis (latencies that span µs to ms).
    pub log: bool,
}

impl std::fmt::Debug for Bars<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bars")
            .field("title", &self.title)
            .field("categories", &self.categories.len())
            .field("series", &self.series.len())
            .finish_non_exhaustive()
    }
}

/// Draws [`Bars`].
pub fn bars(b: &Bars<'_>) -> String {
    let values = || {
        b.series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .flat_map(|&(v, behind)| std::iter::once(v).chain(behind))
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let hi = values().fold(0.0f64, f64::max);
    let lo = values().fold(f64::MAX, f64::min);
    if b.categories.is_empty() || hi <= 0.0 {
        return no_data(b.title);
    }
    let mut svg = String::new();
    match draw_bars(&mut svg, b, (lo, hi)) {
        Ok(()) => inline(svg),
        Err(_) => no_data(b.title),
    }
}

fn draw_bars(svg: &mut String, b: &Bars<'_>, (lo, hi): (f64, f64)) -> Drawn {
    let Bars {
        title,
        x_desc,
        format,
        categories,
        series,
        log,
    } = *b;
    let n = categories.len();
    // Each row holds every series' bar, 9 px apiece, with room between rows.
    let row_px = (series.len() as u32 * 9 + 14).max(28);
    let height = 90 + row_px * n as u32;
    {
        let root = SVGBackend::with_string(svg, (640, height + 24)).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, strip) = root.split_vertically(height);
        let longest = categories
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(4);
        let mut builder = ChartBuilder::on(&upper);
        builder
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size((longest as u32 * 8 + 12).clamp(60, 220));
        let names = |y: &f64| {
            let i = (y - 0.5).round();
            if (y - 0.5 - i).abs() > 1e-6 || i < 0.0 || i as usize >= n {
                return String::new();
            }
            categories[n - 1 - i as usize].clone()
        };
        // Rows top-down in the order given: category i sits at y = n - 1 - i.
        let rect = |i: usize, k: usize, x0: f64, x1: f64| {
            let slot = 0.8 / series.len().max(1) as f64;
            let top = (n - 1 - i) as f64 + 0.9 - slot * k as f64;
            [(x0, top - slot * 0.85), (x1, top)]
        };
        macro_rules! draw {
            ($chart:expr, $floor:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_desc)
                    .x_label_formatter(&|x| format(*x))
                    .x_labels(6)
                    .y_labels(2 * n + 1)
                    .y_label_formatter(&names)
                    .disable_y_mesh()
                    .label_style(("sans-serif", 13))
                    .axis_desc_style(("sans-serif", 14))
                    .light_line_style(RGBColor(235, 235, 235))
                    .draw()?;
                for (k, s) in series.iter().enumerate() {
                    let color = PALETTE[s.color % PALETTE.len()];
                    for (i, v) in s.values.iter().enumerate() {
                        let Some((v, behind)) = *v else { continue };
                        let trusted = s.trusted.get(i).copied().unwrap_or(true);
                        let (solid, light) = if trusted {
                            (color.filled(), color.mix(0.3).filled())
                        } else {
                            (color.stroke_width(1), color.mix(0.4).stroke_width(1))
                        };
                        if let Some(b) = behind.filter(|b| *b > 0.0) {
                            chart.draw_series(std::iter::once(Rectangle::new(
                                rect(i, k, $floor, b),
                                light,
                            )))?;
                        }
                        if v > 0.0 {
                            chart.draw_series(std::iter::once(Rectangle::new(
                                rect(i, k, $floor, v),
                                solid,
                            )))?;
                        }
                    }
                }
            }};
        }
        if log {
            let floor = lo / 2.0;
            draw!(
                builder.build_cartesian_2d((floor..hi * 2.0).log_scale(), 0f64..n as f64)?,
                floor
            );
        } else {
            draw!(
                builder.build_cartesian_2d(0f64..hi * 1.1, 0f64..n as f64)?,
                0.0
            );
        }
        let items: Vec<(String, ShapeStyle)> = series
            .iter()
            .map(|s| {
                (
                    s.label.clone(),
                    PALETTE[s.color % PALETTE.len()].stroke_width(6),
                )
            })
            .collect();
        legend_below(&strip, &items, 8)?;
        root.present()?;
    }
    Ok(())
}

/// One machine class's values of one metric across a history's runs (x = the run's index).
#[derive(Clone, Debug, Default)]
pub struct TrendLine {
    /// Legend label.
    pub label: String,
    /// Palette index.
    pub color: usize,
    /// Valid runs' values: the line.
    pub points: Vec<(usize, f64)>,
    /// The repeats' range at a run, drawn as a bar.
    pub band: Vec<(usize, f64, f64)>,
    /// Invalid or unsustained runs' values: drawn apart, hollow, never joined to the line.
    pub apart: Vec<(usize, f64)>,
}

/// A step `compare` judged: a red triangle pointing down for a regression, a green one up for
/// an improvement.
#[derive(Clone, Copy, Debug)]
pub struct TrendMarker {
    /// The run's index.
    pub x: usize,
    /// The value there.
    pub y: f64,
    /// Regressed (else improved).
    pub regressed: bool,
}

/// How many x labels fit a trend chart without touching: a commit label is about 60 px wide
/// at 14 px and the plot about 560 px.
pub const TREND_MAX_X_LABELS: usize = 8;

/// A metric over a history's runs.
#[derive(Clone, Copy)]
pub struct Trend<'a> {
    /// The chart's title.
    pub title: &'a str,
    /// The y axis's name.
    pub y_desc: &'a str,
    /// How a y value is written on the axis.
    pub y_format: &'a dyn Fn(f64) -> String,
    /// One label per run (e.g. a short commit).
    pub x_labels: &'a [String],
    /// One line per machine class (or transport).
    pub lines: &'a [TrendLine],
    /// Where compare judged a change.
    pub markers: &'a [TrendMarker],
}

impl std::fmt::Debug for Trend<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trend")
            .field("title", &self.title)
            .field("runs", &self.x_labels.len())
            .field("lines", &self.lines.len())
            .finish_non_exhaustive()
    }
}

/// Draws a [`Trend`] on a linear axis from 0, so that a trend is drawn to scale.
pub fn trend(t: &Trend<'_>) -> String {
    let ymax = t
        .lines
        .iter()
        .flat_map(|l| {
            l.points
                .iter()
                .map(|p| p.1)
                .chain(l.apart.iter().map(|p| p.1))
                .chain(l.band.iter().map(|b| b.2))
        })
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max);
    if ymax <= 0.0 || t.x_labels.is_empty() {
        return no_data(t.title);
    }
    let mut svg = String::new();
    match draw_trend(&mut svg, t, ymax) {
        Ok(()) => inline(svg),
        Err(_) => no_data(t.title),
    }
}

fn draw_trend(svg: &mut String, t: &Trend<'_>, ymax: f64) -> Drawn {
    let Trend {
        title,
        y_desc,
        y_format,
        x_labels,
        lines,
        markers,
    } = *t;
    {
        let root = SVGBackend::with_string(svg, (640, 344)).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, strip) = root.split_vertically(320);
        let n = x_labels.len();
        let mut chart = ChartBuilder::on(&upper)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax * 1.15)?;
        // Labels only at whole runs, and no more than fit: every k-th run is labelled.
        let step = n.div_ceil(TREND_MAX_X_LABELS).max(1);
        chart
            .configure_mesh()
            .x_desc("run (commit)")
            .y_desc(y_desc)
            .x_labels(n.min(TREND_MAX_X_LABELS * 2) + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() > 1e-6
                    || i < 0.0
                    || i as usize >= n
                    || !(i as usize).is_multiple_of(step)
                {
                    return String::new();
                }
                x_labels[i as usize].clone()
            })
            .y_label_formatter(&|y| y_format(*y))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for l in lines {
            let color = PALETTE[l.color % PALETTE.len()];
            // The repeats' spread as a band through the runs that have one, and a bar at each
            // (a band of one run would be invisible).
            if l.band.len() >= 2 {
                let mut outline: Vec<(f64, f64)> =
                    l.band.iter().map(|&(x, _, hi)| (x as f64, hi)).collect();
                outline.extend(l.band.iter().rev().map(|&(x, lo, _)| (x as f64, lo)));
                chart.draw_series(std::iter::once(Polygon::new(
                    outline,
                    color.mix(0.15).filled(),
                )))?;
            }
            chart.draw_series(l.band.iter().map(|&(x, lo, hi)| {
                PathElement::new(
                    vec![(x as f64, lo), (x as f64, hi)],
                    color.mix(0.35).stroke_width(6),
                )
            }))?;
            chart.draw_series(LineSeries::new(
                l.points.iter().map(|&(x, y)| (x as f64, y)),
                color.stroke_width(2),
            ))?;
            chart.draw_series(
                l.points
                    .iter()
                    .map(|&(x, y)| Circle::new((x as f64, y), 3, color.filled())),
            )?;
            chart.draw_series(l.apart.iter().map(|&(x, y)| {
                Circle::new((x as f64, y), 5, RGBColor(120, 120, 120).stroke_width(2))
            }))?;
        }
        let red = RGBColor(200, 30, 30);
        let green = RGBColor(30, 140, 50);
        chart.draw_series(markers.iter().map(|m| {
            let (shape, color) = if m.regressed {
                (vec![(-7, -14), (7, -14), (0, -3)], red)
            } else {
                (vec![(-7, 14), (7, 14), (0, 3)], green)
            };
            EmptyElement::at((m.x as f64, m.y)) + Polygon::new(shape, color.filled())
        }))?;
        let mut items: Vec<(String, ShapeStyle)> = lines
            .iter()
            .map(|l| {
                (
                    l.label.clone(),
                    PALETTE[l.color % PALETTE.len()].stroke_width(2),
                )
            })
            .collect();
        if lines.iter().any(|l| !l.apart.is_empty()) {
            items.push((
                "○ invalid (not joined)".into(),
                RGBColor(120, 120, 120).stroke_width(2),
            ));
        }
        if markers.iter().any(|m| m.regressed) {
            items.push(("▼ regressed".into(), red.stroke_width(2)));
        }
        if markers.iter().any(|m| !m.regressed) {
            items.push(("▲ improved".into(), green.stroke_width(2)));
        }
        legend_below(&strip, &items, 8)?;
        root.present()?;
    }
    Ok(())
}

/// One transport's steps on a latency–throughput chart, in the order of the offered rate.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    /// Legend label (the transport, with its knee when one was found).
    pub label: String,
    /// Palette index.
    pub color: usize,
    /// Valid and unsustained steps: (achieved calls/s, latency µs), joined by the line.
    pub points: Vec<(f64, f64)>,
    /// Steps the generator invalidated: drawn hollow, never joined.
    pub apart: Vec<(f64, f64)>,
    /// The knee, ringed.
    pub knee: Option<(f64, f64)>,
}

/// Latency against achieved throughput, every transport on one chart (both axes log), the
/// knees ringed and the SLO's limit drawn across.
#[derive(Clone, Copy, Debug)]
pub struct LatencyThroughput<'a> {
    /// The chart's title.
    pub title: &'a str,
    /// What the y axis shows (`p99 latency`).
    pub y_desc: &'a str,
    /// The curves.
    pub curves: &'a [Curve],
    /// The SLO's latency limit in µs, and how it is written.
    pub slo: Option<(f64, &'a str)>,
}

/// Draws a [`LatencyThroughput`] chart.
pub fn latency_throughput(c: &LatencyThroughput<'_>) -> String {
    let all = || {
        c.curves
            .iter()
            .flat_map(|k| k.points.iter().chain(&k.apart))
            .filter(|p| p.0 > 0.0 && p.1 > 0.0 && p.0.is_finite() && p.1.is_finite())
    };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return no_data(c.title);
    }
    if let Some((limit, _)) = c.slo {
        (y0, y1) = (y0.min(limit), y1.max(limit));
    }
    let mut svg = String::new();
    match draw_latency_throughput(&mut svg, c, (x0 / 1.3, x1 * 1.3), (y0 / 1.5, y1 * 1.5)) {
        Ok(()) => inline(svg),
        Err(_) => no_data(c.title),
    }
}

/// A throughput axis label: `850/s`, `12k/s`, `1.5M/s`, only at 1-2-5 mantissas.
fn rate_tick(x: f64) -> String {
    if x <= 0.0 || !x.is_finite() {
        return String::new();
    }
    let mantissa = x / 10f64.powf(x.log10().floor());
    if ![1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 1e-6 * m)
    {
        return String::new();
    }
    if x >= 1e6 {
        format!("{}M/s", trim(x / 1e6))
    } else if x >= 1e3 {
        format!("{}k/s", trim(x / 1e3))
    } else {
        format!("{}/s", trim(x))
    }
}

fn draw_latency_throughput(
    svg: &mut String,
    c: &LatencyThroughput<'_>,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Drawn {
    // One legend row per three entries beneath the plot.
    let entries = c.curves.len() + usize::from(c.slo.is_some()) + 1; // at most
    let rows = entries.div_ceil(3) as u32;
    {
        let root = SVGBackend::with_string(svg, (760, 420 + 22 * rows)).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, strip) = root.split_vertically(420);
        let mut chart = ChartBuilder::on(&upper)
            .caption(c.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("achieved throughput (calls/s)")
            .y_desc(c.y_desc)
            .x_label_formatter(&|x| rate_tick(*x))
            .y_label_formatter(&log_ticks(y0, y1))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        let red = RGBColor(200, 30, 30);
        if let Some((limit, _)) = c.slo {
            // Dashed: segments of a twentieth of the axis, in log space.
            let n = 40;
            let at = |i: i32| x0 * (x1 / x0).powf(f64::from(i) / f64::from(n));
            chart.draw_series((0..n).step_by(2).map(|i| {
                PathElement::new(
                    vec![(at(i), limit), (at(i + 1), limit)],
                    red.stroke_width(2),
                )
            }))?;
        }
        for k in c.curves {
            let color = PALETTE[k.color % PALETTE.len()];
            chart.draw_series(LineSeries::new(
                k.points.iter().copied(),
                color.stroke_width(2),
            ))?;
            chart.draw_series(k.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            chart.draw_series(
                k.apart
                    .iter()
                    .map(|&p| Circle::new(p, 5, RGBColor(120, 120, 120).stroke_width(2))),
            )?;
            if let Some(p) = k.knee {
                chart.draw_series(std::iter::once(Circle::new(p, 9, color.stroke_width(3))))?;
            }
        }
        let mut items: Vec<(String, ShapeStyle)> = c
            .curves
            .iter()
            .map(|k| {
                (
                    k.label.clone(),
                    PALETTE[k.color % PALETTE.len()].stroke_width(2),
                )
            })
            .collect();
        if let Some((_, text)) = c.slo {
            items.push((format!("SLO {text}"), red.stroke_width(2)));
        }
        let marks = [
            (c.curves.iter().any(|k| k.knee.is_some()), "◯ knee"),
            (
                c.curves.iter().any(|k| !k.apart.is_empty()),
                "○ invalid (not joined)",
            ),
        ];
        let marks: Vec<&str> = marks.iter().filter(|m| m.0).map(|m| m.1).collect();
        if !marks.is_empty() {
            items.push((marks.join("   "), RGBColor(120, 120, 120).stroke_width(2)));
        }
        for (row, chunk) in items.chunks(3).enumerate() {
            legend_below(&strip, chunk, 10 + 22 * row as i32)?;
        }
        root.present()?;
    }
    Ok(())
}

/// A phase of a fault timeline: a band on the time axis, shaded when a fault is on.
#[derive(Clone, Debug)]
pub struct Band {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// The phase's name.
    pub label: String,
    /// Shaded (a fault is on).
    pub faulty: bool,
}

/// A fault run's timeline: latency lines (µs, log axis) over time with the fault phases
/// shaded, and the error rate (percent, right axis) as a red line.
pub fn fault_timeline(
    title: &str,
    bands: &[Band],
    series: &[Series],
    errors: &[(f64, f64)],
) -> String {
    let Some((ymin, ymax)) = y_bounds(series) else {
        return no_data(title);
    };
    let xmax = bands
        .iter()
        .map(|b| b.end)
        .chain(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
        .fold(1.0f64, f64::max);
    let mut svg = String::new();
    match draw_fault_timeline(&mut svg, title, bands, series, errors, xmax, ymin, ymax) {
        Ok(()) => inline(svg),
        Err(_) => no_data(title),
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_fault_timeline(
    svg: &mut String,
    title: &str,
    bands: &[Band],
    series: &[Series],
    errors: &[(f64, f64)],
    xmax: f64,
    ymin: f64,
    ymax: f64,
) -> Drawn {
    {
        let root = SVGBackend::with_string(svg, (720, 384)).into_drawing_area();
        root.fill(&WHITE)?;
        // The legend goes in a strip of its own beneath the chart: the phase labels sit at the
        // top of the plot, where a legend inside it would hide the first one.
        let (upper, strip) = root.split_vertically(360);
        let mut chart = ChartBuilder::on(&upper)
            .caption(title, ("sans-serif", 19))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .right_y_label_area_size(56)
            .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())?
            .set_secondary_coord(0f64..xmax, 0f64..100f64);
        chart
            .configure_mesh()
            .x_desc("seconds into the measured phase")
            .y_desc("latency")
            .y_label_formatter(&log_ticks(ymin, ymax))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        chart
            .configure_secondary_axes()
            .y_desc("errors %")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        let shade = RGBColor(255, 170, 120).mix(0.25).filled();
        chart.draw_secondary_series(
            bands
                .iter()
                .filter(|b| b.faulty)
                .map(|b| Rectangle::new([(b.start, 0.0), (b.end, 100.0)], shade)),
        )?;
        chart.draw_secondary_series(bands.iter().map(|b| {
            Text::new(
                b.label.clone(),
                (b.start + xmax * 0.01, 96.0),
                ("sans-serif", 13).into_font(),
            )
        }))?;
        let red = RGBColor(200, 30, 30).stroke_width(1);
        chart.draw_secondary_series(LineSeries::new(errors.iter().copied(), red))?;
        draw_lines(&mut chart, series, false)?;
        let mut items: Vec<(String, ShapeStyle)> = series
            .iter()
            .map(|s| (s.label.clone(), stroke(s)))
            .collect();
        items.push(("errors % (right axis)".into(), red));
        legend_below(&strip, &items, 8)?;
        root.present()?;
    }
    Ok(())
}

/// How a series is stroked: a primary line bold, a secondary one thin and light.
fn stroke(s: &Series) -> ShapeStyle {
    let color = PALETTE[s.color % PALETTE.len()];
    if s.secondary {
        color.mix(0.45).stroke_width(1)
    } else {
        color.stroke_width(2)
    }
}

/// A legend in one row beneath the plot, centred at height `y` of `root`: outside the
/// plotting area, so it can cover neither data nor the labels drawn on it.
fn legend_below(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    items: &[(String, ShapeStyle)],
    y: i32,
) -> Drawn {
    // No font metrics in the SVG backend: a 14 px sans-serif averages about 7 px a character.
    let width = |label: &str| 18 + 6 + 7 * label.chars().count() as i32 + 18;
    let total: i32 = items.iter().map(|(l, _)| width(l)).sum();
    let mut x = (root.dim_in_pixel().0 as i32 - total).max(0) / 2;
    for (label, style) in items {
        root.draw(&PathElement::new(vec![(x, y), (x + 18, y)], *style))?;
        root.draw(&Text::new(
            label.clone(),
            (x + 24, y - 7),
            ("sans-serif", 14).into_font(),
        ))?;
        x += width(label);
    }
    Ok(())
}

/// The series' lines, with the legend inside the plot (upper left) when `legend` is set.
fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[Series],
    legend: bool,
) -> Drawn
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for s in series {
        let style = stroke(s);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(10000.0), "99.99%");
    }

    #[test]
    fn charts_are_inline_svg_without_urls() {
        let s = Series {
            label: "tcp".into(),
            color: 0,
            points: vec![(1.0, 10.0), (10.0, 20.0), (100.0, 80.0)],
            secondary: false,
        };
        let svg = spectrum("t", std::slice::from_ref(&s));
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(!svg.contains("http"));
        assert!(svg.contains("99%"));
        let svg = over_time("t", &[s], 2.0);
        assert!(svg.starts_with("<svg") && !svg.contains("http"));
        assert!(spectrum("empty", &[]).contains("no data"));
    }
}
