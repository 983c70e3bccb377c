//! An in-memory broker and the smallest adapters over it: the protocol's client and server run
//! against each other through channels, with no socket and no broker process, so a protocol
//! bug shows in milliseconds. The broker can drop chosen messages, to show that the protocol
//! notices the loss.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wirebench_core::echo::Echo;
use wirebench_core::message::Method;
use wirebench_core::status::Status;

use crate::client::{ClientCalls, ClientLink, Incoming};
use crate::headers::PropertyList;
use crate::server::{ServerLink, Service};
use crate::{Client, Frame, headers};

/// One message through the broker.
#[derive(Debug)]
struct Msg {
    subject: String,
    reply: Option<String>,
    headers: Option<PropertyList>,
    payload: Bytes,
}

/// Exact-subject routing to one subscriber each; `drop_msg` drops the n-th stream `msg` frame
/// the broker routes (1-based), as a broker dropping a slow subscriber's message would.
#[derive(Default)]
struct Broker {
    routes: Mutex<HashMap<String, mpsc::UnboundedSender<Msg>>>,
    msg_frames: AtomicUsize,
    drop_msg: AtomicUsize,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Broker")
    }
}

impl Broker {
    fn subscribe(&self, subject: &str) -> mpsc::UnboundedReceiver<Msg> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .expect("routes")
            .insert(subject.to_owned(), tx);
        rx
    }

    fn publish(&self, m: Msg) -> Result<(), Status> {
        if headers::frame_of(m.headers.as_ref()) == Ok(Some(Frame::Msg)) {
            let n = self.msg_frames.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.drop_msg.load(Ordering::SeqCst) {
                return Ok(());
            }
        }
        // Like NATS, nobody listening is not an error for a publish.
        if let Some(tx) = self.route_of(&m.subject) {
            let _ = tx.send(m);
        }
        Ok(())
    }

    /// The exact route, else the `prefix.*` catch-all of the subject's prefix.
    fn route_of(&self, subject: &str) -> Option<mpsc::UnboundedSender<Msg>> {
        let routes = self.routes.lock().expect("routes");
        routes.get(subject).cloned().or_else(|| {
            let (head, _) = subject.rsplit_once('.')?;
            routes.get(&format!("{head}.*")).cloned()
        })
    }
}

const SERVICE: &str = "svc";

fn method_subject(method: Method) -> String {
    format!("{SERVICE}.{}", method.name())
}

/// The client's link: replies arrive on `client.<id>`.
struct MemClient {
    broker: Arc<Broker>,
}

impl ClientLink for MemClient {
    type Headers = PropertyList;
    type Address = String;
    type Owner = JoinHandle<()>;

    async fn to_service(
        &self,
        id: u64,
        method: Method,
        headers: Option<PropertyList>,
        payload: Bytes,
    ) -> Result<(), Status> {
        self.broker.publish(Msg {
            subject: method_subject(method),
            reply: Some(format!("client.{id}")),
            headers,
            payload,
        })
    }

    fn cancel_unary(&self, id: u64) {
        let _ = self.broker.publish(Msg {
            subject: format!("{SERVICE}.cancel"),
            reply: None,
            headers: None,
            payload: Bytes::from(format!("client.{id}")),
        });
    }

    async fn to_server(
        &self,
        to: &String,
        headers: PropertyList,
        payload: Bytes,
    ) -> Result<(), Status> {
        self.broker.publish(Msg {
            subject: to.clone(),
            reply: None,
            headers: Some(headers),
            payload,
        })
    }

    fn to_server_now(&self, to: &String, headers: PropertyList) {
        let _ = self.broker.publish(Msg {
            subject: to.clone(),
            reply: None,
            headers: Some(headers),
            payload: Bytes::new(),
        });
    }

    async fn close(&self, owner: &JoinHandle<()>) {
        owner.abort();
    }
}

/// The server's link: a stream's frames arrive on `server.<cid>`.
#[derive(Clone)]
struct MemServer {
    broker: Arc<Broker>,
}

impl fmt::Debug for MemServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemServer")
    }
}

impl ServerLink for MemServer {
    type Headers = PropertyList;
    type ReplyTo = String;
    type CancelKey = String;

    fn cancel_key(reply: &String) -> String {
        reply.clone()
    }

    async fn reply(
        &self,
        to: &String,
        headers: Option<PropertyList>,
        payload: Bytes,
    ) -> Result<(), Status> {
        self.broker.publish(Msg {
            subject: to.clone(),
            reply: None,
            headers,
            payload,
        })
    }

    async fn accept(&self, to: &String, cid: u64, headers: PropertyList) -> Result<(), Status> {
        self.broker.publish(Msg {
            subject: to.clone(),
            reply: Some(format!("server.{cid}")),
            headers: Some(headers),
            payload: Bytes::new(),
        })
    }
}

/// A client and a server over one in-memory broker.
struct Pair {
    broker: Arc<Broker>,
    client: Client<MemClient>,
    service: Arc<Service<MemServer>>,
    echo: Arc<Echo>,
    _server: JoinHandle<()>,
}

fn pair() -> Pair {
    let broker = Arc::new(Broker::default());
    let echo = Arc::new(Echo::default());
    let service = Service::new(
        echo.clone(),
        MemServer {
            broker: broker.clone(),
        },
    );
    // The server: the service's subjects (one catch-all), the cancel subject (an exact route
    // wins over the catch-all) and its streams' subjects.
    let mut requests = broker.subscribe(&format!("{SERVICE}.*"));
    let mut cancels = broker.subscribe(&format!("{SERVICE}.cancel"));
    let mut frames = broker.subscribe("server.*");
    let server = {
        let service = service.clone();
        let broker = broker.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(msg) = requests.recv() => {
                        let Some(reply) = msg.reply else { continue };
                        let token = msg.subject.rsplit('.').next().unwrap_or_default();
                        let method = headers::method_of(token.as_bytes());
                        if let Some(a) = service.on_request(method, reply, msg.headers.as_ref(), msg.payload) {
                            let _ = broker.publish(Msg { subject: a.to, reply: None, headers: a.headers, payload: a.payload });
                        }
                    }
                    Some(msg) = frames.recv() => {
                        let cid = msg.subject.strip_prefix("server.").and_then(|c| c.parse().ok());
                        if let Some(cid) = cid {
                            service.on_frame(cid, msg.headers.as_ref(), msg.payload);
                        }
                    }
                    Some(msg) = cancels.recv() => {
                        service.on_cancel(&String::from_utf8_lossy(&msg.payload).into_owned());
                    }
                    else => break,
                }
            }
        })
    };
    let link = Arc::new(MemClient {
        broker: broker.clone(),
    });
    let calls = Arc::new(ClientCalls::new(4 << 20, "memory broker"));
    let mut inbox = broker.subscribe("client.*");
    let dispatcher = {
        let link = link.clone();
        let calls = calls.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbox.recv().await {
                let Some(id) = msg
                    .subject
                    .strip_prefix("client.")
                    .and_then(|c| c.parse().ok())
                else {
                    continue;
                };
                let incoming = Incoming {
                    headers: msg.headers,
                    payload: msg.payload,
                    reply_to: msg.reply,
                    no_responders: false,
                };
                if let Some(to) = calls.route(id, incoming) {
                    link.to_server_now(&to, headers::frame(Frame::Cancel));
                }
            }
        })
    };
    Pair {
        broker,
        client: Client::new(link, calls, SERVICE.to_owned(), dispatcher),
        service,
        echo,
        _server: server,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wirebench_core::message::{Directives, EchoRequest, FailWith};
    use wirebench_core::metadata::Metadata;
    use wirebench_core::status::Code;
    use wirebench_core::transport::{CallOptions, CallReceiver, CallSender, Connection};

    use super::*;

    const LIMIT: Duration = Duration::from_secs(5);

    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(LIMIT, f)
            .await
            .expect("within the limit")
    }

    #[tokio::test]
    async fn unary_plain_and_with_metadata_status_and_trailers() {
        within(async {
            let p = pair();
            let r = p
                .client
                .unary(EchoRequest::new(&b"hi"[..]), &CallOptions::default())
                .await
                .unwrap();
            assert_eq!(&r.message.payload[..], b"hi");
            let mut md = Metadata::new();
            md.append_ascii("x-trailing-k", "v% ").unwrap();
            md.append_binary("x-initial-b-bin", Bytes::from_static(&[0, 1, 255]))
                .unwrap();
            let o = CallOptions {
                metadata: md,
                ..CallOptions::default()
            };
            let failing = EchoRequest::new(Vec::new()).with_directives(Directives {
                fail: Some(FailWith {
                    code: Code::Aborted,
                    message: " no way ☺".into(),
                    after: 0,
                }),
                ..Default::default()
            });
            let e = p.client.unary(failing, &o).await.unwrap_err();
            assert_eq!((e.code(), e.message()), (Code::Aborted, " no way ☺"));
            assert_eq!(e.metadata().get_ascii("x-trailing-k"), Some("v% "));
            let ok = p
                .client
                .unary(EchoRequest::new(&b"x"[..]), &o)
                .await
                .unwrap();
            assert_eq!(
                ok.headers.get("x-initial-b-bin").unwrap().as_bytes(),
                &[0, 1, 255]
            );
            assert_eq!(ok.trailers.get_ascii("x-trailing-k"), Some("v% "));
        })
        .await;
    }

    #[tokio::test]
    async fn streams_run_every_method_in_order() {
        within(async {
            let p = pair();
            // Server stream: more messages than a window, so credit must flow.
            let (mut tx, mut rx) = p
                .client
                .open(Method::ServerStream, &CallOptions::default())
                .await
                .unwrap();
            tx.send(EchoRequest::new(Vec::new()).with_directives(Directives {
                response_count: Some(300),
                response_size: Some(3),
                ..Default::default()
            }))
            .await
            .unwrap();
            tx.close_send().await.unwrap();
            let mut n = 0;
            while let Some(m) = rx.recv().await.unwrap() {
                assert_eq!(m.payload.len(), 3);
                n += 1;
            }
            assert_eq!(n, 300);
            // Client stream: the server counts what it received.
            let (mut tx, mut rx) = p
                .client
                .open(Method::ClientStream, &CallOptions::default())
                .await
                .unwrap();
            for i in 0..300u32 {
                tx.send(EchoRequest::new(i.to_le_bytes().to_vec()))
                    .await
                    .unwrap();
            }
            tx.close_send().await.unwrap();
            let r = rx.recv().await.unwrap().unwrap();
            assert_eq!((r.received_messages, r.received_bytes), (300, 1200));
            assert!(rx.recv().await.unwrap().is_none());
            // Bidi: each message echoed in turn.
            let (mut tx, mut rx) = p
                .client
                .open(Method::Bidi, &CallOptions::default())
                .await
                .unwrap();
            for i in 0..50u8 {
                tx.send(EchoRequest::new(vec![i])).await.unwrap();
                assert_eq!(&rx.recv().await.unwrap().unwrap().payload[..], &[i]);
            }
            tx.close_send().await.unwrap();
            assert!(rx.recv().await.unwrap().is_none());
            assert_eq!(p.echo.calls(), 3);
        })
        .await;
    }

    #[tokio::test]
    async fn a_lost_message_fails_the_stream_with_data_loss() {
        within(async {
            let p = pair();
            // The broker drops the second `msg` frame it routes: the server's second response.
            p.broker.drop_msg.store(3, Ordering::SeqCst);
            let (mut tx, mut rx) = p
                .client
                .open(Method::ServerStream, &CallOptions::default())
                .await
                .unwrap();
            tx.send(EchoRequest::new(Vec::new()).with_directives(Directives {
                response_count: Some(5),
                ..Default::default()
            }))
            .await
            .unwrap();
            assert!(rx.recv().await.unwrap().is_some());
            let e = rx.recv().await.unwrap_err();
            assert_eq!(e.code(), Code::DataLoss, "{e}");
            assert!(e.message().contains("message 2 never arrived"), "{e}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_lost_request_fails_the_call_at_the_server() {
        within(async {
            let p = pair();
            // The first `msg` frame routed is the client's first request.
            p.broker.drop_msg.store(1, Ordering::SeqCst);
            let (mut tx, mut rx) = p
                .client
                .open(Method::ClientStream, &CallOptions::default())
                .await
                .unwrap();
            for _ in 0..3 {
                tx.send(EchoRequest::new(vec![1u8])).await.unwrap();
            }
            tx.close_send().await.unwrap();
            let e = rx.recv().await.unwrap_err();
            assert_eq!(e.code(), Code::DataLoss, "{e}");
        })
        .await;
    }

    #[tokio::test]
    async fn cancels_reach_the_handler_and_connection_loss_fails_calls() {
        within(async {
            let p = pair();
            let sleepy = EchoRequest::new(vec![1u8]).with_directives(Directives {
                delay: Duration::from_secs(60),
                ..Default::default()
            });
            // Dropped once the server has it (its call counter moved).
            let plain = CallOptions::default();
            tokio::select! {
                r = p.client.unary(sleepy.clone(), &plain) => panic!("a 60 s call ended: {r:?}"),
                () = async {
                    while p.echo.calls() == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                } => {}
            }
            let (seen, held) = p.echo.wait_observed(LIMIT, |o| o.cancelled >= 1).await;
            assert!(held, "the server never saw the unary cancel: {seen:?}");
            let (_tx, mut rx) = p
                .client
                .open(Method::Bidi, &CallOptions::default())
                .await
                .unwrap();
            rx.cancel();
            let (seen, held) = p.echo.wait_observed(LIMIT, |o| o.cancelled >= 2).await;
            assert!(held, "the server never saw the stream cancel: {seen:?}");
            // The broker link breaks: a call in flight fails at once, new calls too.
            let call = p.client.unary(sleepy, &plain);
            let breaks = async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                p.client.calls().set_connected(false, "test");
            };
            let (r, ()) = tokio::join!(call, breaks);
            assert_eq!(r.unwrap_err().code(), Code::Unavailable);
            let e = p
                .client
                .unary(EchoRequest::new(vec![1u8]), &CallOptions::default())
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unavailable);
            assert!(e.message().contains("not connected"), "{e}");
        })
        .await;
    }

    #[tokio::test]
    async fn stopping_answers_the_running_calls_unavailable() {
        within(async {
            let p = pair();
            let (mut tx, mut rx) = p
                .client
                .open(Method::Bidi, &CallOptions::default())
                .await
                .unwrap();
            tx.send(EchoRequest::new(vec![7u8])).await.unwrap();
            assert!(rx.recv().await.unwrap().is_some());
            for goodbye in p.service.stop() {
                let _ = p.broker.publish(Msg {
                    subject: goodbye.to,
                    reply: None,
                    headers: goodbye.headers,
                    payload: goodbye.payload,
                });
            }
            let e = rx.recv().await.unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e}");
            p.service.tracker().wait().await;
        })
        .await;
    }

    #[tokio::test]
    async fn unknown_methods_and_stray_frames_are_refused() {
        within(async {
            let p = pair();
            let (_tx, mut rx) = p
                .client
                .open(Method::Unimplemented, &CallOptions::default())
                .await
                .unwrap();
            assert_eq!(rx.recv().await.unwrap_err().code(), Code::Unimplemented);
            // A `msg` frame sent to the service itself: refused with a bare `status`.
            let mut raw = p.broker.subscribe("raw.1");
            p.broker
                .publish(Msg {
                    subject: method_subject(Method::Bidi),
                    reply: Some("raw.1".into()),
                    headers: Some(headers::frame(Frame::Msg)),
                    payload: Bytes::new(),
                })
                .unwrap();
            let refusal = raw.recv().await.unwrap();
            let h = refusal.headers.unwrap();
            assert_eq!(headers::frame_of(Some(&h)), Ok(Some(Frame::Status)));
            assert_eq!(
                headers::get_status(&h).unwrap().code(),
                Code::InvalidArgument
            );
            // A unary request whose headers do not parse: INVALID_ARGUMENT, naming the header.
            p.broker
                .publish(Msg {
                    subject: method_subject(Method::Unary),
                    reply: Some("raw.1".into()),
                    headers: Some(PropertyList(vec![("Wb-Timeout".into(), "soon".into())])),
                    payload: Bytes::new(),
                })
                .unwrap();
            let h = raw.recv().await.unwrap().headers.unwrap();
            let s = headers::get_status(&h).unwrap();
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(s.message().contains("Wb-Timeout"), "{s}");
        })
        .await;
    }
}
