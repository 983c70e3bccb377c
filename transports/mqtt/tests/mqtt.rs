//! `mqtt`-specific behaviour: QoS 1 end to end, shared-subscription load sharing, unary
//! cancellation reaching the server, a message larger than the broker accepts, a broker restart
//! under the transport, the documented scheme spoken by a plain MQTT 5 client, and the same
//! transport against Debian's mosquitto as an external broker.
//!
//! The embedded broker needs nothing installed. mosquitto tests are skipped with a message
//! when it is missing, and fail when `CI` is set.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use wirebench_brokerrpc::testing::{self, within};
use wirebench_core::transport::Options;
use wirebench_core::{
    CallOptions, CallReceiver, CallSender, ClientConfig, Code, Connection, Directives, Echo,
    EchoRequest, Metadata, Method, Server, ServerConfig, Transport, pattern,
};
use wirebench_mqtt::embedded::EmbeddedBroker;
use wirebench_mqtt::mosquitto::Mosquitto;
use wirebench_mqtt::{Mqtt, MqttServer};

const LIMIT: Duration = Duration::from_secs(30);

fn qos1() -> Options {
    let mut o = Options::new();
    o.set("qos", "1");
    o
}

async fn serve(listen: &str, options: Options, echo: Arc<Echo>) -> MqttServer {
    let config = ServerConfig {
        listen: listen.to_owned(),
        options,
        ..ServerConfig::loopback()
    };
    Mqtt.serve(&config, echo).await.expect("serve")
}

async fn connect(endpoint: &str, options: Options) -> wirebench_mqtt::MqttConnection {
    let config = ClientConfig {
        options,
        ..ClientConfig::default()
    };
    Mqtt.connect(&config, endpoint).await.expect("connect")
}

/// Unary (plain, with metadata, 64 at once), a server stream and a bidi stream.
async fn exercise(c: &wirebench_mqtt::MqttConnection) {
    let r = c
        .unary(EchoRequest::new(&b"hello"[..]), &CallOptions::default())
        .await
        .expect("unary");
    assert_eq!(&r.message.payload[..], b"hello");

    let mut md = Metadata::new();
    md.append_binary("x-initial-k-bin", vec![0u8, 0xff, 0x0a])
        .expect("valid");
    md.append_ascii("x-trailing-t", "v 1").expect("valid");
    let o = CallOptions {
        metadata: md,
        timeout: Some(Duration::from_secs(10)),
        ..CallOptions::default()
    };
    let r = c
        .unary(EchoRequest::new(vec![1u8; 3]), &o)
        .await
        .expect("unary");
    assert_eq!(
        r.headers
            .get("x-initial-k-bin")
            .map(|v| v.as_bytes().to_vec()),
        Some(vec![0u8, 0xff, 0x0a])
    );
    assert_eq!(r.trailers.get_ascii("x-trailing-t"), Some("v 1"));

    let calls = (0..64u32).map(|i| async move {
        let r = c
            .unary(
                EchoRequest::new(i.to_le_bytes().to_vec()),
                &CallOptions::default(),
            )
            .await
            .expect("concurrent unary");
        assert_eq!(&r.message.payload[..], &i.to_le_bytes());
    });
    join_all(calls).await;

    let (mut s, mut r) = c
        .open(Method::ServerStream, &CallOptions::default())
        .await
        .expect("open");
    s.send(EchoRequest::new(Vec::new()).with_directives(Directives {
        response_sizes: vec![10, 300_000, 0],
        ..Default::default()
    }))
    .await
    .expect("send");
    s.close_send().await.expect("close_send");
    let mut sizes = Vec::new();
    while let Some(m) = r.recv().await.expect("recv") {
        sizes.push(m.payload.len());
    }
    assert_eq!(sizes, [10, 300_000, 0]);

    let (mut s, mut r) = c
        .open(Method::Bidi, &CallOptions::default())
        .await
        .expect("open");
    for i in 0..300u32 {
        s.send(EchoRequest::new(i.to_le_bytes().to_vec()))
            .await
            .expect("send");
        let m = r.recv().await.expect("recv").expect("a response");
        assert_eq!(&m.payload[..], &i.to_le_bytes());
    }
    s.close_send().await.expect("close_send");
    assert!(r.recv().await.expect("end").is_none());
}

#[tokio::test]
async fn qos1_end_to_end_on_the_embedded_broker() {
    tokio::time::timeout(LIMIT, async {
        let s = serve("127.0.0.1:0", qos1(), Arc::new(Echo::default())).await;
        let c = connect(&s.endpoint(), qos1()).await;
        exercise(&c).await;
        c.close().await;
        s.shutdown().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn servers_of_one_service_share_the_load() {
    within(LIMIT, "load sharing", testing::servers_share_the_load(Mqtt)).await;
}

#[tokio::test]
async fn a_dropped_unary_call_is_cancelled_at_the_server() {
    let test = testing::a_dropped_unary_call_is_cancelled_at_the_server(Mqtt);
    within(LIMIT, "unary cancel", test).await;
}

#[tokio::test]
async fn a_message_over_the_brokers_packet_limit_fails_alone() {
    tokio::time::timeout(LIMIT, async {
        let echo = Arc::new(Echo::new(wirebench_core::EchoConfig {
            max_message_size: 64 << 20,
            ..Default::default()
        }));
        let s = serve("127.0.0.1:0", Options::new(), echo).await;
        let c = connect(&s.endpoint(), Options::new()).await;
        // 17 MiB: over the embedded broker's 16 MiB packet limit.
        let e = c
            .unary(EchoRequest::new(pattern(17 << 20)), &CallOptions::default())
            .await
            .expect_err("too large for the broker");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
        assert!(e.message().contains("maximum packet size"), "{e}");
        // The same connection still works.
        c.unary(EchoRequest::new(vec![1u8; 100]), &CallOptions::default())
            .await
            .expect("the connection survived");
        s.shutdown().await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_broker_restart_fails_calls_in_flight_then_recovers() {
    within(LIMIT, "broker restart", async {
        let mut broker = EmbeddedBroker::start("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("broker");
        let url = broker.url();
        let restart = async {
            broker.restart().await.expect("restart");
        };
        testing::a_broker_restart_fails_calls_in_flight_then_recovers(Mqtt, &url, restart).await;
        broker.stop().await;
    })
    .await;
}

/// The module docs' scheme, spoken by a plain rumqttc client: no wirebench client code.
#[tokio::test]
async fn the_documented_scheme_works_from_a_plain_mqtt_client() {
    tokio::time::timeout(LIMIT, async {
        let s = serve("127.0.0.1:0", Options::new(), Arc::new(Echo::default())).await;
        let endpoint = s.endpoint();
        let rest = endpoint.strip_prefix("mqtt://").expect("mqtt url");
        let (authority, prefix) = rest.split_once('/').expect("prefix");
        let (host, port) = authority.rsplit_once(':').expect("port");
        let mut options = MqttOptions::new("plain-client", host, port.parse().expect("port"));
        options.set_max_packet_size(Some(1 << 20));
        let (client, mut events) = AsyncClient::new(options, 10);
        let reply = format!("{prefix}/reply/plain");
        client
            .subscribe(reply.clone(), QoS::AtMostOnce)
            .await
            .expect("subscribe");
        // Wait for the SUBACK before asking.
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("poll") {
                break;
            }
        }
        let properties = PublishProperties {
            response_topic: Some(reply.clone()),
            correlation_data: Some(Bytes::from_static(b"call-7")),
            user_properties: vec![
                ("x-initial-blob-bin".into(), "AAoL//6A".into()),
                ("x-trailing-note".into(), "kept".into()),
                ("Wb-Timeout".into(), "5000000".into()),
                ("Wb-Size".into(), "5".into()),
            ],
            ..PublishProperties::default()
        };
        client
            .publish_with_properties(
                format!("{prefix}/call/Unary"),
                QoS::AtMostOnce,
                false,
                Bytes::from_static(b"ignored"),
                properties,
            )
            .await
            .expect("publish");
        let answer = loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("poll") {
                break p;
            }
        };
        assert_eq!(&answer.topic[..], reply.as_bytes());
        assert_eq!(&answer.payload[..], &[0u8, 1, 2, 3, 4], "5 pattern bytes");
        let props = answer.properties.expect("properties");
        assert_eq!(props.correlation_data.as_deref(), Some(&b"call-7"[..]));
        assert_eq!(
            props.user_properties,
            vec![
                ("x-initial-blob-bin".to_owned(), "AAoL//6A".to_owned()),
                ("Wb-Tr:x-trailing-note".to_owned(), "kept".to_owned()),
            ]
        );
        // An unknown method: UNIMPLEMENTED as Wb-Status 12.
        let properties = PublishProperties {
            response_topic: Some(reply),
            correlation_data: Some(Bytes::from_static(b"call-8")),
            ..PublishProperties::default()
        };
        client
            .publish_with_properties(
                format!("{prefix}/call/Nope"),
                QoS::AtMostOnce,
                false,
                Bytes::new(),
                properties,
            )
            .await
            .expect("publish");
        let answer = loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("poll") {
                break p;
            }
        };
        let props = answer.properties.expect("properties");
        assert_eq!(props.correlation_data.as_deref(), Some(&b"call-8"[..]));
        assert!(
            props
                .user_properties
                .contains(&("Wb-Status".to_owned(), "12".to_owned())),
            "{:?}",
            props.user_properties
        );
        s.shutdown().await;
    })
    .await
    .expect("in time");
}

/// Starts mosquitto, or says why not (skipped; under CI a failure).
async fn mosquitto() -> Option<Mosquitto> {
    match wirebench_mqtt::mosquitto::start().await {
        Ok(m) => Some(m),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and mosquitto did not start: {e}"
            );
            assert!(
                e.is_not_installed(),
                "mosquitto is installed but failed: {e}"
            );
            eprintln!("skipped: {e}");
            None
        }
    }
}

#[tokio::test]
async fn qos0_and_qos1_through_mosquitto() {
    let Some(m) = mosquitto().await else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        for options in [Options::new(), qos1()] {
            let first_echo = Arc::new(Echo::default());
            let s = serve(&m.url(), options.clone(), first_echo.clone()).await;
            let second_echo = Arc::new(Echo::default());
            let second = serve(&s.endpoint(), options.clone(), second_echo.clone()).await;
            let c = connect(&s.endpoint(), options).await;
            exercise(&c).await;
            // mosquitto shares `$share/...` subscriptions too.
            let (a, b) = (first_echo.calls(), second_echo.calls());
            assert!(a > 0 && b > 0, "one server took every call: {a} / {b}");
            c.close().await;
            second.shutdown().await;
            s.shutdown().await;
        }
    })
    .await
    .expect("in time");
    drop(m);
}
