//! The `wirebench` binary: parses the command line and maps outcomes to exit codes.

fn main() -> std::process::ExitCode {
    wirebench::cli::main()
}
