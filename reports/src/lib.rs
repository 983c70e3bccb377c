//! wirebench's results schema and everything rendered from saved results: HTML, Markdown,
//! JUnit and comparisons. It knows nothing of transports, so any old `results.json` can be
//! re-rendered or compared.

pub mod conformance;
pub mod histogram;
pub mod results;
