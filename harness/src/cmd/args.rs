//! Flag groups several commands share (flattened into each with `#[command(flatten)]`), so a
//! flag means the same thing, with the same help, wherever it appears.

use std::path::PathBuf;
use std::time::Duration;

use wirebench_core::tls::{DEFAULT_SERVER_NAME, TlsMode};
use wirebench_scenarios::units::parse_duration;

use crate::affinity::Pin;

/// Where a run's servers come from and where the processes run (`load`, `run`).
#[derive(Clone, Debug, clap::Args)]
pub struct PlacementArgs {
    /// CPU placement: none (the scheduler decides), same (client and server on CPU 0),
    /// split (client CPU 0, server CPU 1).
    #[arg(long, value_enum, default_value_t = Pin::None)]
    pub pin: Pin,
    /// Drive this already-running server instead of starting one (one transport; bring your
    /// own implementation of the documented wire format). Conformance still runs in-process.
    #[arg(long)]
    pub target: Option<String>,
    /// With --target: the server's process id, to read its CPU and memory from /proc.
    #[arg(long, requires = "target")]
    pub target_pid: Option<u32>,
    /// Start servers with this shell command instead of `wirebench serve`; it must print the
    /// ready line (see `wirebench serve --help`) and gets WIREBENCH_LISTEN.
    #[arg(long, conflicts_with = "target")]
    pub server_cmd: Option<String>,
    /// How long a started server may take to print its ready line.
    #[arg(long, default_value = "10s", allow_hyphen_values = true, value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// Server runtime threads (default: one per CPU).
    #[arg(long)]
    pub server_threads: Option<u32>,
}

/// A transport's knobs from the command line (`load`, `capacity`): they belong to one
/// transport, so commands refuse them with several.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct KnobArgs {
    /// A client option KEY=VALUE for the transport (repeatable).
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// A server option KEY=VALUE for the transport (repeatable).
    #[arg(long = "server-option", value_name = "KEY=VALUE")]
    pub server_options: Vec<String>,
}

/// TLS from certificate files (`conformance`, `serve`).
#[derive(Clone, Debug, clap::Args)]
pub struct TlsArgs {
    /// TLS 1.3 (`tls`) or mutual TLS (`mtls`: clients present a certificate the CA signed);
    /// `none` for plaintext.
    #[arg(long, default_value_t = TlsMode::None)]
    pub tls: TlsMode,
    /// Certificates from this directory: `ca.pem`, `server.pem`, `server.key`, and for mtls
    /// `client.pem`, `client.key` (conformance generates a throwaway CA without it).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// The name the server certificate is for, and clients check (with --tls-dir).
    #[arg(long, default_value = DEFAULT_SERVER_NAME)]
    pub tls_server_name: String,
}
