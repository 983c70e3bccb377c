//! `wirebench run` as a pipeline: a pure [`plan::Plan`] built from a suite, an
//! [`executor`] that runs it and emits [`events::RunEvent`]s, and the [`reporters`] that
//! consume them (the progress display, the plain log, the results sink).

pub mod events;
pub mod executor;
pub mod plan;
pub mod reporters;
