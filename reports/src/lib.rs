//! wirebench's results schema and everything rendered from saved results: HTML, Markdown,
//! JUnit and comparisons. It knows nothing of transports, so any old `results.json` can be
//! re-rendered or compared.

pub mod charts;
pub mod compare;
pub mod conformance;
pub mod curves;
pub mod faults;
pub mod histogram;
pub mod history;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod merge;
pub mod results;
pub mod setup;
pub mod shards;

use std::path::{Path, PathBuf};

use results::{Results, ResultsError, write_atomic};

/// The files [`render_all`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// `report.html`.
    pub html: PathBuf,
    /// `summary.md`.
    pub summary: PathBuf,
    /// `junit.xml`, when the results hold conformance outcomes or load runs.
    pub junit: Option<PathBuf>,
}

/// Writes `report.html`, `summary.md` and (with conformance outcomes or load runs) `junit.xml` for
/// `results` into `dir`.
pub fn render_all(results: &Results, dir: &Path) -> Result<Rendered, ResultsError> {
    let html = dir.join("report.html");
    let md = dir.join("summary.md");
    let err = |p: &Path| {
        let file = p.display().to_string();
        move |source| ResultsError::Write { file, source }
    };
    write_atomic(&html, html::render(results).as_bytes()).map_err(err(&html))?;
    write_atomic(&md, markdown::render(results).as_bytes()).map_err(err(&md))?;
    // Stepped runs are curves, not test cases: a capacity search overloads on purpose.
    let fixed = results.without_steps();
    let junit = if results.conformance.is_empty() && fixed.runs.is_empty() {
        None
    } else {
        let path = dir.join("junit.xml");
        let xml = junit::render(&results.conformance, &fixed.runs);
        write_atomic(&path, xml.as_bytes()).map_err(err(&path))?;
        Some(path)
    };
    Ok(Rendered {
        html,
        summary: md,
        junit,
    })
}
