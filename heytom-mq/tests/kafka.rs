//! What is specific to the Kafka transport, against a real Kafka-protocol
//! broker: topic creation and configs (admin API), keys and partitions on
//! the wire, producer settings, consumer-group settings and committed
//! offsets, dead-letter records' origin headers, several event types on one
//! topic, the manual consumer and options redaction. Behaviour every
//! transport shares (fan-out across groups, competing consumers, retry,
//! dead-lettering, malformed payloads, ordering, shutdown, restart) is
//! checked by the conformance suite (`tests/conformance/`), which runs on
//! Kafka too.
//!
//! The broker comes from `HEYTOM_KAFKA_BOOTSTRAP_SERVERS` (set by
//! `eval "$(scripts/kafka-broker.sh start)"`); when it is unset the tests
//! start one with that script. With `HEYTOM_TEST_REQUIRE_SERVICES=1` a broker
//! that cannot be reached fails the test; otherwise the test prints a notice
//! and returns early.
#![cfg(feature = "kafka")]

mod kafka_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use heytom_mq::headers::{DEAD_LETTER_OFFSET, DEAD_LETTER_PARTITION, DEAD_LETTER_TOPIC};
use heytom_mq::KafkaTransport;
use heytom_mq::{
    Acks, App, CompressionType, Error, Event, HandlerEntry, Headers, KafkaConsumer, KafkaOptions,
    KafkaProducer, KafkaRoute, RetryPolicy, Route, Transport,
};
use kafka_support::*;
use serde::{Deserialize, Serialize};

/// Defines a test event `$ty { key: String, seq: u32 }` on a topic unique to
/// this run, keyed by `key`, with the given route settings.
macro_rules! test_event {
    ($ty:ident, |$route:ident| $settings:block) => {
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        struct $ty {
            key: String,
            seq: u32,
        }

        impl Event for $ty {
            const NAME: &'static str = stringify!($ty);
            fn route() -> &'static Route {
                static ROUTE: OnceLock<Route> = OnceLock::new();
                ROUTE.get_or_init(|| {
                    #[allow(unused_mut)]
                    let mut $route = KafkaRoute::new(unique_topic(stringify!($ty)));
                    $route.session_timeout_ms = Some(6000);
                    $settings
                    Route::Kafka($route)
                })
            }
            fn partition_key(&self) -> Option<String> {
                Some(self.key.clone())
            }
        }

        impl $ty {
            #[allow(dead_code)]
            fn topic() -> &'static str {
                match Self::route() {
                    Route::Kafka(k) => k.topic,
                    _ => unreachable!(),
                }
            }
            #[allow(dead_code)]
            fn new(key: impl Into<String>, seq: u32) -> Self {
                $ty { key: key.into(), seq }
            }
        }
    };
}

test_event!(TopicSettingsEvt, |r| {
    r.num_partitions = Some(3);
    r.replication_factor = Some(1);
    r.retention_ms = Some(86_400_000);
    r.compression_type = Some(CompressionType::Gzip);
});

test_event!(KeyedEvt, |r| {
    r.num_partitions = Some(3);
});

test_event!(IdempotentEvt, |r| {
    r.num_partitions = Some(2);
    r.enable_idempotence = Some(true);
    r.acks = Some(Acks::All);
    r.compression_type = Some(CompressionType::Gzip);
});

test_event!(ResumeEvt, |r| {
    r.num_partitions = Some(1);
});

test_event!(DeadEvt, |r| {
    r.num_partitions = Some(1);
});

test_event!(MalformedEvt, |r| {
    r.num_partitions = Some(1);
});

test_event!(GroupEvt, |r| {
    r.num_partitions = Some(1);
    r.group_id = Some("route-group");
});

// Two event types on one topic (one topic per aggregate).
test_event!(OrderPlacedEvt, |r| {
    r.num_partitions = Some(3);
});

test_event!(OrderShippedEvt, |r| {
    r.topic = OrderPlacedEvt::topic();
    r.num_partitions = Some(3);
});

test_event!(CartOpenedEvt, |r| {
    r.num_partitions = Some(3);
});

test_event!(CartClosedEvt, |r| {
    r.topic = CartOpenedEvt::topic();
    r.num_partitions = Some(3);
});

// On CartOpenedEvt's topic, with other consumer settings.
test_event!(CartOtherSettingsEvt, |r| {
    r.topic = CartOpenedEvt::topic();
    r.session_timeout_ms = Some(7000);
});

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(max_attempts)
        .initial_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(50))
}

#[test]
fn options_debug_hides_secrets() {
    let o = KafkaOptions::new("127.0.0.1:9092")
        .sasl_plain("svc", "hunter2-sasl")
        .ssl_key_password("hunter2-key")
        .property("sasl.oauthbearer.client.secret", "hunter2-oauth")
        .consumer_property("ssl.keystore.password", "hunter2-store")
        .property("fetch.wait.max.ms", "10");
    let dbg = format!("{o:?}");
    assert!(!dbg.contains("hunter2"), "secret leaked: {dbg}");
    assert!(
        dbg.contains("svc") && dbg.contains("fetch.wait.max.ms"),
        "{dbg}"
    );
}

#[tokio::test]
async fn unreachable_broker_is_a_connection_error() {
    let options = KafkaOptions::new("127.0.0.1:1").operation_timeout(Duration::from_secs(2));
    match KafkaTransport::connect(options).await {
        Err(Error::Connection { transport, .. }) => assert_eq!(transport, "Kafka"),
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[tokio::test]
async fn topic_created_with_attribute_partitions_and_configs() {
    let Some(servers) = bootstrap() else { return };
    let transport = KafkaTransport::connect(options(&servers))
        .await
        .expect("connect");
    transport
        .declare(TopicSettingsEvt::route(), TopicSettingsEvt::NAME)
        .await
        .expect("declare");
    let topic = TopicSettingsEvt::topic();
    assert_eq!(partition_count(&servers, topic).await, 3);
    let configs = topic_configs(&servers, topic).await;
    assert_eq!(
        configs.get("retention.ms").map(String::as_str),
        Some("86400000"),
        "{configs:?}"
    );
    assert_eq!(
        configs.get("compression.type").map(String::as_str),
        Some("gzip"),
        "{configs:?}"
    );

    // Declaring again is fine; asking for more partitions than exist is a clear error.
    transport
        .declare(TopicSettingsEvt::route(), TopicSettingsEvt::NAME)
        .await
        .expect("declare again");
    let mut more = KafkaRoute::new(topic);
    more.num_partitions = Some(5);
    let fresh = KafkaTransport::connect(options(&servers))
        .await
        .expect("connect");
    match fresh
        .declare_topic(&Route::Kafka(more), "TopicSettingsEvt")
        .await
    {
        Err(Error::Topology { message, .. }) => {
            assert!(message.contains(topic), "{message}");
            assert!(
                message.contains("3 partition") && message.contains('5'),
                "{message}"
            );
        }
        other => panic!("expected a topology error, got {other:?}"),
    }
}

#[tokio::test]
async fn keyed_messages_land_on_one_partition_in_order_with_headers() {
    let Some(servers) = bootstrap() else { return };
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    let keys = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let mut events = Vec::new();
    for seq in 0..20 {
        for k in keys {
            events.push(KeyedEvt::new(k, seq));
        }
    }
    let ids = producer.send_batch(&events).await.expect("send_batch");
    assert_eq!(ids.len(), events.len());
    let mut user = Headers::new();
    user.insert(
        "traceparent".into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    user.insert("tenant".into(), "acme".into());
    user.insert("correlation-id".into(), "corr-42".into());
    let single_id = producer
        .send_with_headers(&KeyedEvt::new("alpha", 20), user)
        .await
        .expect("send");

    let records = read_topic(&servers, KeyedEvt::topic(), events.len() + 1).await;
    assert_eq!(records.len(), events.len() + 1);
    let mut partitions_of: HashMap<String, BTreeSet<i32>> = HashMap::new();
    let mut seqs_of: HashMap<String, Vec<u32>> = HashMap::new();
    for r in &records {
        let key = String::from_utf8(r.key.clone().expect("keyed")).expect("utf8 key");
        let e: KeyedEvt = serde_json::from_slice(&r.payload).expect("json payload");
        assert_eq!(e.key, key);
        assert_eq!(
            r.headers.get("heytom-event-name").map(String::as_str),
            Some("KeyedEvt")
        );
        assert!(r.headers.contains_key("heytom-event-id"));
        assert!(r.headers.contains_key("heytom-occurred-at"));
        assert!(r.headers.contains_key("correlation-id"));
        partitions_of
            .entry(key.clone())
            .or_default()
            .insert(r.partition);
        seqs_of.entry(key).or_default().push(e.seq);
    }
    for k in keys {
        assert_eq!(
            partitions_of[k].len(),
            1,
            "key {k} on partitions {:?}",
            partitions_of[k]
        );
        let want: Vec<u32> = if k == "alpha" {
            (0..=20).collect()
        } else {
            (0..20).collect()
        };
        assert_eq!(seqs_of[k], want, "order of key {k}");
    }
    let used: BTreeSet<i32> = partitions_of.values().flatten().copied().collect();
    assert!(
        used.len() > 1,
        "6 keys all hashed to one of 3 partitions: {used:?}"
    );
    let single = records
        .iter()
        .find(|r| r.headers.get("heytom-event-id") == Some(&single_id.to_string()))
        .expect("the message with user headers");
    assert_eq!(
        single.headers.get("tenant").map(String::as_str),
        Some("acme")
    );
    assert_eq!(
        single.headers.get("correlation-id").map(String::as_str),
        Some("corr-42")
    );
    assert!(single
        .headers
        .get("traceparent")
        .is_some_and(|t| t.starts_with("00-0af7")));
}

#[tokio::test]
async fn idempotent_gzip_producing_delivers_each_message_once() {
    let Some(servers) = bootstrap() else { return };
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    let events: Vec<_> = (0..500)
        .map(|i| IdempotentEvt::new(format!("k{}", i % 7), i))
        .collect();
    producer.send_batch(&events).await.expect("send_batch");
    for i in 500..510 {
        producer
            .send(&IdempotentEvt::new("single", i))
            .await
            .expect("send");
    }
    let records = read_topic(&servers, IdempotentEvt::topic(), 510).await;
    let seqs: Vec<u32> = records
        .iter()
        .map(|r| {
            serde_json::from_slice::<IdempotentEvt>(&r.payload)
                .expect("json")
                .seq
        })
        .collect();
    let unique: BTreeSet<u32> = seqs.iter().copied().collect();
    assert_eq!(seqs.len(), 510, "duplicates or losses");
    assert_eq!(unique, (0..510).collect());
}

#[tokio::test]
async fn handlers_sharing_a_group_share_one_consumer_and_each_sees_every_message() {
    let Some(servers) = bootstrap() else { return };
    let a = Arc::new(AtomicU32::new(0));
    let b = Arc::new(AtomicU32::new(0));
    let (ca, cb) = (a.clone(), b.clone());
    let opts = options(&servers).group_id(unique_group("default"));
    let running = App::builder()
        .kafka(opts)
        .discover(false)
        .handler_entry(HandlerEntry::from_closure("first", move |_: GroupEvt| {
            let c = ca.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }))
        .handler_entry(HandlerEntry::from_closure("second", move |_: GroupEvt| {
            let c = cb.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
            }
        }))
        .start()
        .await
        .expect("start");
    let transport = KafkaTransport::new(options(&servers)).expect("transport");
    let h = HandlerEntry::from_closure("x", |_: GroupEvt| async {});
    assert_eq!(
        transport.group_for(&h),
        "route-group",
        "route group_id wins over the default"
    );
    assert_eq!(
        transport.group_for(&h.clone().group("mine")),
        "mine",
        "handler group wins"
    );

    let events: Vec<_> = (0..50).map(|i| GroupEvt::new("k", i)).collect();
    running.producer().send_batch(&events).await.expect("send");
    let done = eventually(Duration::from_secs(60), || {
        a.load(Ordering::SeqCst) >= 50 && b.load(Ordering::SeqCst) >= 50
    })
    .await;
    running.shutdown().await.expect("shutdown");
    assert!(
        done,
        "first {} second {}",
        a.load(Ordering::SeqCst),
        b.load(Ordering::SeqCst)
    );
    assert_eq!(a.load(Ordering::SeqCst), 50);
    assert_eq!(b.load(Ordering::SeqCst), 50);
}

#[tokio::test]
async fn consumer_dropped_without_commit_is_resumed_from_last_committed_offset() {
    let Some(servers) = bootstrap() else { return };
    let group = unique_group("resume");
    let topic = ResumeEvt::topic();
    let total = 300u32;
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    let events: Vec<_> = (0..total).map(|i| ResumeEvt::new("one-key", i)).collect();
    producer.send_batch(&events).await.expect("send");

    let first: Arc<Mutex<Vec<u32>>> = Arc::default();
    let a = KafkaConsumer::new(options(&servers).commit_interval(Duration::from_millis(100)))
        .expect("consumer")
        .with_group(group.clone());
    a.start().await.expect("start");
    let sink = first.clone();
    a.subscribe(move |e: ResumeEvt| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(e.seq);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("subscribe");
    assert!(
        eventually(Duration::from_secs(60), || first.lock().unwrap().len()
            >= 60)
        .await,
        "first consumer got too little"
    );
    // Let a timed commit happen, then crash: drop without stop(), nothing more committed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(a);
    let committed = committed_offset(&servers, &group, topic, 0).await;
    let handled_by_a = first.lock().unwrap().clone();
    assert!(committed > 0, "nothing was committed");
    assert!(
        committed < i64::from(total),
        "everything was committed already ({committed})"
    );
    assert!(
        committed <= handled_by_a.len() as i64,
        "committed {committed} beyond what was handled ({})",
        handled_by_a.len()
    );

    let second: Arc<Mutex<Vec<u32>>> = Arc::default();
    let b = KafkaConsumer::new(options(&servers))
        .expect("consumer")
        .with_group(group.clone());
    b.start().await.expect("start");
    let sink = second.clone();
    b.subscribe(move |e: ResumeEvt| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(e.seq);
        }
    })
    .await
    .expect("subscribe");
    let expected = (total as i64 - committed) as usize;
    let done = eventually(Duration::from_secs(60), || {
        second.lock().unwrap().len() >= expected
    })
    .await;
    b.stop().await.expect("stop");
    let got = second.lock().unwrap().clone();
    assert!(done, "second consumer got {} of {expected}", got.len());
    // Resumed exactly at the committed offset (offset == seq on this fresh topic), in order.
    let want: Vec<u32> = (committed as u32..total).collect();
    assert_eq!(got, want);
    let union: BTreeSet<u32> = handled_by_a.iter().chain(got.iter()).copied().collect();
    assert_eq!(union, (0..total).collect(), "something was lost");
    assert_eq!(
        committed_offset(&servers, &group, topic, 0).await,
        i64::from(total)
    );
}

#[tokio::test]
async fn exhausted_retries_go_to_the_dead_letter_topic_with_headers() {
    let Some(servers) = bootstrap() else { return };
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let group = unique_group("dead");
    let consumer = KafkaConsumer::new(options(&servers))
        .expect("consumer")
        .with_group(group.clone())
        .with_retry(fast_retry(3));
    consumer.start().await.expect("start");
    consumer
        .subscribe(move |e: DeadEvt| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if e.seq == 1 {
                    Err::<(), _>("boom: inventory service down")
                } else {
                    Ok(())
                }
            }
        })
        .await
        .expect("subscribe");
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    let id = producer
        .send(&DeadEvt::new("order-1", 1))
        .await
        .expect("send");
    producer
        .send(&DeadEvt::new("order-2", 2))
        .await
        .expect("send");
    let dlq = format!("{}.dlq", DeadEvt::topic());
    let records = read_topic(&servers, &dlq, 1).await;
    let done = eventually(Duration::from_secs(30), || {
        calls.load(Ordering::SeqCst) >= 4
    })
    .await;
    consumer.stop().await.expect("stop");
    assert!(done);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    let h = &r.headers;
    assert_eq!(h.get("heytom-event-id"), Some(&id.to_string()));
    assert_eq!(
        h.get("heytom-event-name").map(String::as_str),
        Some("DeadEvt")
    );
    assert!(
        h["heytom-dead-letter-reason"].contains("inventory service down"),
        "{h:?}"
    );
    assert_eq!(
        h.get("heytom-dead-letter-attempts").map(String::as_str),
        Some("3")
    );
    assert_eq!(
        h.get("heytom-dead-letter-handler").map(String::as_str),
        Some("DeadEvt.subscriber")
    );
    assert_eq!(
        h.get(DEAD_LETTER_TOPIC).map(String::as_str),
        Some(DeadEvt::topic())
    );
    assert_eq!(h.get(DEAD_LETTER_PARTITION).map(String::as_str), Some("0"));
    assert_eq!(h.get(DEAD_LETTER_OFFSET).map(String::as_str), Some("0"));
    assert_eq!(r.key.as_deref(), Some(&b"order-1"[..]));
    let body: DeadEvt = serde_json::from_slice(&r.payload).expect("original body");
    assert_eq!(body, DeadEvt::new("order-1", 1));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "3 attempts for the bad one, 1 for the good one"
    );
    assert_eq!(
        committed_offset(&servers, &group, DeadEvt::topic(), 0).await,
        2,
        "both committed"
    );
}

#[tokio::test]
async fn malformed_payloads_are_dead_lettered_and_consumption_goes_on() {
    let Some(servers) = bootstrap() else { return };
    let got: Arc<Mutex<Vec<u32>>> = Arc::default();
    let sink = got.clone();
    let consumer = KafkaConsumer::new(options(&servers))
        .expect("consumer")
        .with_group(unique_group("malformed"))
        .with_retry(fast_retry(3));
    consumer.start().await.expect("start");
    consumer
        .subscribe(move |e: MalformedEvt| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(e.seq);
            }
        })
        .await
        .expect("subscribe");
    let topic = MalformedEvt::topic();
    let id = uuid::Uuid::now_v7().to_string();
    // Not JSON at all, with heytom headers.
    produce_raw(
        &servers,
        topic,
        b"{not json",
        &[
            ("heytom-event-id", id.as_str()),
            ("heytom-event-name", "MalformedEvt"),
        ],
    )
    .await;
    // A foreign producer: no headers, JSON of the wrong shape.
    produce_raw(&servers, topic, br#"{"unexpected":true}"#, &[]).await;
    // Another event type on this topic.
    produce_raw(
        &servers,
        topic,
        br#"{"key":"k","seq":9}"#,
        &[
            ("heytom-event-id", id.as_str()),
            ("heytom-event-name", "SomethingElse"),
        ],
    )
    .await;
    // A broken event id header.
    produce_raw(
        &servers,
        topic,
        br#"{"key":"k","seq":8}"#,
        &[
            ("heytom-event-id", "nope"),
            ("heytom-event-name", "MalformedEvt"),
        ],
    )
    .await;
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    producer
        .send(&MalformedEvt::new("k", 7))
        .await
        .expect("send");

    let dlq = format!("{topic}.dlq");
    let records = read_topic(&servers, &dlq, 4).await;
    let done = eventually(Duration::from_secs(30), || !got.lock().unwrap().is_empty()).await;
    consumer.stop().await.expect("stop");
    assert!(done, "the valid message after the bad ones was not handled");
    assert_eq!(*got.lock().unwrap(), vec![7]);
    assert_eq!(records.len(), 4);
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| {
            r.headers
                .get("heytom-dead-letter-reason")
                .map_or("", String::as_str)
        })
        .collect();
    assert!(reasons[0].contains("decode"), "{reasons:?}");
    assert!(reasons[1].contains("decode"), "{reasons:?}");
    assert!(reasons[2].contains("unknown message type"), "{reasons:?}");
    assert!(reasons[3].contains("malformed envelope"), "{reasons:?}");
    for r in &records {
        assert_eq!(
            r.headers
                .get("heytom-dead-letter-attempts")
                .map(String::as_str),
            Some("0")
        );
    }
    assert_eq!(records[0].payload, b"{not json");
}

/// Which type a handled message had, and its sequence number.
type Handled = Arc<Mutex<BTreeMap<String, Vec<(&'static str, u32)>>>>;

/// Sends `rounds` rounds of one `OrderPlacedEvt`-like message and one
/// `OrderShippedEvt`-like message per key, awaiting each, so that every key's
/// messages are on the topic in sequence order (0, 1, 2, ... alternating types).
macro_rules! send_alternating {
    ($producer:expr, $a:ident, $b:ident, $keys:expr, $rounds:expr, $from:expr) => {
        for round in 0..$rounds {
            for k in $keys {
                let seq = $from + 2 * round;
                $producer.send(&$a::new(k, seq)).await.expect("send");
                $producer.send(&$b::new(k, seq + 1)).await.expect("send");
            }
        }
    };
}

fn record(seen: &Handled, key: &str, kind: &'static str, seq: u32) {
    seen.lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .push((kind, seq));
}

fn handled_count(seen: &Handled) -> usize {
    seen.lock().unwrap().values().map(Vec::len).sum()
}

#[tokio::test]
async fn two_event_types_on_one_topic_in_one_group_share_one_consumer_in_an_app() {
    let Some(servers) = bootstrap() else { return };
    let seen: Handled = Arc::default();
    let (sa, sb) = (seen.clone(), seen.clone());
    let group = unique_group("orders");
    let running = App::builder()
        .kafka(options(&servers).group_id(group.clone()))
        .discover(false)
        .handler_entry(HandlerEntry::from_closure(
            "placed",
            move |e: OrderPlacedEvt| {
                let seen = sa.clone();
                async move { record(&seen, &e.key, "placed", e.seq) }
            },
        ))
        .handler_entry(HandlerEntry::from_closure(
            "shipped",
            move |e: OrderShippedEvt| {
                let seen = sb.clone();
                async move { record(&seen, &e.key, "shipped", e.seq) }
            },
        ))
        .start()
        .await
        .expect("start");
    let keys = ["o-1", "o-2", "o-3", "o-4", "o-5", "o-6"];
    let rounds = 20u32;
    let producer = running.producer();
    send_alternating!(producer, OrderPlacedEvt, OrderShippedEvt, keys, rounds, 0);
    let total = keys.len() * rounds as usize * 2;
    let arrived = eventually(Duration::from_secs(60), || handled_count(&seen) >= total).await;
    // Give a duplicate or a late dead letter a chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.shutdown().await.expect("shutdown");
    assert!(arrived, "only {} of {total} handled", handled_count(&seen));
    {
        let s = seen.lock().unwrap();
        for k in keys {
            let got = &s[k];
            // Every message of both types once, in the key's (partition's) order.
            let seqs: Vec<u32> = got.iter().map(|(_, seq)| *seq).collect();
            assert_eq!(seqs, (0..rounds * 2).collect::<Vec<_>>(), "key {k}");
            for (kind, seq) in got {
                let want = if seq % 2 == 0 { "placed" } else { "shipped" };
                assert_eq!(*kind, want, "key {k} seq {seq} went to the wrong handler");
            }
        }
    }
    let used: BTreeSet<i32> = read_topic(&servers, OrderPlacedEvt::topic(), total)
        .await
        .iter()
        .map(|r| r.partition)
        .collect();
    assert!(used.len() > 1, "all keys on one partition: {used:?}");
    let dlq = format!("{}.dlq", OrderPlacedEvt::topic());
    assert_eq!(
        message_count(&servers, &dlq).await,
        0,
        "good messages were dead-lettered"
    );
    let committed: i64 = {
        let mut sum = 0;
        for p in 0..3 {
            sum += committed_offset(&servers, &group, OrderPlacedEvt::topic(), p)
                .await
                .max(0);
        }
        sum
    };
    assert_eq!(
        committed, total as i64,
        "every offset committed on shutdown"
    );
}

#[tokio::test]
async fn manual_consumer_of_two_types_on_one_topic_and_unsubscribing_one() {
    let Some(servers) = bootstrap() else { return };
    let seen: Handled = Arc::default();
    let (sa, sb) = (seen.clone(), seen.clone());
    let group = unique_group("carts");
    let consumer = KafkaConsumer::new(options(&servers))
        .expect("consumer")
        .with_group(group.clone());
    consumer
        .subscribe(move |e: CartOpenedEvt| {
            let seen = sa.clone();
            async move { record(&seen, &e.key, "opened", e.seq) }
        })
        .await
        .expect("subscribe opened");
    consumer.start().await.expect("start");
    consumer
        .subscribe(move |e: CartClosedEvt| {
            let seen = sb.clone();
            async move { record(&seen, &e.key, "closed", e.seq) }
        })
        .await
        .expect("subscribe closed while running");
    // The same event twice on one consumer is refused.
    match consumer.subscribe(|_: CartClosedEvt| async {}).await {
        Err(Error::AlreadySubscribed(_)) => {}
        other => panic!("expected AlreadySubscribed, got {other:?}"),
    }
    // Another event on the shared consumer must ask for the same consumer settings.
    match consumer.subscribe(|_: CartOtherSettingsEvt| async {}).await {
        Err(Error::Configuration(message)) => {
            assert!(
                message.contains("CartOtherSettingsEvt")
                    && message.contains("CartOpenedEvt")
                    && message.contains("session_timeout_ms 6000 vs 7000"),
                "{message}"
            );
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }

    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    let keys = ["c-1", "c-2", "c-3", "c-4", "c-5", "c-6"];
    let rounds = 10u32;
    send_alternating!(producer, CartOpenedEvt, CartClosedEvt, keys, rounds, 0);
    let first = keys.len() * rounds as usize * 2;
    let arrived = eventually(Duration::from_secs(60), || handled_count(&seen) >= first).await;
    assert!(arrived, "only {} of {first} handled", handled_count(&seen));
    {
        let s = seen.lock().unwrap();
        for k in keys {
            let got = &s[k];
            let seqs: Vec<u32> = got.iter().map(|(_, seq)| *seq).collect();
            assert_eq!(seqs, (0..rounds * 2).collect::<Vec<_>>(), "key {k}");
            for (kind, seq) in got {
                let want = if seq % 2 == 0 { "opened" } else { "closed" };
                assert_eq!(*kind, want, "key {k} seq {seq}");
            }
        }
    }
    let dlq = format!("{}.dlq", CartOpenedEvt::topic());
    assert_eq!(
        message_count(&servers, &dlq).await,
        0,
        "nothing dead-lettered"
    );

    // A type neither subscription handles is dead-lettered, naming both.
    let id = uuid::Uuid::now_v7().to_string();
    produce_raw(
        &servers,
        CartOpenedEvt::topic(),
        br#"{"key":"c-1","seq":999}"#,
        &[
            ("heytom-event-id", id.as_str()),
            ("heytom-event-name", "CartAbandonedEvt"),
        ],
    )
    .await;
    let unknown = read_topic(&servers, &dlq, 1).await;
    assert_eq!(unknown.len(), 1);
    let reason = &unknown[0].headers["heytom-dead-letter-reason"];
    assert!(
        reason.contains("unknown message type `CartAbandonedEvt`")
            && reason.contains("`CartOpenedEvt`")
            && reason.contains("`CartClosedEvt`"),
        "{reason}"
    );

    // Unsubscribing one type keeps the consumer running for the other.
    consumer
        .unsubscribe::<CartOpenedEvt>()
        .await
        .expect("unsubscribe");
    let from = rounds * 2;
    send_alternating!(producer, CartOpenedEvt, CartClosedEvt, keys, 5u32, from);
    let closed_later = keys.len() * 5;
    let arrived = eventually(Duration::from_secs(60), || {
        handled_count(&seen) >= first + closed_later
    })
    .await;
    // Messages of the unsubscribed type are now of a type this group's
    // consumer does not handle: dead-lettered, not lost.
    let dead = read_topic(&servers, &dlq, closed_later + 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The last subscription stops the consumer and commits.
    consumer
        .unsubscribe::<CartClosedEvt>()
        .await
        .expect("unsubscribe the last");
    consumer.stop().await.expect("stop");
    assert!(
        arrived,
        "after unsubscribing: {} of {} handled",
        handled_count(&seen),
        first + closed_later
    );
    {
        let s = seen.lock().unwrap();
        for k in keys {
            let later: Vec<(&str, u32)> = s[k].iter().skip(rounds as usize * 2).copied().collect();
            let want: Vec<(&str, u32)> = (0..5).map(|r| ("closed", from + 2 * r + 1)).collect();
            assert_eq!(later, want, "key {k} after unsubscribing");
        }
    }
    assert_eq!(
        dead.len(),
        closed_later + 1,
        "opened events after unsubscribing"
    );
    for r in dead.iter().filter(|r| r.headers["heytom-event-id"] != id) {
        assert_eq!(
            r.headers.get("heytom-event-name").map(String::as_str),
            Some("CartOpenedEvt")
        );
        assert!(
            r.headers["heytom-dead-letter-reason"].contains("unknown message type `CartOpenedEvt`"),
            "{:?}",
            r.headers
        );
    }
    let mut committed = 0;
    for p in 0..3 {
        committed += committed_offset(&servers, &group, CartOpenedEvt::topic(), p)
            .await
            .max(0);
    }
    assert_eq!(
        committed,
        (first + 2 * closed_later + 1) as i64,
        "every offset committed when the last subscription stopped"
    );
}
