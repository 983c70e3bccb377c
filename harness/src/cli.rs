//! The command line (clap): global flags, the subcommands, and dispatch.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd;
use crate::exit;

/// Compare how services talk: gRPC, QUIC, a lean binary protocol over TCP, message brokers.
///
/// wirebench runs interchangeable transports through the same conformance, fault-injection
/// and load scenarios and reports what each costs.
///
/// Exit codes: 0 fine, 1 regression or conformance failure, 2 bad usage or input, 3 the
/// harness itself failed, 130 interrupted (results so far are saved).
///
/// Start with `wirebench run` (add `--help` to any command for its flags and examples).
#[derive(Debug, Parser)]
#[command(name = "wirebench", version, propagate_version = true)]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a suite (default: quick): the floor, conformance and load points against every
    /// transport; writes results.json, report.html and summary.md.
    Run(cmd::run::Args),
    /// Render report.html, summary.md and junit.xml from one or more saved results files.
    Report(cmd::report::Args),
    #[command(
        about = "Build or extend a static site of many runs: trends per metric over commits, \
                 regressions marked where they happened"
    )]
    History(cmd::history::Args),
    // `about`, not a doc comment: a one-paragraph doc comment here would clear the long
    // help the command's own Args carry.
    #[command(
        about = "Compare two results files and decide, with noise in mind, whether NEW regressed"
    )]
    Compare(cmd::compare::Args),
    /// Run the conformance cases against transports and print the case × transport matrix.
    Conformance(cmd::conformance::Args),
    /// Measure the loopback floor: a blocking TCP ping-pong, one message in flight.
    Floor(cmd::floor::Args),
    /// Serve the echo service over one transport (prints a JSON ready line).
    Serve(cmd::serve::Args),
    /// One load point against one transport (a summary) or several (a table side by side).
    Load(Box<cmd::load::Args>),
    #[command(
        about = "Find each transport's knee: the highest rate that meets an SLO, with the \
                 latency-throughput curve"
    )]
    Capacity(Box<cmd::capacity::Args>),
    #[command(
        about = "Merge the shards of one run (load --shard-count N) exactly into the run they made"
    )]
    Merge(cmd::merge::Args),
    #[command(
        about = "Run the fault proxy in front of any TCP or UDP service (latency, loss, resets, ...)"
    )]
    Proxy(cmd::proxy::Args),
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        // Servers log the protocol errors that conformance cases provoke on purpose; the
        // harness reports outcomes itself, so those logs show from -v on. A target directive
        // matches by prefix: `wirebench_` is every library crate (core, the transports,
        // policy, ...), never this binary's own `wirebench::` target.
        0 => "warn,wirebench_=error",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Exit status when standard output's reader went away (`wirebench ... | head`): what a shell
/// reports for a process ended by SIGPIPE.
const BROKEN_PIPE: i32 = 141;

/// Ends the process quietly when printing to a closed pipe, as command-line tools do, instead
/// of panicking (Rust ignores SIGPIPE, so `println!` panics; restoring the signal's default
/// would take unsafe code). What was already saved (results.json) stays.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE);
        }
        default(info);
    }));
}

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Conformance(a) => cmd::conformance::run(a),
        Command::Floor(a) => cmd::floor::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::History(a) => cmd::history::run(a),
        Command::Compare(a) => cmd::compare::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Load(a) => cmd::load::run(*a),
        Command::Capacity(a) => cmd::capacity::run(*a),
        Command::Merge(a) => cmd::merge::run(a),
        Command::Proxy(a) => cmd::proxy::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::code_for(&e)
        }
    }
}
