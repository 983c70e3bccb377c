//! wirebench scenarios: conformance cases, load profiles, fault plans and suites.

pub mod conformance;
