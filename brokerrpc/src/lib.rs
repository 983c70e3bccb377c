//! The request/stream protocol wirebench's broker transports (`nats`, `mqtt`) run over any
//! publish/subscribe broker.

use thiserror::Error;

/// A service prefix that is not tokens of `[A-Za-z0-9_-]` joined by the broker's separator.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{what} {prefix:?} must be tokens of [A-Za-z0-9_-] separated by '{separator}'")]
pub struct BadPrefix {
    /// The kind of prefix (`subject prefix`, `topic prefix`).
    pub what: &'static str,
    /// The prefix given.
    pub prefix: String,
    /// The broker's token separator.
    pub separator: char,
}

/// Checks a broker service prefix: tokens of `[A-Za-z0-9_-]` separated by `sep` (`.` for NATS
/// subjects, `/` for MQTT topics), so no token is empty or a wildcard. `what` names the token
/// kind in the error (`subject prefix`, `topic prefix`).
pub fn check_prefix(p: &str, sep: char, what: &'static str) -> Result<(), BadPrefix> {
    let ok = p.split(sep).all(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(BadPrefix {
            what,
            prefix: p.to_owned(),
            separator: sep,
        })
    }
}
