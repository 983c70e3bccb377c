//! Broker semantics: fanout, queue groups, per-publisher order, at-least-once delivery of
//! acknowledged messages across a broker restart, deduplication, and slow-consumer overflow.
//!
//! Every case brings its own broker (or uses the environment's, on unique topics) and talks to
//! it through the transport-neutral [`BrokerClient`] API. "Nothing more is coming" is never
//! guessed by waiting: a publisher ends with a marker, on the topic itself where every reader
//! gets it, or on a side topic `<topic>.end` that each reader also subscribes to — a broker
//! delivers one publisher's messages to one connection in order, across its subscriptions, so
//! once the marker is in, everything published before it has been delivered or dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use futures::{StreamExt as _, TryStreamExt as _};
use wirebench_core::Capability;
use wirebench_core::broker::{
    BrokerClient, BrokerClientConfig, Delivery, DurableConsumer, DurableSpec, RestartMode,
    Subscription,
};

use super::case;
use crate::conformance::{Case, CaseResult, Ctx, Failure};
use crate::ensure;
use wirebench_core::Transport;

pub(super) fn cases<T: Transport + Clone>() -> Vec<Case<T>> {
    vec![
        case!(
            fanout,
            "broker",
            &[Capability::Broker],
            "each of 3 subscribers receives every one of 1000 messages, once"
        ),
        case!(
            queue_group_once,
            "broker",
            &[Capability::Broker],
            "3000 messages to a queue group of 3 reach exactly one member each"
        ),
        case!(
            per_publisher_order,
            "broker",
            &[Capability::Broker],
            "4 concurrent publishers: each one's 2000 messages arrive complete and in order"
        ),
        case!(
            at_least_once,
            "broker",
            &[Capability::Broker, Capability::BrokerDurable],
            "every acknowledged durable publish (32 in flight) is consumed although the broker is \
             killed and restarted mid-run; duplicates are counted, not failed",
            90,
            false
        ),
        case!(
            publish_dedup,
            "broker",
            &[Capability::Broker, Capability::BrokerDedup],
            "a durable publish repeating a dedup id inside the window is acknowledged as a \
             duplicate and stored once"
        ),
        case!(
            slow_consumer,
            "broker",
            &[Capability::Broker],
            "a subscriber that falls behind loses messages only with the overflow reported, and \
             its subscription keeps working"
        ),
    ]
}

/// How long a reader waits for the next message before the case fails.
const STALL: Duration = Duration::from_secs(10);
/// The end-of-publishing marker.
const END: &[u8] = b"wirebench-end";

/// A topic no other case or run uses (cases may share an external broker).
fn unique(case: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!("wb.case.{case}.{}x{n}x{t}", std::process::id())
}

fn seq_payload(publisher: u32, seq: u64) -> Bytes {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&publisher.to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    Bytes::from(b)
}

fn parse_seq(b: &[u8]) -> Result<(u32, u64), Failure> {
    let (p, s) = (b.get(..4), b.get(4..12));
    match (p, s, b.len()) {
        (Some(p), Some(s), 12) => {
            let p = u32::from_le_bytes(p.try_into().unwrap_or_default());
            let s = u64::from_le_bytes(s.try_into().unwrap_or_default());
            Ok((p, s))
        }
        _ => Err(Failure(format!(
            "unexpected {}-byte message {b:?}",
            b.len()
        ))),
    }
}

async fn next_within<S: Subscription>(sub: &mut S, what: &str) -> Result<Bytes, Failure> {
    match tokio::time::timeout(STALL, sub.next()).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(Failure(format!("{what}: subscription closed"))),
        Err(_) => Err(Failure(format!("{what}: nothing for {STALL:?}"))),
    }
}

/// A reader: its client, its subscription to the topic, and one to `<topic>.end`.
struct Reader<C: BrokerClient> {
    client: C,
    sub: C::Subscription,
    end: C::Subscription,
}

impl<C: BrokerClient> Reader<C> {
    async fn new(ctx_client: C, topic: &str, group: Option<&str>) -> Result<Reader<C>, Failure> {
        let sub = ctx_client.subscribe(topic, group).await?;
        let end = ctx_client.subscribe(&format!("{topic}.end"), None).await?;
        Ok(Reader {
            client: ctx_client,
            sub,
            end,
        })
    }

    /// Waits for the end marker, then takes everything delivered before it.
    async fn collect(&mut self, what: &str) -> Result<Vec<Bytes>, Failure> {
        let m = next_within(&mut self.end, what).await?;
        ensure!(m[..] == *END, "{what}: unexpected end marker {m:?}");
        let mut got = Vec::new();
        while let Some(m) = self.sub.try_next() {
            got.push(m);
        }
        Ok(got)
    }
}

async fn publish_seqs<C: BrokerClient>(
    client: &C,
    topic: &str,
    publisher: u32,
    n: u64,
) -> Result<(), Failure> {
    for seq in 0..n {
        client.publish(topic, seq_payload(publisher, seq)).await?;
    }
    Ok(())
}

async fn end<C: BrokerClient>(client: &C, topic: &str) -> Result<(), Failure> {
    client.flush().await?;
    client
        .publish(&format!("{topic}.end"), Bytes::from_static(END))
        .await?;
    Ok(client.flush().await?)
}

async fn fanout<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const SUBSCRIBERS: usize = 3;
    const N: u64 = 1000;
    let broker = ctx.broker().await?;
    let topic = unique("fanout");
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        readers.push(Reader::new(broker.client().await?, &topic, None).await?);
    }
    let publisher = broker.client().await?;
    publish_seqs(&publisher, &topic, 0, N).await?;
    end(&publisher, &topic).await?;
    for (i, r) in readers.iter_mut().enumerate() {
        let got = r.collect(&format!("subscriber {i}")).await?;
        let seqs = got
            .iter()
            .map(|m| parse_seq(m).map(|(_, s)| s))
            .collect::<Result<Vec<_>, _>>()?;
        ensure!(
            seqs.len() as u64 == N,
            "subscriber {i} received {} of {N} messages (overflow reported: {})",
            seqs.len(),
            r.client.overflowed()
        );
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        ensure!(
            sorted.len() as u64 == N && sorted.last() == Some(&(N - 1)),
            "subscriber {i} received duplicates or strangers instead of 0..{N}"
        );
    }
    Ok(Some(format!("{SUBSCRIBERS} subscribers x {N} messages")))
}

async fn queue_group_once<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const MEMBERS: usize = 3;
    const N: u64 = 3000;
    let broker = ctx.broker().await?;
    let topic = unique("queue");
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        members.push(Reader::new(broker.client().await?, &topic, Some("workers")).await?);
    }
    let publisher = broker.client().await?;
    publish_seqs(&publisher, &topic, 0, N).await?;
    end(&publisher, &topic).await?;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut shares = Vec::new();
    for (i, m) in members.iter_mut().enumerate() {
        let got = m.collect(&format!("member {i}")).await?;
        shares.push(got.len());
        for b in got {
            let (_, s) = parse_seq(&b)?;
            if let Some(other) = seen.insert(s, i) {
                return Err(Failure(format!(
                    "message {s} reached member {other} and member {i}"
                )));
            }
        }
    }
    let missing = (0..N).filter(|s| !seen.contains_key(s)).count();
    ensure!(
        missing == 0,
        "{missing} of {N} messages reached no member (shares {shares:?})"
    );
    ensure!(
        shares.iter().filter(|n| **n > 0).count() > 1,
        "one member took every message (shares {shares:?}): no load sharing"
    );
    Ok(Some(format!(
        "{N} messages, each to one member; shares {shares:?}"
    )))
}

async fn per_publisher_order<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const PUBLISHERS: u32 = 4;
    const N: u64 = 2000;
    let broker = ctx.broker().await?;
    let topic = unique("order");
    let sub_client = broker.client().await?;
    let mut sub = sub_client.subscribe(&topic, None).await?;
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        publishers.push(broker.client().await?);
    }
    let publishing = join_all(publishers.iter().enumerate().map(|(p, c)| {
        let topic = topic.clone();
        async move {
            let p = p as u32;
            publish_seqs(c, &topic, p, N).await?;
            // This publisher's own end marker, on the topic: it arrives after its messages.
            c.publish(&topic, seq_payload(p, u64::MAX)).await?;
            c.flush().await.map_err(Failure::from)
        }
    }));
    let reading = async {
        let mut next = vec![0u64; PUBLISHERS as usize];
        let mut ended = 0;
        while ended < PUBLISHERS {
            let m = next_within(&mut sub, "subscriber").await?;
            let (p, s) = parse_seq(&m)?;
            let expected = next
                .get_mut(p as usize)
                .ok_or_else(|| Failure(format!("message from unknown publisher {p}")))?;
            if s == u64::MAX {
                ensure!(
                    *expected == N,
                    "publisher {p}: end marker after {expected} of {N} messages"
                );
                ended += 1;
                continue;
            }
            ensure!(
                s == *expected,
                "publisher {p}: message {s} arrived where {expected} was due (reordered or lost)"
            );
            *expected += 1;
        }
        Ok::<_, Failure>(())
    };
    let (published, read) = tokio::join!(publishing, reading);
    published.into_iter().collect::<Result<Vec<_>, _>>()?;
    read?;
    Ok(Some(format!(
        "{PUBLISHERS} publishers x {N} messages, interleaved, each in order"
    )))
}

async fn at_least_once<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const N: u64 = 2000;
    const RETRY_PAUSE: Duration = Duration::from_millis(50);
    const IN_FLIGHT: usize = 32;
    const GIVE_UP: Duration = Duration::from_secs(30);
    let mut broker = ctx.broker().await?;
    ensure!(
        broker.can_restart(),
        "this case restarts its broker, and the broker at {} cannot be restarted",
        broker.url()
    );
    let topic = unique("alo");
    let name = topic.replace('.', "_");
    let publisher = broker.client().await?;
    let consumer_client = broker.client().await?;
    publisher
        .create_durable(&DurableSpec {
            name: name.clone(),
            topic: topic.clone(),
            dedup_window: Duration::from_secs(120),
        })
        .await?;
    let mut consumer = consumer_client.consume(&name, "reader").await?;

    // The consumer runs throughout, across the restart, acknowledging what it reads.
    let reading = tokio::spawn(async move {
        let mut count: HashMap<u64, u32> = HashMap::new();
        let mut redelivered = 0u64;
        while (count.len() as u64) < N {
            let d = consumer.next().await.map_err(Failure::from)?;
            let (_, s) = parse_seq(d.payload())?;
            *count.entry(s).or_default() += 1;
            redelivered += u64::from(d.redelivered());
            // A failed ack (broker down) only means a redelivery later: counted, not failed.
            let _ = d.ack().await;
        }
        let duplicates: u64 = count.values().map(|c| u64::from(c - 1)).sum();
        Ok::<_, Failure>((duplicates, redelivered))
    });

    // Publishes run IN_FLIGHT at a time, so the kill lands on some whose acknowledgement is
    // lost: they are retried (an at-least-once producer), which may store them twice.
    let retries = AtomicU64::new(0);
    let (acked_tx, acked_rx) = tokio::sync::watch::channel(0u64);
    let publishing = futures::stream::iter(0..N)
        .map(|seq| {
            let (publisher, topic, retries, acked_tx) = (&publisher, &topic, &retries, &acked_tx);
            async move {
                let started = Instant::now();
                loop {
                    match publisher
                        .publish_durable(topic, seq_payload(0, seq), None)
                        .await
                    {
                        Ok(_) => {
                            acked_tx.send_modify(|n| *n += 1);
                            return Ok(());
                        }
                        Err(e) => {
                            ensure!(
                                started.elapsed() < GIVE_UP,
                                "message {seq} was never acknowledged within {GIVE_UP:?}: {e}"
                            );
                            retries.fetch_add(1, Ordering::Relaxed);
                            // The broker is coming back: retry shortly.
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                    }
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>();
    let restarting = async {
        let mut rx = acked_rx.clone();
        let _ = rx.wait_for(|n| *n >= N / 2).await;
        let t = Instant::now();
        broker.restart(RestartMode::Kill).await?;
        Ok::<_, Failure>(t.elapsed())
    };
    let (published, restarted) = tokio::join!(publishing, restarting);
    published?;
    let downtime = restarted?;
    let retries = retries.into_inner();
    let (duplicates, redelivered) =
        match tokio::time::timeout(Duration::from_secs(60), reading).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => return Err(Failure(format!("the consumer task failed: {e}"))),
            Err(_) => {
                return Err(Failure(
                    "not every acknowledged message was consumed within 60 s".into(),
                ));
            }
        };
    let stored = publisher.durable_len(&name).await?;
    let _ = publisher.delete_durable(&name).await;
    Ok(Some(format!(
        "{N} acknowledged, all consumed across a kill -9 restart ({} ms down); {retries} \
         publish retries, {stored} stored ({} stored twice), {duplicates} duplicate deliveries \
         ({redelivered} flagged as redelivered)",
        downtime.as_millis(),
        stored.saturating_sub(N)
    )))
}

async fn publish_dedup<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    let broker = ctx.broker().await?;
    let topic = unique("dedup");
    let name = topic.replace('.', "_");
    let c = broker.client().await?;
    c.create_durable(&DurableSpec {
        name: name.clone(),
        topic: topic.clone(),
        dedup_window: Duration::from_secs(60),
    })
    .await?;
    // id, how often it is published; each repeat carries a different payload (copy number).
    let plan: [(&str, u32); 3] = [("a", 3), ("b", 2), ("c", 1)];
    let mut publishes = 0;
    for (id, times) in plan {
        for copy in 0..times {
            let payload = Bytes::from(format!("{id}:{copy}"));
            let ack = c.publish_durable(&topic, payload, Some(id)).await?;
            publishes += 1;
            ensure!(
                ack.duplicate == (copy > 0),
                "id {id:?} copy {copy}: acknowledged with duplicate={} (expected {})",
                ack.duplicate,
                copy > 0
            );
        }
    }
    let stored = c.durable_len(&name).await?;
    ensure!(
        stored == plan.len() as u64,
        "{stored} messages stored for {} distinct ids",
        plan.len()
    );
    let mut consumer = c.consume(&name, "reader").await?;
    let mut got = Vec::new();
    for _ in 0..plan.len() {
        let d = tokio::time::timeout(STALL, consumer.next())
            .await
            .map_err(|_| Failure("a stored message was not delivered".into()))??;
        got.push(String::from_utf8_lossy(d.payload()).into_owned());
        d.ack().await?;
    }
    ensure!(
        got == ["a:0", "b:0", "c:0"],
        "stored {got:?}, expected the first copy of each id"
    );
    let _ = c.delete_durable(&name).await;
    Ok(Some(format!(
        "{publishes} publishes of {} ids, {stored} stored",
        plan.len()
    )))
}

async fn slow_consumer<T: Transport + Clone>(ctx: Ctx<T>) -> CaseResult {
    const BUFFER: usize = 256;
    const N: u64 = 5000;
    let broker = ctx.broker().await?;
    let topic = unique("slow");
    let slow = broker
        .client_with(&BrokerClientConfig {
            subscription_buffer: BUFFER,
            ..BrokerClientConfig::default()
        })
        .await?;
    let mut reader = Reader::new(slow, &topic, None).await?;
    let publisher = broker.client().await?;
    // The reader reads nothing until everything is published: it falls behind by design.
    publish_seqs(&publisher, &topic, 0, N).await?;
    end(&publisher, &topic).await?;
    let got = reader.collect("slow subscriber").await?;
    let mut last = None;
    for m in &got {
        let (_, s) = parse_seq(m)?;
        ensure!(
            last.is_none_or(|l| s > l),
            "message {s} after {last:?}: overflow reordered or duplicated messages"
        );
        last = Some(s);
    }
    let lost = N - got.len() as u64;
    let reported = reader
        .client
        .await_overflow(u64::from(lost > 0), Duration::from_secs(5))
        .await;
    ensure!(
        lost == 0 || reported > 0,
        "{lost} of {N} messages lost and no overflow reported: silent loss"
    );
    // The subscription still works once the reader catches up.
    publisher.publish(&topic, seq_payload(1, 0)).await?;
    publisher.flush().await?;
    let m = next_within(&mut reader.sub, "slow subscriber after overflow").await?;
    ensure!(
        parse_seq(&m)? == (1, 0),
        "after the overflow the subscriber received {m:?}"
    );
    Ok(Some(if lost == 0 {
        format!("no overflow: {N} messages all delivered with a {BUFFER}-message buffer")
    } else {
        format!(
            "{N} published into a {BUFFER}-message buffer: {} delivered, {lost} lost, \
             {reported} overflow reports (the client library's report queue may hold fewer \
             than the drops)",
            got.len()
        )
    }))
}
