//! wirebench scenarios: conformance cases, load profiles, fault plans and suites.

pub mod capacity;
pub mod conformance;
pub mod faultplan;
pub mod faultspec;
pub mod load;
pub mod steps;
pub mod suite;
pub mod threshold;
pub mod units;
