//! Helpers for the Kafka tests: finding (or starting) the broker, unique
//! names, and raw rdkafka reads to check what is on the wire.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use heytom_mq::KafkaOptions;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A record as read back from the broker.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn reachable(servers: &str) -> bool {
    servers.split(',').any(|s| {
        s.trim()
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    })
}

fn start_with_script() -> Result<String, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-broker.sh");
    // Reuse a broker the script started earlier on its default port.
    let pidfile = std::env::temp_dir().join("heytom-tansu-19092.pid");
    if pidfile.exists() && reachable("127.0.0.1:19092") {
        return Ok("127.0.0.1:19092".to_owned());
    }
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .env_remove("HEYTOM_KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
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

/// Logs to the test output, filtered by `RUST_LOG`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The broker to test against, or `None` (after a notice) when there is none
/// and services are not required.
pub fn bootstrap() -> Option<String> {
    init_tracing();
    static SERVERS: OnceLock<Result<String, String>> = OnceLock::new();
    let found = SERVERS.get_or_init(|| {
        let servers = match std::env::var("HEYTOM_KAFKA_BOOTSTRAP_SERVERS") {
            Ok(s) if !s.trim().is_empty() => s,
            _ => start_with_script()?,
        };
        if reachable(&servers) {
            Ok(servers)
        } else {
            Err(format!("Kafka broker at {servers} is not reachable"))
        }
    });
    match found {
        Ok(s) => Some(s.clone()),
        Err(e) if require_services() => panic!("HEYTOM_TEST_REQUIRE_SERVICES=1 but {e}"),
        Err(e) => {
            eprintln!("NOTICE: skipping Kafka test: {e}");
            None
        }
    }
}

/// Options tuned for tansu: short fetch waits.
pub fn options(servers: &str) -> KafkaOptions {
    KafkaOptions::new(servers)
        .consumer_property("fetch.wait.max.ms", "10")
        .operation_timeout(Duration::from_secs(20))
}

pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{}-{:x}", std::process::id(), nanos % 0xffff_ffff)
    })
}

pub fn unique_topic(base: &str) -> &'static str {
    Box::leak(format!("heytom-test-{}-{}", base.to_lowercase(), run_id()).into_boxed_str())
}

pub fn unique_group(base: &str) -> String {
    format!("heytom-test-{base}-{}", run_id())
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn raw_consumer(servers: &str, group: Option<&str>) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10");
    // librdkafka's consumer API wants a group even for manual assignment.
    let reader = format!("heytom-test-reader-{}", run_id());
    c.set("group.id", group.unwrap_or(&reader));
    c.create().expect("raw consumer")
}

pub async fn partition_count(servers: &str, topic: &str) -> usize {
    let (servers, topic) = (servers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c = raw_consumer(&servers, None);
        let md = c
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        md.topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len())
    })
    .await
    .expect("task")
}

pub async fn topic_configs(servers: &str, topic: &str) -> BTreeMap<String, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers);
    let admin: AdminClient<DefaultClientContext> = c.create().expect("admin");
    let res = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe_configs");
    let mut out = BTreeMap::new();
    for r in res {
        let r = r.expect("config resource");
        for e in r.entries {
            if let Some(v) = e.value {
                out.insert(e.name, v);
            }
        }
    }
    out
}

/// Reads `expected` records from every partition of `topic` from the
/// beginning (waiting up to 30 s), in partition then offset order.
pub async fn read_topic(servers: &str, topic: &str, expected: usize) -> Vec<RawRecord> {
    let (servers, topic) = (servers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c = raw_consumer(&servers, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        let partitions = loop {
            let md = c
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .expect("metadata");
            let n = md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len());
            if n > 0 || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .expect("tpl");
        }
        c.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        while out.len() < expected && Instant::now() < deadline {
            let Some(r) = c.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = r.expect("fetch");
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
            out.push(RawRecord {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers,
            });
        }
        // Anything beyond `expected` would show up quickly.
        let extra_deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < extra_deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                out.push(RawRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: BTreeMap::new(),
                });
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    })
    .await
    .expect("task")
}

/// The committed offset of a group on one partition (-1 when none).
pub async fn committed_offset(servers: &str, group: &str, topic: &str, partition: i32) -> i64 {
    let (servers, group, topic) = (servers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c = raw_consumer(&servers, Some(&group));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, partition);
        let got = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        match got.find_partition(&topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        }
    })
    .await
    .expect("task")
}

/// The high watermark of partition 0 (0 for a topic that does not exist).
pub async fn high_watermark(servers: &str, topic: &str) -> i64 {
    let (servers, topic) = (servers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c = raw_consumer(&servers, None);
        c.fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .map(|(_, high)| high)
            .unwrap_or(0)
    })
    .await
    .expect("task")
}

/// Messages on every partition of a topic (0 for a topic that does not exist).
pub async fn message_count(servers: &str, topic: &str) -> i64 {
    let partitions = partition_count(servers, topic).await;
    let (servers, topic) = (servers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c = raw_consumer(&servers, None);
        (0..partitions as i32)
            .map(|p| {
                c.fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .map(|(low, high)| high - low)
                    .expect("watermarks")
            })
            .sum()
    })
    .await
    .expect("task")
}

/// Produces raw bytes with the given headers, as a foreign producer would.
pub async fn produce_raw(servers: &str, topic: &str, payload: &[u8], headers: &[(&str, &str)]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .expect("producer");
    let mut hs = OwnedHeaders::new();
    for (k, v) in headers {
        hs = hs.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(payload).headers(hs);
    p.send(rec, Duration::from_secs(10))
        .await
        .expect("raw produce");
}

/// Watches the members of a consumer group as the broker sees them
/// (DescribeGroups), with a client connected beforehand so that a look
/// costs one round trip.
pub struct GroupWatch {
    client: std::sync::Arc<BaseConsumer>,
    group: String,
}

impl GroupWatch {
    pub async fn new(servers: &str, group: &str) -> Self {
        let watch = GroupWatch {
            client: std::sync::Arc::new(raw_consumer(servers, None)),
            group: group.to_owned(),
        };
        // Connects to the brokers and finds the coordinator.
        let _ = watch.members().await;
        watch
    }

    pub async fn members(&self) -> usize {
        let (client, group) = (self.client.clone(), self.group.clone());
        tokio::task::spawn_blocking(move || {
            let groups = client
                .fetch_group_list(Some(&group), Duration::from_secs(10))
                .expect("describe group");
            groups
                .groups()
                .iter()
                .filter(|g| g.name() == group)
                .map(|g| g.members().len())
                .sum()
        })
        .await
        .expect("task")
    }
}

/// Members of a consumer group as the broker sees them (DescribeGroups).
pub async fn group_members(servers: &str, group: &str) -> usize {
    GroupWatch::new(servers, group).await.members().await
}
