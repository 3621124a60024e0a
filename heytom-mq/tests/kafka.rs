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
mod log_count;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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

test_event!(BurstEvt, |r| {});

test_event!(QueueFullEvt, |r| {
    r.num_partitions = Some(1);
});

test_event!(ResumeEvt, |r| {
    r.num_partitions = Some(1);
});

test_event!(DeadEvt, |r| {
    r.num_partitions = Some(1);
});

test_event!(SlowEvt, |r| {
    r.num_partitions = Some(1);
});

test_event!(StuckEvt, |r| {
    r.num_partitions = Some(1);
});

test_event!(NoDeadLetterEvt, |r| {
    r.num_partitions = Some(1);
});

test_event!(ForeignEvt, |r| {
    r.num_partitions = Some(1);
});

test_event!(DefaultsEvt, |_r| {});

test_event!(AcksOneEvt, |r| {
    r.acks = Some(Acks::Leader);
});

test_event!(CommitRetryEvt, |r| {
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

/// A new producer's first burst of concurrent sends to a topic it has not
/// declared asks the brokers to create it once: the other sends wait for
/// that declaration instead of each making its own (an admin round trip
/// per send before).
#[tokio::test]
async fn a_burst_of_first_sends_declares_the_topic_once() {
    let Some(servers) = bootstrap() else { return };
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    let declarations = log_count::LogCount::of("declaring Kafka topic");
    let events: Vec<BurstEvt> = (0..50).map(|seq| BurstEvt::new("k", seq)).collect();
    let ids = futures::future::try_join_all(events.iter().map(|e| producer.send(e)))
        .await
        .expect("sends");
    assert_eq!(ids.len(), 50);
    assert_eq!(declarations.count(), 1, "one declaration for the burst");
    producer.send(&BurstEvt::new("k", 50)).await.expect("send");
    assert_eq!(declarations.count(), 1, "none once declared");
    assert_eq!(message_count(&servers, BurstEvt::topic()).await, 51);
}

/// A `send()` that finds the producer's local queue full waits for room and
/// is then delivered; one still waiting after `operation_timeout` fails as
/// unavailable, and the message that held the queue is delivered anyway.
#[tokio::test]
async fn a_send_waits_for_room_in_a_full_local_queue_and_gives_up_in_time() {
    let Some(servers) = bootstrap() else { return };
    // One message fits in the local queue, and each waits 1.5 s there
    // (`linger.ms`) before it goes to the broker.
    let full_queue = |o: KafkaOptions| {
        o.producer_property("queue.buffering.max.messages", "1")
            .producer_property("linger.ms", "1500")
    };
    let patient = KafkaProducer::new(full_queue(options(&servers))).expect("producer");
    let events: Vec<QueueFullEvt> = (1..=4).map(|seq| QueueFullEvt::new("k", seq)).collect();
    let (first, second) = tokio::join!(patient.send(&events[0]), patient.send(&events[1]));
    first.expect("the first send is delivered");
    second.expect("the second waits for room, then is delivered");

    let impatient = KafkaProducer::new(
        full_queue(options(&servers)).operation_timeout(Duration::from_millis(300)),
    )
    .expect("producer");
    let started = Instant::now();
    // Both first declare the topic (a new producer), so either may be the
    // one that finds the queue full.
    let (third, fourth) = tokio::join!(impatient.send(&events[2]), impatient.send(&events[3]));
    let (delivered, refused) = match (third, fourth) {
        (Ok(_), Err(e)) => (3, e),
        (Err(e), Ok(_)) => (4, e),
        other => panic!("expected one delivered and one refused, got {other:?}"),
    };
    match refused {
        Error::Unavailable { reason, .. } => {
            assert!(reason.to_lowercase().contains("queue"), "{reason}")
        }
        other => panic!("expected the full queue to be unavailable, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));

    let mut seqs: Vec<u32> = read_topic(&servers, QueueFullEvt::topic(), 3)
        .await
        .iter()
        .map(|r| {
            serde_json::from_slice::<QueueFullEvt>(&r.payload)
                .expect("json")
                .seq
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, delivered]);
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

/// An event whose serialization fails for `seq == 13`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
struct FussyEvt {
    key: String,
    seq: u32,
}

impl Serialize for FussyEvt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeStruct as _};
        if self.seq == 13 {
            return Err(S::Error::custom("13 does not serialize"));
        }
        let mut st = s.serialize_struct("FussyEvt", 2)?;
        st.serialize_field("key", &self.key)?;
        st.serialize_field("seq", &self.seq)?;
        st.end()
    }
}

impl Event for FussyEvt {
    const NAME: &'static str = "FussyEvt";
    fn route() -> &'static Route {
        static ROUTE: OnceLock<Route> = OnceLock::new();
        ROUTE.get_or_init(|| {
            let mut r = KafkaRoute::new(unique_topic("FussyEvt"));
            r.num_partitions = Some(1);
            Route::Kafka(r)
        })
    }
    fn partition_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

#[tokio::test]
async fn a_batch_with_an_unserializable_event_sends_nothing_and_the_others_carry_their_ids() {
    let Some(servers) = bootstrap() else { return };
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    let fussy = |seq| FussyEvt {
        key: "k".into(),
        seq,
    };
    let failed = producer
        .send_batch(&[fussy(1), fussy(13), fussy(2)])
        .await
        .expect_err("an event does not serialize");
    assert!(
        matches!(failed, heytom_mq::Error::Serialization { .. }),
        "{failed:?}"
    );
    let ids = producer
        .send_batch(&[fussy(20), fussy(21)])
        .await
        .expect("send_batch");
    let Route::Kafka(route) = FussyEvt::route() else {
        unreachable!()
    };
    // One partition: anything of the failed batch would come first.
    let records = read_topic(&servers, route.topic, 2).await;
    let seqs: Vec<u32> = records
        .iter()
        .map(|r| {
            serde_json::from_slice::<FussyEvt>(&r.payload)
                .expect("json")
                .seq
        })
        .collect();
    assert_eq!(seqs, vec![20, 21]);
    for (r, id) in records.iter().zip(&ids) {
        let id = id.to_string();
        assert_eq!(r.headers.get("heytom-event-id"), Some(&id));
        // The default correlation id (the event id) is left off the wire.
        assert_eq!(r.headers.get("correlation-id"), None);
        assert_eq!(
            r.headers.get("heytom-event-name").map(String::as_str),
            Some("FussyEvt")
        );
        let at = r.headers.get("heytom-occurred-at").expect("occurred-at");
        chrono::DateTime::parse_from_rfc3339(at).expect("an RFC 3339 time");
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
    }
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
    let watch = GroupWatch::new(&servers, &group).await;
    assert_eq!(watch.members().await, 1);
    drop(a);
    // The dropped consumer has left the group by the time drop returns.
    // (It used to leave on its thread a little later; under load the
    // replacement's JoinGroup then reached tansu first, and tansu's
    // coordinator keeps a departed leader of a group that is re-forming, so
    // the replacement waited for ever as a follower: the flaky failure.)
    assert_eq!(
        watch.members().await,
        0,
        "the dropped consumer is still a member of its group"
    );
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

/// Issue 10, item 4: a handler slower than `max.poll.interval.ms` with every
/// in-flight slot taken. The poll thread used to stop calling `poll()` while
/// no slot was free, so librdkafka left the group after 7 s, the first
/// event's offset was lost with the assignment and it ran again and again
/// (a livelock). Now the full partition is paused and polling goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_max_poll_interval_runs_each_event_once() {
    let Some(servers) = bootstrap() else { return };
    let group = unique_group("slow");
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    let events: Vec<_> = (0..3).map(|i| SlowEvt::new("one-key", i)).collect();
    producer.send_batch(&events).await.expect("send");

    let runs: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let sink = runs.clone();
    let consumer = KafkaConsumer::new(
        options(&servers)
            .max_in_flight(1)
            .consumer_property("max.poll.interval.ms", "7000"),
    )
    .expect("consumer")
    .with_group(group.clone());
    consumer.start().await.expect("start");
    consumer
        .subscribe(move |e: SlowEvt| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((e.seq, Instant::now()));
                tokio::time::sleep(Duration::from_secs(12)).await;
            }
        })
        .await
        .expect("subscribe");
    // 3 x 12 s, the first assignment (about 3 s on tansu) and some slack.
    let all_ran = eventually(Duration::from_secs(70), || runs.lock().unwrap().len() >= 3).await;
    // The last one finishes; a re-run (after an eviction) would show up by then.
    tokio::time::sleep(Duration::from_secs(14)).await;
    consumer.stop().await.expect("stop");
    let runs = runs.lock().unwrap().clone();
    assert!(all_ran, "not every event ran: {runs:?}");
    let seqs: Vec<u32> = runs.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![0, 1, 2], "each event exactly once, in order");
    for w in runs.windows(2) {
        assert!(
            w[1].1 - w[0].1 >= Duration::from_secs(11),
            "max_in_flight(1): one at a time"
        );
    }
    assert_eq!(
        committed_offset(&servers, &group, SlowEvt::topic(), 0).await,
        3,
        "every offset committed"
    );
}

/// Issue 10, item 6: a handler that never returns. `stop()` used to wait
/// for its lane for ever after the drain timeout; now it abandons it, and
/// the message (not committed) goes to the next consumer of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_abandons_a_handler_that_never_returns_and_its_message_comes_again() {
    let Some(servers) = bootstrap() else { return };
    let group = unique_group("stuck");
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    producer
        .send_batch(&[StuckEvt::new("k", 0), StuckEvt::new("k", 1)])
        .await
        .expect("send");

    let started: Arc<Mutex<Vec<u32>>> = Arc::default();
    let sink = started.clone();
    let drain = Duration::from_secs(2);
    let a = KafkaConsumer::new(options(&servers).drain_timeout(drain))
        .expect("consumer")
        .with_group(group.clone());
    a.start().await.expect("start");
    a.subscribe(move |e: StuckEvt| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(e.seq);
            if e.seq == 1 {
                std::future::pending::<()>().await;
            }
        }
    })
    .await
    .expect("subscribe");
    assert!(
        eventually(Duration::from_secs(30), || started.lock().unwrap().len()
            >= 2)
        .await,
        "the stuck handler never started"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(20), a.stop()).await;
    let took = t.elapsed();
    assert!(stopped.is_ok(), "stop() did not return within 20 s");
    stopped.unwrap().expect("stop");
    assert!(
        took < drain + Duration::from_secs(8),
        "stop took {took:?} with a drain timeout of {drain:?}"
    );
    assert_eq!(
        committed_offset(&servers, &group, StuckEvt::topic(), 0).await,
        1,
        "the abandoned message is not committed"
    );

    let again: Arc<Mutex<Vec<u32>>> = Arc::default();
    let sink = again.clone();
    let b = KafkaConsumer::new(options(&servers))
        .expect("consumer")
        .with_group(group.clone());
    b.start().await.expect("start");
    b.subscribe(move |e: StuckEvt| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(e.seq);
        }
    })
    .await
    .expect("subscribe");
    let redelivered = eventually(Duration::from_secs(30), || {
        !again.lock().unwrap().is_empty()
    })
    .await;
    b.stop().await.expect("stop");
    assert!(redelivered, "the abandoned message did not come again");
    assert_eq!(*again.lock().unwrap(), vec![1]);

    // Dropping a consumer whose handler never returns does not hang either.
    let c = KafkaConsumer::new(options(&servers).drain_timeout(drain))
        .expect("consumer")
        .with_group(group.clone());
    c.start().await.expect("start");
    let hung: Arc<AtomicU32> = Arc::default();
    let h = hung.clone();
    c.subscribe(move |_: StuckEvt| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    })
    .await
    .expect("subscribe");
    producer.send(&StuckEvt::new("k", 2)).await.expect("send");
    assert!(eventually(Duration::from_secs(30), || hung.load(Ordering::SeqCst) >= 1).await);
    let t = Instant::now();
    drop(c);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "drop took {:?}",
        t.elapsed()
    );
    assert_eq!(group_members(&servers, &group).await, 0);
}

/// Issue 10, item 5: a dead letter that cannot be produced is a hand-back:
/// the message comes again (its handler runs again) and nothing after it is
/// handled or committed, until a consumer whose dead letter works moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_produced_is_handed_back_never_skipped() {
    let Some(servers) = bootstrap() else { return };
    let group = unique_group("nodlq");
    let topic = NoDeadLetterEvt::topic();
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    // seq 1 is too big for the dead-letter producer below (message.max.bytes 1000).
    producer
        .send_batch(&[
            NoDeadLetterEvt::new("k", 0),
            NoDeadLetterEvt::new("x".repeat(3000), 1),
            NoDeadLetterEvt::new("k", 2),
        ])
        .await
        .expect("send");

    let calls: Arc<Mutex<Vec<u32>>> = Arc::default();
    async fn subscribe(
        consumer: &KafkaConsumer,
        calls: Arc<Mutex<Vec<u32>>>,
    ) -> heytom_mq::Result<()> {
        consumer
            .subscribe(move |e: NoDeadLetterEvt| {
                let calls = calls.clone();
                async move {
                    calls.lock().unwrap().push(e.seq);
                    if e.seq == 1 {
                        Err::<(), _>("always fails")
                    } else {
                        Ok(())
                    }
                }
            })
            .await
    }
    let a = KafkaConsumer::new(
        options(&servers)
            .commit_interval(Duration::from_millis(100))
            .producer_property("message.max.bytes", "1000"),
    )
    .expect("consumer")
    .with_group(group.clone())
    .with_retry(fast_retry(1));
    a.start().await.expect("start");
    subscribe(&a, calls.clone()).await.expect("subscribe");
    // Handed back, it runs again: the handler sees seq 1 at least twice.
    let handed_back = eventually(Duration::from_secs(60), || {
        calls.lock().unwrap().iter().filter(|s| **s == 1).count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The last subscription stops the consumer (no dispatcher shutdown first).
    a.unsubscribe::<NoDeadLetterEvt>()
        .await
        .expect("unsubscribe");
    a.stop().await.expect("stop");
    let seen = calls.lock().unwrap().clone();
    assert!(handed_back, "the message was not handed back: {seen:?}");
    assert!(!seen.contains(&2), "went on past the message: {seen:?}");
    assert_eq!(
        committed_offset(&servers, &group, topic, 0).await,
        1,
        "committed past the message whose dead letter failed"
    );
    assert_eq!(message_count(&servers, &format!("{topic}.dlq")).await, 0);

    // A consumer whose dead letters work moves on from there.
    let later: Arc<Mutex<Vec<u32>>> = Arc::default();
    let b = KafkaConsumer::new(options(&servers))
        .expect("consumer")
        .with_group(group.clone())
        .with_retry(fast_retry(1));
    b.start().await.expect("start");
    subscribe(&b, later.clone()).await.expect("subscribe");
    let dead = read_topic(&servers, &format!("{topic}.dlq"), 1).await;
    let done = eventually(Duration::from_secs(30), || {
        later.lock().unwrap().contains(&2)
    })
    .await;
    b.stop().await.expect("stop");
    assert!(
        done,
        "the message after it was not handled: {:?}",
        later.lock().unwrap()
    );
    assert_eq!(*later.lock().unwrap(), vec![1, 2]);
    assert_eq!(dead.len(), 1);
    assert_eq!(committed_offset(&servers, &group, topic, 0).await, 3);
}

/// Issue 10, item 8: a foreign message (no `heytom-event-id`) gets a UUID v5
/// of `kafka://<topic>/<partition>/<offset>`: the same on every delivery, in
/// every group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_has_the_same_event_id_on_every_delivery() {
    let Some(servers) = bootstrap() else { return };
    let topic = ForeignEvt::topic();
    let transport = KafkaTransport::connect(options(&servers))
        .await
        .expect("connect");
    transport
        .declare(ForeignEvt::route(), ForeignEvt::NAME)
        .await
        .expect("declare");
    produce_raw(&servers, topic, br#"{"key":"k","seq":1}"#, &[]).await;

    struct Record(Arc<Mutex<Vec<(String, u32)>>>);
    impl heytom_mq::EventHandler<ForeignEvt> for Record {
        async fn handle(
            &self,
            _e: ForeignEvt,
            ctx: heytom_mq::Context,
        ) -> Result<(), heytom_mq::HandlerError> {
            self.0
                .lock()
                .unwrap()
                .push((ctx.event_id().to_string(), ctx.attempt()));
            if ctx.attempt() == 1 {
                return Err("first attempt fails".into());
            }
            Ok(())
        }
    }
    let mut ids = Vec::new();
    for group in ["foreign-a", "foreign-b"] {
        let seen: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
        let consumer = KafkaConsumer::new(options(&servers))
            .expect("consumer")
            .with_group(unique_group(group))
            .with_retry(fast_retry(2));
        consumer.start().await.expect("start");
        consumer
            .subscribe_handler::<ForeignEvt, _>(Record(seen.clone()))
            .await
            .expect("subscribe");
        let done = eventually(Duration::from_secs(30), || seen.lock().unwrap().len() >= 2).await;
        consumer.stop().await.expect("stop");
        assert!(done, "{group}: {:?}", seen.lock().unwrap());
        ids.extend(seen.lock().unwrap().iter().map(|(id, _)| id.clone()));
    }
    let want = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("kafka://{topic}/0/0").as_bytes(),
    )
    .to_string();
    assert_eq!(ids, vec![want.clone(); 4], "one id for every delivery");
}

/// Issue 10, item 10: topics get the broker's default replication factor
/// unless asked, and producers default to acks=all and idempotence (which
/// an event asking for fewer acks does without).
#[tokio::test]
async fn defaults_are_broker_replication_acks_all_and_idempotence() {
    let Some(servers) = bootstrap() else { return };
    let transport = KafkaTransport::connect(options(&servers))
        .await
        .expect("connect");
    // No replication_factor anywhere: the broker's default (-1 in CreateTopics).
    transport
        .declare(DefaultsEvt::route(), DefaultsEvt::NAME)
        .await
        .expect("declare with the broker's replication factor");
    assert_eq!(partition_count(&servers, DefaultsEvt::topic()).await, 1);
    let producer = KafkaProducer::new(options(&servers)).expect("producer");
    producer
        .send(&DefaultsEvt::new("k", 1))
        .await
        .expect("idempotent acks=all send");
    // acks = 1 without enable_idempotence: a plain producer (idempotence
    // would refuse acks=1), so the send works.
    producer
        .send(&AcksOneEvt::new("k", 1))
        .await
        .expect("acks=1 send");
    assert_eq!(message_count(&servers, DefaultsEvt::topic()).await, 1);
    assert_eq!(message_count(&servers, AcksOneEvt::topic()).await, 1);
}

/// Issue 10, item 5: a failed offset commit is tried again, not forgotten
/// until the next stored offset. tansu never fails a commit, so this runs on
/// librdkafka's mock cluster, whose OffsetCommit answers are made to fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_offset_commit_is_retried() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    init_tracing();
    let mock = MockCluster::new(1).expect("mock cluster");
    let servers = mock.bootstrap_servers();
    let topic = CommitRetryEvt::topic();
    mock.create_topic(topic, 1, 1).expect("topic");
    let opts = KafkaOptions::new(&servers)
        .declare_topics(false)
        .commit_interval(Duration::from_millis(100))
        .consumer_property("fetch.wait.max.ms", "10");
    let producer = KafkaProducer::new(opts.clone()).expect("producer");
    let events: Vec<_> = (0..5).map(|i| CommitRetryEvt::new("k", i)).collect();
    producer.send_batch(&events).await.expect("send");
    // The next three commits fail (an error librdkafka does not retry itself).
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 3],
    );

    let group = unique_group("commit-retry");
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let consumer = KafkaConsumer::new(opts)
        .expect("consumer")
        .with_group(group.clone());
    consumer.start().await.expect("start");
    consumer
        .subscribe(move |_: CommitRetryEvt| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await
        .expect("subscribe");
    assert!(
        eventually(Duration::from_secs(30), || handled.load(Ordering::SeqCst)
            >= 5)
        .await
    );
    // Nothing new is stored from here on: only a retry can commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut committed = -1;
    while Instant::now() < deadline {
        committed = committed_offset(&servers, &group, topic, 0).await;
        if committed == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still_running = committed;
    consumer.stop().await.expect("stop");
    assert_eq!(
        still_running, 5,
        "the failed commits were not retried while the consumer ran"
    );
}
