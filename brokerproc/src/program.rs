//! Finding a broker's server program (`nats-server`, `mosquitto`) the same way for every
//! broker: an environment variable naming it, else `PATH`, then the `sbin` directories where
//! Debian installs brokers (not on every user's `PATH`); a missing program is
//! [`BrokerError::NotInstalled`] with how to get it.

use std::path::{Path, PathBuf};

use wirebench_core::broker::BrokerError;

/// Debian installs brokers in /usr/sbin, which is not on every user's PATH.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin"];

/// A broker program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    /// Its file name.
    pub name: &'static str,
    /// The environment variable that names its path, overriding the search.
    pub env: &'static str,
    /// What to do when it is missing.
    pub install_hint: &'static str,
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Program {
    /// Finds the program: its environment variable when set, else `PATH`, then `/usr/sbin`
    /// and `/usr/local/sbin`.
    pub fn locate(&self) -> Result<PathBuf, BrokerError> {
        if let Some(p) = std::env::var_os(self.env) {
            let p = PathBuf::from(p);
            return if is_executable(&p) {
                Ok(p)
            } else {
                Err(self.missing(format!(
                    "{}={} is not an executable file",
                    self.env,
                    p.display()
                )))
            };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(EXTRA_DIRS.iter().map(PathBuf::from))
            .map(|d| d.join(self.name))
            .find(|c| is_executable(c))
            .ok_or_else(|| {
                self.missing(format!(
                    "looked in {}, PATH, {}",
                    self.env,
                    EXTRA_DIRS.join(", ")
                ))
            })
    }

    fn missing(&self, looked: String) -> BrokerError {
        BrokerError::NotInstalled {
            program: self.name,
            looked,
            hint: self.install_hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_hint() {
        let p = Program {
            name: "wirebench-no-such-broker",
            env: "WIREBENCH_TEST_NO_SUCH_BROKER",
            install_hint: "install it with care",
        };
        let e = p.locate().unwrap_err();
        assert!(e.is_not_installed());
        assert!(e.to_string().contains("install it with care"), "{e}");
        assert!(e.to_string().contains("wirebench-no-such-broker"), "{e}");
    }

    #[test]
    fn a_program_on_the_path_is_found() {
        let p = Program {
            name: "sh",
            env: "WIREBENCH_TEST_SH_UNSET",
            install_hint: "",
        };
        assert!(p.locate().unwrap().ends_with("sh"));
    }
}
