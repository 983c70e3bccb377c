//! Brokers for a run: the `--nats-url` and `--mqtt-url` flags every command that runs transports
//! takes, whether a broker transport can run here, and what a missing broker means — the
//! transport is *skipped* with the install hint, except under CI (`CI` set), where it fails the
//! run. (`mqtt` embeds its broker, so it always runs.)

use std::net::ToSocketAddrs;
use std::time::Duration;

use wirebench_scenarios::conformance::Env;
use wirebench_transports::broker::Broker;
use wirebench_transports::registry::AnyTransport;
use wirebench_transports::{Capability, ServerConfig, Transport};

use crate::exit::bad_input;

/// Broker flags shared by the commands that run transports.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct BrokerArgs {
    /// Use the NATS broker (or cluster member) at this URL for the `nats` transport instead of
    /// starting a private nats-server (e.g. nats://127.0.0.1:4222).
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Use the MQTT 5 broker at this URL for the `mqtt` transport instead of its embedded
    /// broker (e.g. mqtt://127.0.0.1:1883 for a local mosquitto).
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
}

/// Checks one broker URL flag: the scheme, then that something accepts TCP connections there.
fn check_url(flag: &str, url: &str, scheme: &str) -> anyhow::Result<()> {
    let Some(authority) = url
        .strip_prefix(scheme)
        .map(|r| r.split('/').next().unwrap_or(r))
        .filter(|a| !a.is_empty())
    else {
        return Err(bad_input(format!(
            "{flag} {url:?}: expected {scheme}HOST:PORT"
        )));
    };
    let addrs: Vec<_> = authority
        .to_socket_addrs()
        .map_err(|e| bad_input(format!("{flag} {url:?}: cannot resolve {authority}: {e}")))?
        .collect();
    let reachable = addrs
        .iter()
        .any(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(3)).is_ok());
    if !reachable {
        return Err(bad_input(format!(
            "{flag} {url:?}: no broker accepts connections at {authority}"
        )));
    }
    Ok(())
}

impl BrokerArgs {
    /// Checks the flags: each URL must have its broker's scheme and its broker must accept
    /// TCP connections.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.nats_url {
            check_url("--nats-url", url, "nats://")?;
        }
        if let Some(url) = &self.mqtt_url {
            check_url("--mqtt-url", url, "mqtt://")?;
        }
        Ok(())
    }

    /// The external broker for `transport`, if one was given.
    pub fn url_for(&self, transport: &AnyTransport) -> Option<&str> {
        match transport {
            AnyTransport::Nats(_) => self.nats_url.as_deref(),
            AnyTransport::Mqtt(_) => self.mqtt_url.as_deref(),
            _ => None,
        }
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
                     without the broker's --*-url flag to use a private broker)"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let bad = BrokerArgs {
            nats_url: Some("127.0.0.1:4222".into()),
            ..BrokerArgs::default()
        };
        assert!(bad.validate().is_err());
        let bad = BrokerArgs {
            mqtt_url: Some("nats://127.0.0.1:4222".into()),
            ..BrokerArgs::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("expected mqtt://")
        );
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
        let closed = BrokerArgs {
            nats_url: Some(format!("nats://127.0.0.1:{port}")),
            ..BrokerArgs::default()
        };
        let e = closed.validate().unwrap_err().to_string();
        assert!(e.contains("no broker accepts connections"), "{e}");
        let closed = BrokerArgs {
            mqtt_url: Some(format!("mqtt://127.0.0.1:{port}")),
            ..BrokerArgs::default()
        };
        let e = closed.validate().unwrap_err().to_string();
        assert!(
            e.contains("--mqtt-url") && e.contains("no broker accepts"),
            "{e}"
        );
        drop(held);
    }

    #[test]
    fn external_brokers_withdraw_restarts() {
        let args = BrokerArgs {
            nats_url: Some("nats://127.0.0.1:4222".into()),
            mqtt_url: Some("mqtt://127.0.0.1:1883".into()),
        };
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
    }
}
