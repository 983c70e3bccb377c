//! A broker service's address, the same shape for every broker: `SCHEME://HOST:PORT/PREFIX`
//! (the broker, and the service's subject or topic prefix), and what a server's `listen`
//! string asks for — attach to a broker by URL, or start a private one on `IP:PORT`.

use std::fmt;
use std::net::SocketAddr;

use thiserror::Error;
use wirebench_core::{NetworkPath, TransportError};

/// An address that does not parse, with what was expected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct BadEndpoint(String);

/// How one broker spells its service addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheme {
    /// The URL scheme (`nats`, `mqtt`).
    pub name: &'static str,
    /// The token separator of its subjects or topics (`.`, `/`).
    pub separator: char,
    /// What a prefix is called in errors (`subject prefix`, `topic prefix`).
    pub prefix_kind: &'static str,
}

/// A service's address: its broker and its prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The broker's scheme.
    pub scheme: Scheme,
    /// Broker host (an IP or a name; IPv6 in brackets).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The service's prefix; `None` when serving means "make a fresh one".
    pub prefix: Option<String>,
}

/// Checks a service prefix: tokens of `[A-Za-z0-9_-]` separated by the scheme's separator, so
/// no token is empty or a wildcard.
pub fn check_prefix(scheme: &Scheme, p: &str) -> Result<(), BadEndpoint> {
    let ok = p.split(scheme.separator).all(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(BadEndpoint(format!(
            "{} {p:?} must be tokens of [A-Za-z0-9_-] separated by '{}'",
            scheme.prefix_kind, scheme.separator
        )))
    }
}

impl Endpoint {
    /// Parses `SCHEME://HOST:PORT[/PREFIX]`.
    pub fn parse(scheme: Scheme, s: &str) -> Result<Endpoint, BadEndpoint> {
        let bad = |why: String| BadEndpoint(why);
        let rest = s
            .strip_prefix(scheme.name)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or_else(|| bad(format!("expected {}://HOST:PORT/PREFIX", scheme.name)))?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("missing :PORT after {}://HOST", scheme.name)))?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad(format!(
                "missing or invalid HOST after {}://",
                scheme.name
            )));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| bad(format!("port {port:?} is not a number 0..65535")))?;
        let prefix = if prefix.is_empty() {
            None
        } else {
            check_prefix(&scheme, prefix)?;
            Some(prefix.to_owned())
        };
        Ok(Endpoint {
            scheme,
            host: host.to_owned(),
            port,
            prefix,
        })
    }

    /// The broker's URL, `SCHEME://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("{}://{}:{}", self.scheme.name, self.host, self.port)
    }

    /// `HOST:PORT`, where the client's TCP hop goes.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The same service reached through `via` (a proxy in front of the broker).
    pub fn via(&self, via: SocketAddr) -> Endpoint {
        Endpoint {
            host: match via {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            },
            port: via.port(),
            ..self.clone()
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.prefix {
            Some(p) => write!(f, "{}/{p}", self.url()),
            None => f.write_str(&self.url()),
        }
    }
}

/// What a server's `listen` string asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `SCHEME://HOST:PORT[/PREFIX]`: attach to that broker (joining service `PREFIX` when
    /// given, so several servers share its load).
    Attach(Endpoint),
    /// `IP:PORT`: start a private broker there (port 0: any free port), owned by the server.
    Private(SocketAddr),
}

impl Target {
    /// Parses a `listen` string.
    pub fn parse(scheme: Scheme, listen: &str) -> Result<Target, BadEndpoint> {
        if listen.starts_with(&format!("{}://", scheme.name)) {
            return Endpoint::parse(scheme, listen).map(Target::Attach);
        }
        listen.parse().map(Target::Private).map_err(|_| {
            BadEndpoint(format!(
                "expected {}://HOST:PORT[/PREFIX] (attach to a broker) or IP:PORT (start a \
                 private broker there)",
                scheme.name
            ))
        })
    }
}

/// What a broker transport's `Transport` methods do with address strings, the same for every
/// broker: parse them, with errors naming the string, and say where the client's hop goes.
impl Scheme {
    /// A client's (or a fault proxy's) endpoint string.
    pub fn endpoint(self, endpoint: &str) -> Result<Endpoint, TransportError> {
        Endpoint::parse(self, endpoint).map_err(|e| TransportError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })
    }

    /// A server's `listen` string.
    pub fn target(self, listen: &str) -> Result<Target, TransportError> {
        Target::parse(self, listen).map_err(|e| TransportError::Endpoint {
            endpoint: listen.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The hop a fault proxy goes on: the client's TCP connection to the broker (the echo
    /// server keeps its own direct link).
    pub fn network_path(self, endpoint: &str) -> Result<NetworkPath, TransportError> {
        NetworkPath::tcp(&self.endpoint(endpoint)?.authority())
    }

    /// The same service with the broker reached through `via`.
    pub fn endpoint_via(self, endpoint: &str, via: SocketAddr) -> Result<String, TransportError> {
        Ok(self.endpoint(endpoint)?.via(via).to_string())
    }
}

/// Why a transport over a broker lacks a capability, when the reason is the broker in the
/// path rather than the broker's protocol: the same for every broker transport.
pub mod gaps {
    /// `ByteStreamWire`.
    pub const BYTE_STREAM_WIRE: &str = "the wire runs client -> broker -> echo server: bytes \
        written to the endpoint are parsed by the broker, and the echo server only ever sees \
        whole broker messages, so fragmentation and garbage would test the broker, not this \
        transport";
    /// `MutualTls`.
    pub const MUTUAL_TLS: &str = "mutual TLS on a broker path is the broker's own listener \
        (with client certificates), between each client and the broker; wirebench configures \
        TLS only on its point-to-point transports (tcp, grpc, quic)";
    /// `Datagrams`.
    pub const DATAGRAMS: &str = "the client's hop is TCP to the broker: loss applies to \
        datagrams, and TCP retransmits below us";
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOTS: Scheme = Scheme {
        name: "nats",
        separator: '.',
        prefix_kind: "subject prefix",
    };
    const SLASHES: Scheme = Scheme {
        name: "mqtt",
        separator: '/',
        prefix_kind: "topic prefix",
    };

    #[test]
    fn endpoints_parse_and_print() {
        let e = Endpoint::parse(DOTS, "nats://127.0.0.1:4222/wb.echo.X-1_a").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 4222));
        assert_eq!(e.prefix.as_deref(), Some("wb.echo.X-1_a"));
        assert_eq!(e.to_string(), "nats://127.0.0.1:4222/wb.echo.X-1_a");
        assert_eq!(e.url(), "nats://127.0.0.1:4222");
        assert_eq!(Endpoint::parse(DOTS, "nats://h:1").unwrap().prefix, None);
        assert_eq!(Endpoint::parse(DOTS, "nats://h:1/").unwrap().prefix, None);
        let e = Endpoint::parse(SLASHES, "mqtt://[::1]:1/wb/echo/X").unwrap();
        assert_eq!(
            (e.host.as_str(), e.prefix.as_deref()),
            ("[::1]", Some("wb/echo/X"))
        );
        assert_eq!(
            e.via("10.0.0.1:9".parse().unwrap()).to_string(),
            "mqtt://10.0.0.1:9/wb/echo/X"
        );
        for (scheme, bad) in [
            (DOTS, "127.0.0.1:4222/x"),
            (DOTS, "nats:///x"),
            (DOTS, "nats://h:1/a..b"),
            (DOTS, "nats://h:1/a.*"),
            (DOTS, "nats://h:1/a.>"),
            (DOTS, "nats://h:1/a b"),
            (DOTS, "mqtt://h:1/a"),
            (SLASHES, "mqtt://:1/x"),
            (SLASHES, "mqtt://h/x"),
            (SLASHES, "mqtt://h:99999/x"),
            (SLASHES, "mqtt://h:1/a//b"),
            (SLASHES, "mqtt://h:1/a/+"),
            (SLASHES, "mqtt://h:1/a/#"),
            (SLASHES, "mqtt://h:1/$SYS"),
        ] {
            assert!(Endpoint::parse(scheme, bad).is_err(), "{bad}");
        }
        let e = Endpoint::parse(DOTS, "nats://h:1/a.*").unwrap_err();
        assert!(e.to_string().contains("subject prefix"), "{e}");
    }

    #[test]
    fn listen_strings_choose_the_broker() {
        assert_eq!(
            Target::parse(DOTS, "127.0.0.1:0").unwrap(),
            Target::Private("127.0.0.1:0".parse().unwrap())
        );
        assert!(matches!(
            Target::parse(SLASHES, "mqtt://127.0.0.1:1883").unwrap(),
            Target::Attach(Endpoint { prefix: None, .. })
        ));
        assert!(Target::parse(DOTS, "localhost").is_err());
    }
}
