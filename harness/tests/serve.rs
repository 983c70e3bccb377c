//! How `wirebench serve` stops: SIGTERM drains (calls in flight finish, stderr reports the
//! drain), and a second SIGTERM during the drain stops it at once. Each test bounds its waits.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use wirebench_core::{
    CallOptions, ClientConfig, Code, Connection, Directives, EchoRequest, Transport,
};
use wirebench_transports::registry::{AnyConnection, AnyTransport};

const LIMIT: Duration = Duration::from_secs(30);

/// A `wirebench serve --transport tcp` child and its endpoint.
fn serve(extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wirebench"))
        .args(["serve", "--transport", "tcp", "--watch-stdin"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wirebench serve starts");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("a JSON ready line");
    let endpoint = ready["endpoint"].as_str().expect("an endpoint").to_owned();
    (child, endpoint)
}

fn term(child: &Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM sent");
}

/// Waits (bounded) for the child to exit; returns whether it succeeded and its stderr.
fn exit(mut child: Child) -> (bool, String) {
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send((child.wait(), text));
    });
    let (status, text) = rx
        .recv_timeout(LIMIT)
        .expect("wirebench serve exits after its signals");
    (status.expect("exit status").success(), text)
}

async fn connect(endpoint: &str) -> AnyConnection {
    AnyTransport::by_name("tcp")
        .expect("tcp")
        .connect(&ClientConfig::default(), endpoint)
        .await
        .expect("connected")
}

fn delayed(tag: u8, delay: Duration) -> EchoRequest {
    EchoRequest::new(vec![tag; 8]).with_directives(Directives {
        delay,
        ..Default::default()
    })
}

#[tokio::test]
async fn sigterm_drains_the_calls_in_flight() {
    let (child, endpoint) = serve(&["--drain-grace", "10s"]);
    let c = connect(&endpoint).await;
    let o = CallOptions::default();
    let calls = futures::future::join_all(
        (0..3u8).map(|i| c.unary(delayed(i, Duration::from_millis(500)), &o)),
    );
    let signal = async {
        // The server reads one connection's frames in order: once this answer is back, the
        // three calls before it are running there.
        c.unary(EchoRequest::new(vec![9u8]), &o)
            .await
            .expect("a quick call");
        term(&child);
    };
    let (results, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(calls, signal) })
        .await
        .expect("the calls end");
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap_or_else(|s| panic!("call {i} failed on SIGTERM: {s}"));
        assert_eq!(r.message.payload[..], [i as u8; 8][..]);
    }
    let (ok, stderr) = exit(child);
    assert!(ok, "stderr: {stderr}");
    assert!(
        stderr.contains("3 calls in flight, 3 finished, 0 cut"),
        "stderr: {stderr}"
    );
}

#[tokio::test]
async fn a_second_sigterm_stops_at_once() {
    let (child, endpoint) = serve(&["--drain-grace", "60s"]);
    let c = connect(&endpoint).await;
    let o = CallOptions::default();
    let call = c.unary(delayed(1, Duration::from_secs(60)), &o);
    let signals = async {
        c.unary(EchoRequest::new(vec![9u8]), &o)
            .await
            .expect("a quick call");
        term(&child);
        // The drain has begun once the server refuses new calls on this connection.
        while c.unary(EchoRequest::new(vec![9u8]), &o).await.is_ok() {
            tokio::task::yield_now().await;
        }
        term(&child);
    };
    let (result, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(call, signals) })
        .await
        .expect("the call ends long before its 60 s delay");
    let status = result.expect_err("a call cut by the stop cannot succeed");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    let (ok, stderr) = exit(child);
    assert!(ok, "stderr: {stderr}");
    assert!(
        stderr.contains("stopped during the drain"),
        "stderr: {stderr}"
    );
}
