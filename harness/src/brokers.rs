//! Brokers for a run: the `--broker-url` flag every command that runs transports takes (the
//! URL's scheme picks the transport: each broker transport declares its own), whether a broker
//! transport can run here, and what a missing broker means — the transport is *skipped* with
//! the install hint, except under CI (`CI` set), where it fails the run. (`mqtt` embeds its
//! broker, so it always runs.)

use std::net::ToSocketAddrs;
use std::time::Duration;

use wirebench_core::broker::Broker;
use wirebench_core::{Capability, ServerConfig, Transport};
use wirebench_scenarios::conformance::Env;
use wirebench_transports::registry::AnyTransport;

use crate::exit::bad_input;

/// Broker flags shared by the commands that run transports.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct BrokerArgs {
    /// Use the broker at this URL instead of starting a private one, for the broker transport
    /// whose scheme the URL has (repeatable: nats://127.0.0.1:4222 for `nats`,
    /// mqtt://127.0.0.1:1883 for `mqtt`, e.g. a local mosquitto). `--nats-url` and
    /// `--mqtt-url` are aliases.
    #[arg(
        long = "broker-url",
        value_name = "URL",
        alias = "nats-url",
        alias = "mqtt-url"
    )]
    pub urls: Vec<String>,
}

/// The URL schemes of the brokers of this build's transports (`nats`, `mqtt`).
fn schemes() -> Vec<&'static str> {
    AnyTransport::all()
        .iter()
        .filter_map(|t| t.broker().map(|b| b.scheme()))
        .collect()
}

/// Checks one broker URL: a known scheme, then that something accepts TCP connections there.
fn check_url(url: &str) -> anyhow::Result<()> {
    let known = schemes();
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !scheme.is_some_and(|s| known.contains(&s)) {
        return Err(bad_input(format!(
            "--broker-url {url:?}: expected SCHEME://HOST:PORT with a scheme of this build's \
             brokers ({})",
            known
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let authority = url
        .split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or(r))
        .unwrap_or_default();
    if authority.is_empty() {
        return Err(bad_input(format!(
            "--broker-url {url:?}: missing HOST:PORT after the scheme"
        )));
    }
    let addrs: Vec<_> = authority
        .to_socket_addrs()
        .map_err(|e| {
            bad_input(format!(
                "--broker-url {url:?}: cannot resolve {authority}: {e}"
            ))
        })?
        .collect();
    let reachable = addrs
        .iter()
        .any(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(3)).is_ok());
    if !reachable {
        return Err(bad_input(format!(
            "--broker-url {url:?}: no broker accepts connections at {authority}"
        )));
    }
    Ok(())
}

impl BrokerArgs {
    /// Brokers at these URLs.
    pub fn with_urls(urls: impl IntoIterator<Item = String>) -> BrokerArgs {
        BrokerArgs {
            urls: urls.into_iter().collect(),
        }
    }

    /// Checks the flags: each URL must have a broker's scheme, at most one per scheme, and
    /// its broker must accept TCP connections.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (i, url) in self.urls.iter().enumerate() {
            check_url(url)?;
            let scheme = url.split_once("://").map(|(s, _)| s);
            if let Some(other) = self.urls[..i]
                .iter()
                .find(|u| u.split_once("://").map(|(s, _)| s) == scheme)
            {
                return Err(bad_input(format!(
                    "--broker-url {url:?}: {other:?} already names the broker for this scheme"
                )));
            }
        }
        Ok(())
    }

    /// The external broker for `transport`, if one was given: the URL with its broker's scheme.
    pub fn url_for(&self, transport: &AnyTransport) -> Option<&str> {
        let scheme = transport.broker()?.scheme();
        self.urls
            .iter()
            .find(|u| u.split_once("://").is_some_and(|(s, _)| s == scheme))
            .map(String::as_str)
    }

    /// How `transport`'s servers are started: on the external broker when given, else on
    /// loopback (a broker transport then starts a private broker).
    pub fn server_config(&self, transport: &AnyTransport) -> ServerConfig {
        match self.url_for(transport) {
            Some(url) => ServerConfig {
                listen: url.to_owned(),
                ..ServerConfig::loopback()
            },
            None => ServerConfig::loopback(),
        }
    }

    /// The conformance environment for `transport`, from `base`: an external broker is
    /// attached to, and cannot be restarted, so cases that restart it are unsupported.
    pub fn env_for(&self, transport: &AnyTransport, base: &Env) -> Env {
        let mut env = base.clone();
        if let Some(url) = self.url_for(transport) {
            env.broker_url = Some(url.to_owned());
            env.withdrawn.push((
                Capability::BrokerDurable,
                format!(
                    "the broker at {url} is external: the harness cannot restart it (run \
                     without --broker-url to use a private broker)"
                ),
            ));
        }
        env
    }
}

/// True when running under CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Whether a transport can run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// It can run.
    Ready,
    /// Its broker program is missing: skip it, saying why and how to fix it.
    Skipped(String),
    /// Its broker program is missing and the run demands it (CI): a failure.
    Missing(String),
}

/// Whether `transport` can run with `brokers`.
pub fn availability(transport: &AnyTransport, brokers: &BrokerArgs) -> Availability {
    let Some(broker) = transport.broker() else {
        return Availability::Ready;
    };
    if brokers.url_for(transport).is_some() {
        return Availability::Ready;
    }
    match broker.check_available() {
        Ok(()) => Availability::Ready,
        Err(e) => {
            let why = format!("{}: {e}", transport.name());
            if in_ci() {
                Availability::Missing(format!("{why} (CI is set: a missing broker fails the run)"))
            } else {
                Availability::Skipped(why)
            }
        }
    }
}

#[cfg(all(test, feature = "nats", feature = "mqtt"))]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let bad = BrokerArgs::with_urls(["127.0.0.1:4222".to_owned()]);
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("nats://") && e.contains("mqtt://"), "{e}");
        let bad = BrokerArgs::with_urls(["amqp://127.0.0.1:5672".to_owned()]);
        assert!(bad.validate().is_err());
        let none = BrokerArgs::default();
        assert!(none.validate().is_ok());
        // A port nobody listens on, held for the whole test: a socket bound but never
        // listening refuses connections. Binding, learning the port and closing it raced
        // (CI, stop 11): a parallel test could take the freed port, or the connect could
        // pick it as its own source port and open a TCP self-connection.
        let held =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let port = held.local_addr().unwrap().as_socket().unwrap().port();
        for scheme in ["nats", "mqtt"] {
            let closed = BrokerArgs::with_urls([format!("{scheme}://127.0.0.1:{port}")]);
            let e = closed.validate().unwrap_err().to_string();
            assert!(
                e.contains("--broker-url") && e.contains("no broker accepts connections"),
                "{e}"
            );
        }
        drop(held);
    }

    #[test]
    fn the_scheme_picks_the_transport() {
        let args = BrokerArgs::with_urls([
            "nats://127.0.0.1:4222".to_owned(),
            "mqtt://127.0.0.1:1883".to_owned(),
        ]);
        let nats = AnyTransport::by_name("nats").unwrap();
        let tcp = AnyTransport::by_name("tcp").unwrap();
        let env = args.env_for(&nats, &Env::default());
        assert_eq!(env.broker_url.as_deref(), Some("nats://127.0.0.1:4222"));
        assert!(
            env.withdrawn
                .iter()
                .any(|(c, _)| *c == Capability::BrokerDurable)
        );
        assert!(args.env_for(&tcp, &Env::default()).broker_url.is_none());
        assert_eq!(availability(&tcp, &args), Availability::Ready);
        assert_eq!(availability(&nats, &args), Availability::Ready);
        assert_eq!(args.server_config(&nats).listen, "nats://127.0.0.1:4222");
        let mqtt = AnyTransport::by_name("mqtt").unwrap();
        let env = args.env_for(&mqtt, &Env::default());
        assert_eq!(env.broker_url.as_deref(), Some("mqtt://127.0.0.1:1883"));
        assert_eq!(args.server_config(&mqtt).listen, "mqtt://127.0.0.1:1883");
        // The embedded broker needs nothing installed.
        assert_eq!(
            availability(&mqtt, &BrokerArgs::default()),
            Availability::Ready
        );
        let twice = BrokerArgs::with_urls([
            "nats://127.0.0.1:1".to_owned(),
            "nats://127.0.0.1:2".to_owned(),
        ]);
        assert!(twice.validate().is_err());
    }
}
