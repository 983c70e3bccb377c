//! The fault proxy against real sockets: each fault does what it says, in the direction it
//! says, and the counters agree. Lower bounds on added delay are checked (a delay can never be
//! shorter than asked); nothing asserts how fast the machine is.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use wirebench::proxy::{Protocol, Proxy, spec};

const LIMIT: Duration = Duration::from_secs(10);

async fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = s.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}

fn faults(specs: &[&str]) -> Vec<spec::Fault> {
    specs
        .iter()
        .map(|s| spec::parse(s).expect("spec"))
        .collect()
}

async fn tcp_proxy(specs: &[&str]) -> Proxy {
    let up = tcp_echo().await;
    Proxy::start(Protocol::Tcp, "127.0.0.1:0", up, faults(specs), 7)
        .await
        .expect("proxy")
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.expect("read");
    back
}

#[tokio::test]
async fn clean_proxy_forwards_and_counts() {
    tokio::time::timeout(LIMIT, async {
        let p = tcp_proxy(&[]).await;
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        let msg = vec![7u8; 100_000];
        assert_eq!(round_trip(&mut s, &msg).await, msg);
        let c = p.counters();
        assert_eq!(
            (c.connections, c.bytes_up, c.bytes_down),
            (1, 100_000, 100_000)
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn latency_applies_only_to_its_direction_and_can_be_changed_live() {
    tokio::time::timeout(LIMIT, async {
        let p = tcp_proxy(&["latency:100ms,dir=down"]).await;
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        let t = Instant::now();
        round_trip(&mut s, b"ping").await;
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert!(p.counters().delayed >= 1);
        // Healed while the connection stays open: the next round trip is not delayed.
        p.set_faults(Vec::new()).unwrap();
        let t = Instant::now();
        round_trip(&mut s, b"pong").await;
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn slicer_keeps_bytes_intact() {
    tokio::time::timeout(LIMIT, async {
        let p = tcp_proxy(&["slicer:size=3"]).await;
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        let msg: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(&mut s, &msg).await, msg);
        assert!(p.counters().sliced >= 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn limit_closes_after_exactly_n_bytes() {
    tokio::time::timeout(LIMIT, async {
        let p = tcp_proxy(&["limit:1000,dir=down"]).await;
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        s.write_all(&[1u8; 5000]).await.unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        assert_eq!(got.len(), 1000);
        assert_eq!(p.counters().limited, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn reset_sends_rst() {
    tokio::time::timeout(LIMIT, async {
        let p = tcp_proxy(&["reset:after=50ms"]).await;
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        round_trip(&mut s, b"hello").await;
        let mut buf = [0u8; 10];
        let r = s.read(&mut buf).await;
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{r:?}"
        );
        assert_eq!(p.counters().resets, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn refuse_and_blackhole() {
    tokio::time::timeout(LIMIT, async {
        let p = tcp_proxy(&["refuse"]).await;
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        let mut buf = [0u8; 4];
        let r = s.read(&mut buf).await;
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert_eq!(p.counters().refused, 1);

        p.set_faults(faults(&["blackhole,dir=up"])).unwrap();
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        s.write_all(b"into the void").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(r.is_err(), "a blackholed request got an answer: {r:?}");
        assert_eq!(p.counters().blackholed, 13);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn slow_close_holds_the_fin() {
    tokio::time::timeout(LIMIT, async {
        let p = tcp_proxy(&["slow-close:200ms,dir=up"]).await;
        let mut s = TcpStream::connect(p.local_addr()).await.unwrap();
        round_trip(&mut s, b"x").await;
        let t = Instant::now();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    })
    .await
    .unwrap();
}

async fn udp_pair(specs: &[&str]) -> (Proxy, UdpSocket) {
    let up = udp_echo().await;
    let p = Proxy::start(Protocol::Udp, "127.0.0.1:0", up, faults(specs), 3)
        .await
        .expect("proxy");
    let c = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    c.connect(p.local_addr()).await.expect("connect");
    (p, c)
}

#[tokio::test]
async fn udp_duplicate_corrupt_and_loss() {
    tokio::time::timeout(LIMIT, async {
        let mut buf = [0u8; 64];
        let (p, c) = udp_pair(&["duplicate,dir=down"]).await;
        c.send(b"twice").await.unwrap();
        for _ in 0..2 {
            let n = c.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"twice");
        }
        assert_eq!(p.counters().duplicated, 1);

        p.set_faults(faults(&["corrupt,dir=up"])).unwrap();
        c.send(b"intact?").await.unwrap();
        let n = c.recv(&mut buf).await.unwrap();
        let flipped: u32 = buf[..n]
            .iter()
            .zip(b"intact?")
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(flipped, 1);

        p.set_faults(faults(&["loss:100%"])).unwrap();
        c.send(b"lost").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), c.recv(&mut buf)).await;
        assert!(r.is_err(), "a packet survived 100% loss");
        assert!(p.counters().dropped >= 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn udp_reorder_lets_later_packets_overtake() {
    tokio::time::timeout(LIMIT, async {
        let (p, c) = udp_pair(&["reorder:150ms,p=30%,dir=up"]).await;
        for i in 0..20u8 {
            c.send(&[i]).await.unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        for _ in 0..20 {
            let n = c.recv(&mut buf).await.unwrap();
            got.push(buf[..n][0]);
        }
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..20).collect::<Vec<u8>>(),
            "every packet arrives once"
        );
        assert_ne!(got, sorted, "held-back packets were overtaken");
        assert!(p.counters().reordered > 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gilbert_elliott_losses_come_in_bursts() {
    tokio::time::timeout(LIMIT, async {
        // Rarely enter the bad state, stay there a while, lose everything while there.
        let (p, c) = udp_pair(&["loss:ge,p=2%,r=10%,bad=100%,dir=up"]).await;
        let mut received = Vec::new();
        let mut buf = [0u8; 8];
        for i in 0..2000u32 {
            c.send(&i.to_le_bytes()).await.unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(20), c.recv(&mut buf)).await
            {
                received.push(u32::from_le_bytes(buf[..n].try_into().unwrap()));
            }
        }
        let lost = 2000 - received.len() as u64;
        assert_eq!(lost, p.counters().dropped);
        assert!(lost > 0, "no loss at all");
        // Bursty: the mean run of consecutive losses is well above 1 (random loss gives ~1).
        let mut runs = 0u64;
        let mut prev_lost = false;
        let got: std::collections::HashSet<u32> = received.into_iter().collect();
        for i in 0..2000u32 {
            let is_lost = !got.contains(&i);
            if is_lost && !prev_lost {
                runs += 1;
            }
            prev_lost = is_lost;
        }
        assert!(
            lost as f64 / runs as f64 > 3.0,
            "{lost} losses in {runs} runs"
        );
    })
    .await
    .unwrap();
}
