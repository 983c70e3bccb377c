//! One module per subcommand: its arguments (clap) and its `run`.

pub mod args;
pub mod capacity;
pub mod compare;
pub mod conformance;
pub mod floor;
pub mod history;
pub mod load;
pub mod merge;
pub mod proxy;
pub mod report;
pub mod run;
pub mod serve;
pub mod side_by_side;

use wirebench_transports::registry::{self, AnyTransport};

use crate::exit::bad_input;

/// Parses a comma-separated transport list (`all` or empty = every transport).
pub fn parse_transports(list: Option<&str>) -> anyhow::Result<Vec<AnyTransport>> {
    match list {
        None | Some("all") | Some("") => Ok(AnyTransport::all()),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| registry::transport(name).map_err(|e| bad_input(e.to_string())))
            .collect(),
    }
}
