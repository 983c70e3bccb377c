//! wirebench's harness: the command line, the runner, the floor, the fault proxy and the
//! child processes. The binary is a thin wrapper over [`cli::main`].

pub mod affinity;
pub mod brokers;
pub mod capacity;
pub mod child;
pub mod cli;
pub mod cmd;
pub mod environment;
pub mod exit;
pub mod faultplan;
pub mod floor;
pub mod host;
pub mod interrupt;
pub mod load;
pub mod pacer;
pub mod procfs;
pub mod proxy;
pub mod run;
pub mod runner;
pub mod shard;
pub mod thresholds;
