//! The resilience policy layer against the real `tcp` transport: a server shut down and
//! restarted on the same port. A connection wrapped with `reconnect` + `retry` carries on;
//! a bare connection stays broken.

use std::sync::Arc;
use std::time::Duration;

use wirebench_core::{
    CallOptions, ClientConfig, Code, Connection, Echo, EchoRequest, Server, ServerConfig, Transport,
};
use wirebench_policy::{PolicyConfig, TransportConnector};
use wirebench_tcp::{Tcp, TcpServer};

const LIMIT: Duration = Duration::from_secs(20);

async fn serve(t: Tcp, listen: &str) -> TcpServer {
    let config = ServerConfig {
        listen: listen.to_owned(),
        ..ServerConfig::loopback()
    };
    t.serve(&config, Arc::new(Echo::default()))
        .await
        .unwrap_or_else(|e| panic!("serve on {listen}: {e}"))
}

fn replay_safe() -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_secs(5)),
        replay_safe: true,
        ..CallOptions::default()
    }
}

fn config() -> PolicyConfig {
    toml::from_str(
        r#"
        retry = { max_attempts = 4, initial_backoff = "20ms", max_backoff = "200ms" }
        reconnect = { initial_backoff = "10ms", max_backoff = "100ms" }
        "#,
    )
    .unwrap_or_else(|e| panic!("policy config: {e}"))
}

#[tokio::test]
async fn reconnect_and_retry_survive_a_server_restart() {
    tokio::time::timeout(LIMIT, async {
        let tcp = Tcp;
        let server = serve(tcp, "127.0.0.1:0").await;
        let endpoint = server.endpoint();
        let connector = TransportConnector::new(tcp, ClientConfig::default(), endpoint.clone());
        let layered = wirebench_policy::layer(&config(), connector, 7)
            .await
            .unwrap();
        let bare = tcp
            .connect(&ClientConfig::default(), &endpoint)
            .await
            .unwrap();
        let hi = || EchoRequest::new(&b"hi"[..]);
        layered.unary(hi(), &replay_safe()).await.unwrap();
        bare.unary(hi(), &replay_safe()).await.unwrap();

        server.shutdown().await;
        let server = serve(tcp, &endpoint).await;

        // The bare connection died with the old server.
        let e = bare.unary(hi(), &replay_safe()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        // The layered one re-dials and its idempotent call goes through.
        let reply = layered.unary(hi(), &replay_safe()).await.unwrap();
        assert_eq!(&reply.message.payload[..], b"hi");
        let stats = layered.stats();
        assert_eq!(stats.reconnects, 1, "{stats:?}");
        assert!(stats.retries >= 1, "{stats:?}");
        assert!(layered.wire_bytes().is_some_and(|b| b.sent > 0));

        layered.close().await;
        server.shutdown().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn a_call_while_the_server_is_down_then_recovery() {
    tokio::time::timeout(LIMIT, async {
        let tcp = Tcp;
        let server = serve(tcp, "127.0.0.1:0").await;
        let endpoint = server.endpoint();
        let connector = TransportConnector::new(tcp, ClientConfig::default(), endpoint.clone());
        let layered = wirebench_policy::layer(&config(), connector, 7)
            .await
            .unwrap();
        server.shutdown().await;

        // Down: the call fails (UNAVAILABLE, after its retries) and re-dialling starts.
        let e = layered
            .unary(EchoRequest::new(&b"x"[..]), &replay_safe())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");

        // Back: the next call waits for the dial loop's next attempt and succeeds.
        let server = serve(tcp, &endpoint).await;
        layered
            .unary(EchoRequest::new(&b"y"[..]), &replay_safe())
            .await
            .unwrap();
        assert_eq!(layered.stats().reconnects, 1);
        layered.close().await;
        server.shutdown().await;
    })
    .await
    .expect("timed out");
}
