//! wirebench's results schema and everything rendered from saved results: HTML, Markdown,
//! JUnit and comparisons. It knows nothing of transports, so any old `results.json` can be
//! re-rendered or compared.

pub mod charts;
pub mod conformance;
pub mod histogram;
pub mod html;
pub mod markdown;
pub mod results;

use std::path::{Path, PathBuf};

use results::{Results, ResultsError, write_atomic};

/// Writes `report.html` and `summary.md` for `results` into `dir`; returns their paths.
pub fn render_all(results: &Results, dir: &Path) -> Result<(PathBuf, PathBuf), ResultsError> {
    let html = dir.join("report.html");
    let md = dir.join("summary.md");
    let err = |p: &Path| {
        let file = p.display().to_string();
        move |source| ResultsError::Write { file, source }
    };
    write_atomic(&html, html::render(results).as_bytes()).map_err(err(&html))?;
    write_atomic(&md, markdown::render(results).as_bytes()).map_err(err(&md))?;
    Ok((html, md))
}
