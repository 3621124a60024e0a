//! The suite on Kafka (`HEYTOM_KAFKA_BOOTSTRAP_SERVERS`, else a tansu
//! broker started by `scripts/kafka-broker.sh start`).
//!
//! Without that variable the suite starts its own tansu on port 19192 (and
//! reuses it in later runs), apart from the shared one on 19092 that other
//! runs stop and start.
//!
//! Topic names are fixed at compile time; every fixture consumes in a
//! consumer group of its own (`KafkaOptions::group_id`, which `#[handler]`s
//! without a `group` use) from the earliest offset, so it sees what earlier
//! runs left in the topics, and the handlers ignore events of other runs.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use heytom_mq::{App, AppBuilder, Event, Headers, KafkaOptions, RunningApp};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::harness::{Features, Fixture, RawMessage, WAIT};

suite_events! {
    #[event(name = "conformance.kafka.RoundTrip")]
    #[kafka(topic = "conformance-round-trip", session_timeout_ms = 6000)]
    RoundTrip;
    #[event(name = "conformance.kafka.Batch")]
    #[kafka(topic = "conformance-batch", num_partitions = 3, session_timeout_ms = 6000)]
    Batch;
    #[event(name = "conformance.kafka.FanOut")]
    #[kafka(topic = "conformance-fan-out", session_timeout_ms = 6000)]
    FanOut;
    #[event(name = "conformance.kafka.Job")]
    #[kafka(topic = "conformance-job", num_partitions = 4, session_timeout_ms = 6000)]
    Job;
    #[event(name = "conformance.kafka.Flaky")]
    // One partition: the retry check's redelivery would come first.
    #[kafka(topic = "conformance-flaky", num_partitions = 1, session_timeout_ms = 6000)]
    Flaky;
    #[event(name = "conformance.kafka.Doomed")]
    #[kafka(topic = "conformance-doomed", session_timeout_ms = 6000)]
    Doomed;
    #[event(name = "conformance.kafka.Strict")]
    #[kafka(topic = "conformance-strict", session_timeout_ms = 6000)]
    Strict;
    #[event(name = "conformance.kafka.Posting")]
    #[kafka(
        topic = "conformance-posting",
        partition_key = key,
        num_partitions = 3,
        session_timeout_ms = 6000
    )]
    Posting;
    #[event(name = "conformance.kafka.Slow")]
    #[kafka(topic = "conformance-slow", session_timeout_ms = 6000)]
    Slow;
    #[event(name = "conformance.kafka.Placed")]
    #[kafka(topic = "conformance-placed", session_timeout_ms = 6000)]
    Placed;
    #[event(name = "conformance.kafka.Shipped")]
    #[kafka(topic = "conformance-shipped", session_timeout_ms = 6000)]
    Shipped;
    #[event(name = "conformance.kafka.Stored")]
    #[kafka(topic = "conformance-stored", session_timeout_ms = 6000)]
    Stored;
    #[event(name = "conformance.kafka.Urgent")]
    #[kafka(topic = "conformance-urgent", session_timeout_ms = 6000)]
    Urgent;
    #[event(name = "conformance.kafka.Stubborn")]
    #[kafka(topic = "conformance-stubborn", session_timeout_ms = 6000)]
    Stubborn;
    #[event(name = "conformance.kafka.Explodes")]
    #[kafka(topic = "conformance-explodes", session_timeout_ms = 6000)]
    Explodes;
    #[event(name = "conformance.kafka.Lenient")]
    #[kafka(topic = "conformance-lenient", session_timeout_ms = 6000)]
    Lenient;
    #[event(name = "conformance.kafka.Yielding")]
    // Earlier runs' unknown messages stay handed back: start after them.
    #[kafka(
        topic = "conformance-yielding",
        auto_offset_reset = "latest",
        session_timeout_ms = 6000
    )]
    Yielding;
    #[event(name = "conformance.kafka.Stuck")]
    #[kafka(topic = "conformance-stuck", session_timeout_ms = 6000)]
    Stuck;
}

suite_handlers!();

fn reachable(servers: &str) -> bool {
    servers.split(',').any(|s| {
        s.trim()
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    })
}

/// The port of the conformance suite's own tansu: the broker on 19092 is
/// shared with other test runs and scripts that stop and start it.
const TANSU_PORT: u16 = 19192;

/// Starts tansu with the project's script (or reuses the one it started).
fn start_with_script() -> Result<String, String> {
    let ours = format!("127.0.0.1:{TANSU_PORT}");
    let pidfile = std::env::temp_dir().join(format!("heytom-tansu-{TANSU_PORT}.pid"));
    if pidfile.exists() && reachable(&ours) {
        return Ok(ours);
    }
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-broker.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .env_remove("HEYTOM_KAFKA_BOOTSTRAP_SERVERS")
        .env("HEYTOM_KAFKA_PORT", TANSU_PORT.to_string())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("export HEYTOM_KAFKA_BOOTSTRAP_SERVERS="))
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| {
            format!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn bootstrap() -> Result<String, String> {
    static SERVERS: OnceLock<Result<String, String>> = OnceLock::new();
    SERVERS
        .get_or_init(|| {
            let servers = match std::env::var("HEYTOM_KAFKA_BOOTSTRAP_SERVERS") {
                Ok(s) if !s.trim().is_empty() => s,
                _ => start_with_script()?,
            };
            if reachable(&servers) {
                Ok(servers)
            } else {
                Err(format!("Kafka broker at {servers} is not reachable"))
            }
        })
        .clone()
}

/// A broker and a consumer group of one test.
pub struct Kafka {
    servers: String,
    group: String,
}

impl Kafka {
    fn options(&self) -> KafkaOptions {
        KafkaOptions::new(&self.servers)
            .group_id(&self.group)
            .consumer_property("fetch.wait.max.ms", "10")
            .commit_interval(Duration::from_millis(100))
            .operation_timeout(Duration::from_secs(20))
    }

    fn topic_of<E: Event>() -> &'static str {
        E::route().as_kafka().expect("a #[kafka] event").topic
    }
}

impl Fixture for Kafka {
    type Events = Events;

    async fn setup() -> Option<Self> {
        match bootstrap() {
            Ok(servers) => Some(Kafka {
                servers,
                group: format!("heytom-conformance-{}", uuid::Uuid::now_v7().simple()),
            }),
            Err(e) if std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
                panic!("Kafka is required (HEYTOM_TEST_REQUIRE_SERVICES=1) but: {e}")
            }
            Err(e) => {
                eprintln!("NOTICE: {e}; skipping this conformance check");
                None
            }
        }
    }

    fn features(&self) -> Features {
        Features {
            per_key_ordering: true,
            persistent: true,
            priority_header: None,
        }
    }

    fn builder(&self) -> AppBuilder {
        App::builder().kafka(self.options())
    }

    async fn start(&self, builder: AppBuilder) -> RunningApp {
        builder.start().await.expect("Kafka app starts")
    }

    async fn publish_raw<E: Event>(&self, headers: Headers, body: Vec<u8>) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.servers)
            .create()
            .expect("raw producer");
        let mut kafka_headers = OwnedHeaders::new();
        for (k, v) in &headers {
            kafka_headers = kafka_headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        producer
            .send(
                FutureRecord::<(), _>::to(Self::topic_of::<E>())
                    .payload(&body)
                    .headers(kafka_headers),
                Duration::from_secs(20),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("raw publish");
    }

    async fn dead_letters<E: Event>(
        &self,
        _handler: &str,
        want: usize,
        matches: impl Fn(&RawMessage) -> bool,
    ) -> Vec<RawMessage> {
        let dlq = format!("{}.dlq", Self::topic_of::<E>());
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (servers, topic) = (self.servers.clone(), dlq.clone());
            let all = tokio::task::spawn_blocking(move || read_all(&servers, &topic))
                .await
                .expect("reader task");
            let found: Vec<RawMessage> = all.into_iter().filter(|m| matches(m)).collect();
            if found.len() >= want {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {want} dead letters in `{dlq}`; have {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every record of `topic`, read from the beginning to the end of each partition.
fn read_all(servers: &str, topic: &str) -> Vec<RawMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set(
            "group.id",
            format!(
                "heytom-conformance-reader-{}",
                uuid::Uuid::now_v7().simple()
            ),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("raw consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let p = i32::try_from(p).expect("partition number");
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition list");
    }
    if partitions == 0 {
        return Vec::new();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut at_end = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while at_end < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => at_end += 1,
            Some(Err(e)) => panic!("reading `{topic}`: {e}"),
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(hs) = m.headers() {
                    for h in hs.iter() {
                        headers.insert(
                            h.key.to_owned(),
                            h.value
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                                .unwrap_or_default(),
                        );
                    }
                }
                out.push(RawMessage {
                    headers,
                    body: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                });
            }
        }
    }
    out
}

suite_tests!(
    Kafka;
    restart_resumes_where_it_left_off,
    shutdown_mid_retry_hands_the_message_back,
    unknown_event_is_skipped_when_asked,
    unknown_event_is_handed_back_when_asked,
    a_stuck_handler_is_abandoned_at_the_shutdown_deadline,
);
