//! The environment recorded in every results file: git revision, compiler, build profile,
//! kernel, CPU model, cores, memory, host.

use std::process::Command;

use wirebench_reports::results::Environment;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn first_line_of(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn memory_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Reads the environment of this process.
pub fn collect() -> Environment {
    let git_sha = git(&["rev-parse", "HEAD"]);
    let git_dirty = git_sha
        .as_ref()
        .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
        .map(|s| !s.is_empty());
    Environment {
        git_sha,
        git_dirty,
        rustc: env!("WIREBENCH_RUSTC").to_owned(),
        build_profile: if cfg!(debug_assertions) {
            "debug".to_owned()
        } else {
            env!("WIREBENCH_PROFILE").to_owned()
        },
        kernel: first_line_of("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        cpu_model: cpu_model(),
        cores: crate::affinity::available_cpus() as u32,
        memory_bytes: memory_bytes(),
        hostname: nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned()),
        command: std::env::args().collect(),
    }
}

/// Now, as RFC 3339 UTC with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
