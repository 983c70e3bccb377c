//! Human units on the command line and in suite files: durations (`3s`, `250ms`, `1.5s`),
//! sizes (`64`, `16KiB`, `1MB`) and rates (`5000`, `2.5k`) — one grammar for the whole
//! project, defined in `wirebench_core::units` (policy tables parse with it too).

pub use wirebench_core::units::{
    UnitError, format_duration, format_rate, parse_duration, parse_rate, parse_size,
};
