//! wirebench's harness: the command line, the runner, the floor, the fault proxy and the
//! child processes. The binary is a thin wrapper over [`cli::main`].

pub mod affinity;
pub mod brokers;
pub mod cli;
pub mod cmd;
pub mod exit;
pub mod floor;
pub mod proxy;
