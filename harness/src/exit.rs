//! Exit codes, part of the interface: 0 fine, 1 regression or conformance failure, 2 bad
//! usage or input, 3 the harness itself failed, 75 a shard missed its coordinated start, 130
//! interrupted by Ctrl-C (results so far
//! saved).

use std::process::ExitCode;

use thiserror::Error;

/// Everything was fine.
pub const OK: u8 = 0;
/// A regression or a conformance failure was found.
pub const FAILED: u8 = 1;
/// Bad usage or bad input (flags, suite files, results files, targets).
pub const BAD_INPUT: u8 = 2;
/// The harness itself failed.
pub const HARNESS: u8 = 3;
/// A shard could not start at its `--start-at` within `--start-grace`, so it did not run (a
/// shard that runs late skews the whole run's offered load). 75 is sysexits' EX_TEMPFAIL: an
/// engine may retry it with a new start time.
pub const LATE_START: u8 = 75;
/// The user interrupted the run (Ctrl-C); what finished before is saved (the shell's
/// convention for SIGINT).
pub const INTERRUPTED: u8 = 130;

/// An error caused by what the user gave us; reported with exit code 2.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// A start missed by more than its grace; reported with exit code [`LATE_START`].
#[derive(Debug, Error)]
#[error("{0}")]
pub struct LateStart(pub String);

/// Shorthand for a [`BadInput`] error.
pub fn bad_input(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadInput(msg.into()))
}

/// True when any cause of `e` is bad input.
pub fn is_bad_input(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<BadInput>().is_some())
}

/// The exit code for an error: 75 for a late start, 2 when any cause is bad input, else 3.
pub fn code_for(e: &anyhow::Error) -> ExitCode {
    if e.chain().any(|c| c.downcast_ref::<LateStart>().is_some()) {
        ExitCode::from(LATE_START)
    } else if e.chain().any(|c| c.downcast_ref::<BadInput>().is_some()) {
        ExitCode::from(BAD_INPUT)
    } else {
        ExitCode::from(HARNESS)
    }
}
