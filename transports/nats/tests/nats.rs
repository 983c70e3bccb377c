//! `nats`-specific behaviour against a real nats-server: no responders, queue-group load
//! sharing, unary cancellation reaching the server, the broker's payload limit, a broker
//! restart under the transport, and the documented wire scheme spoken by a plain NATS client.
//!
//! Each test starts its own private broker; without nats-server the tests are skipped with a
//! message (and fail when `CI` is set).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use wirebench_brokerrpc::testing::{self, within};
use wirebench_core::broker::RestartMode;
use wirebench_core::{
    CallOptions, ClientConfig, Code, Connection, Directives, Echo, EchoConfig, EchoRequest, Method,
    Server, ServerConfig, Transport,
};
use wirebench_nats::broker::{NatsProcess, locate};
use wirebench_nats::{Nats, NatsServer};

const LIMIT: Duration = Duration::from_secs(30);

fn available() -> bool {
    match locate() {
        Ok(_) => true,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "CI is set: {e}");
            eprintln!("skipped: {e}");
            false
        }
    }
}

async fn serve(listen: &str, echo: Arc<Echo>) -> NatsServer {
    let config = ServerConfig {
        listen: listen.to_owned(),
        ..ServerConfig::loopback()
    };
    Nats.serve(&config, echo)
        .await
        .expect("nats server on a private broker")
}

async fn broker() -> NatsProcess {
    wirebench_nats::broker::start(([127, 0, 0, 1], 0).into())
        .await
        .expect("a private nats-server")
}

#[tokio::test]
async fn no_responder_fails_at_once_with_unavailable() {
    if !available() {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let b = broker().await;
        let endpoint = format!("{}/wb.echo.nobody", b.url());
        let c = Nats
            .connect(&ClientConfig::default(), &endpoint)
            .await
            .unwrap();
        let o = CallOptions::with_timeout(Duration::from_secs(20));
        let t = Instant::now();
        let e = c.unary(EchoRequest::new(vec![1u8]), &o).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        assert!(e.message().contains("no responders"), "{e}");
        let e = c.open(Method::Bidi, &o).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        // "At once": far below the 20 s deadline (generous for loaded CI machines).
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn servers_of_one_service_share_the_load() {
    if available() {
        within(LIMIT, "load sharing", testing::servers_share_the_load(Nats)).await;
    }
}

#[tokio::test]
async fn a_dropped_unary_call_is_cancelled_at_the_server() {
    if available() {
        let test = testing::a_dropped_unary_call_is_cancelled_at_the_server(Nats);
        within(LIMIT, "unary cancel", test).await;
    }
}

#[tokio::test]
async fn a_broker_restart_fails_calls_in_flight_then_recovers() {
    if !available() {
        return;
    }
    within(LIMIT, "broker restart", async {
        let mut b = broker().await;
        let url = b.url();
        let restart = async {
            b.restart(RestartMode::Kill)
                .await
                .expect("the broker restarts")
        };
        testing::a_broker_restart_fails_calls_in_flight_then_recovers(Nats, &url, restart).await;
    })
    .await;
}

#[tokio::test]
async fn the_broker_payload_limit_fails_one_call_only() {
    if !available() {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        // Our limits far above the private broker's 8 MiB max_payload: the broker's decides.
        let big = 16 << 20;
        let echo = Arc::new(Echo::new(EchoConfig {
            max_message_size: big,
            ..EchoConfig::default()
        }));
        let s = serve("127.0.0.1:0", echo).await;
        let config = ClientConfig {
            max_message_size: big,
            ..ClientConfig::default()
        };
        let c = Nats.connect(&config, &s.endpoint()).await.unwrap();
        let o = CallOptions::default();
        let over = 9 << 20;
        let e = c
            .unary(EchoRequest::new(vec![0u8; over]), &o)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
        let sized = EchoRequest::new(Vec::new()).with_directives(Directives {
            response_size: Some(over as u32),
            ..Default::default()
        });
        let e = c.unary(sized, &o).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
        let r = c
            .unary(EchoRequest::new(vec![5u8; 1 << 20]), &o)
            .await
            .unwrap();
        assert_eq!(r.message.payload.len(), 1 << 20);
        s.shutdown().await;
    })
    .await
    .unwrap();
}

/// A plain NATS client, knowing only the documented scheme, calls the service.
#[tokio::test]
async fn the_documented_scheme_works_from_a_plain_nats_client() {
    if !available() {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let s = serve("127.0.0.1:0", Arc::new(Echo::default())).await;
        let endpoint = s.endpoint();
        let (url, prefix) = endpoint.rsplit_once('/').unwrap();
        let nc = async_nats::connect(url).await.unwrap();

        // Unary, plain: no headers either way.
        let r = nc
            .request(format!("{prefix}.Unary"), Bytes::from_static(b"hi"))
            .await
            .unwrap();
        assert_eq!(&r.payload[..], b"hi");
        assert!(r.headers.is_none());

        // Unary with metadata and a failure directive.
        let mut h = async_nats::HeaderMap::new();
        h.append("Wb-Md", "x-trailing-k v%25");
        h.append("Wb-Md", "x-initial-b-bin AAE=");
        h.append("Wb-Fail", "10 0 no%20way");
        let r = nc
            .request_with_headers(format!("{prefix}.Unary"), h, Bytes::new())
            .await
            .unwrap();
        let rh = r.headers.unwrap();
        assert_eq!(rh.get("Wb-Status").unwrap().as_str(), "10");
        // Interior spaces are kept as is; only edges, `%` and non-printables are escaped.
        assert_eq!(rh.get("Wb-Message").unwrap().as_str(), "no way");
        assert_eq!(rh.get("Wb-Md").unwrap().as_str(), "x-initial-b-bin AAE=");
        assert_eq!(rh.get("Wb-Tr").unwrap().as_str(), "x-trailing-k v%25");

        // A server stream by frames: open, accept, msg + end; headers? msgs, status.
        let inbox = nc.new_inbox();
        let mut sub = nc.subscribe(inbox.clone()).await.unwrap();
        let mut open = async_nats::HeaderMap::new();
        open.insert("Wb-Frame", "open");
        open.insert("Wb-Window", "16");
        nc.publish_with_reply_and_headers(
            format!("{prefix}.ServerStream"),
            inbox,
            open,
            Bytes::new(),
        )
        .await
        .unwrap();
        let accept = sub.next().await.unwrap();
        assert_eq!(
            accept
                .headers
                .as_ref()
                .unwrap()
                .get("Wb-Frame")
                .unwrap()
                .as_str(),
            "accept"
        );
        let to = accept.reply.unwrap();
        let mut m = async_nats::HeaderMap::new();
        m.insert("Wb-Frame", "msg");
        m.insert("Wb-Seq", "1");
        m.insert("Wb-Sizes", "3,0,5");
        nc.publish_with_headers(to.clone(), m, Bytes::new())
            .await
            .unwrap();
        let mut end = async_nats::HeaderMap::new();
        end.insert("Wb-Frame", "end");
        end.insert("Wb-Seq", "1");
        nc.publish_with_headers(to, end, Bytes::new())
            .await
            .unwrap();
        let mut sizes = Vec::new();
        loop {
            let f = sub.next().await.unwrap();
            let h = f.headers.unwrap();
            match h.get("Wb-Frame").unwrap().as_str() {
                "msg" => {
                    assert_eq!(
                        h.get("Wb-Seq").unwrap().as_str(),
                        (sizes.len() + 1).to_string()
                    );
                    sizes.push(f.payload.len());
                }
                "status" => {
                    assert!(h.get("Wb-Status").is_none(), "not OK: {h:?}");
                    assert_eq!(h.get("Wb-Seq").unwrap().as_str(), "3");
                    break;
                }
                "headers" | "credit" => {}
                other => panic!("unexpected frame {other}"),
            }
        }
        assert_eq!(sizes, [3, 0, 5]);
        s.shutdown().await;
    })
    .await
    .unwrap();
}
