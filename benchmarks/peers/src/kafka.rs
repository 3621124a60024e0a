//! Kafka: produce (acks=all, idempotence, every delivery report awaited) and
//! consume (offset stored after the handler, 8 partitions handled at once,
//! in order within a partition).
//!
//! heytom-mq: `KafkaProducer::send_batch` / `KafkaConsumer` (one ordered
//! lane per partition). ruststream: `KafkaPublish` with every `publish()`
//! future awaited at once (each resolves on its delivery report; there is no
//! batch API) / a `KafkaTopic` subscriber with `Commit::Tracked` and
//! `workers_by_key(8)` (lanes keyed by partition, its default).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use heytom_mq::{KafkaConsumer, KafkaOptions, KafkaProducer, KafkaRoute, Route};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use ruststream::{Broker, ConnectedBroker};
use ruststream_rdkafka::prelude::*;
use ruststream_rdkafka::PARTITION_KEY_HEADER;
use serde::{Deserialize, Serialize};

use crate::common::{
    heytom_like_headers, measured, payloads, rate, Cfg, Figures, Payload, Side, COUNTER,
};

pub const PARTITIONS: i32 = 8;

#[derive(Debug, Clone, Serialize, Deserialize, Outgoing)]
pub struct PeersKafkaEvent {
    pub seq: u64,
    pub key: String,
    pub data: String,
}

impl From<&Payload> for PeersKafkaEvent {
    fn from(p: &Payload) -> Self {
        PeersKafkaEvent {
            seq: p.seq,
            key: p.key.clone(),
            data: p.data.clone(),
        }
    }
}

static ROUTE: AtomicPtr<Route> = AtomicPtr::new(std::ptr::null_mut());
static DEFAULT_ROUTE: Route = Route::Default;

fn set_topic(topic: &str) {
    let mut k = KafkaRoute::new(Box::leak(topic.to_owned().into_boxed_str()));
    k.num_partitions = Some(PARTITIONS);
    k.session_timeout_ms = Some(6000);
    ROUTE.store(Box::into_raw(Box::new(Route::Kafka(k))), Ordering::Release);
}

impl heytom_mq::Event for PeersKafkaEvent {
    const NAME: &'static str = "PeersKafkaEvent";
    fn route() -> &'static Route {
        // SAFETY: only ever set to a leaked Box, never freed.
        unsafe { ROUTE.load(Ordering::Acquire).as_ref() }.unwrap_or(&DEFAULT_ROUTE)
    }
    fn partition_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

#[subscriber]
async fn rs_kafka_handler(ev: &PeersKafkaEvent) -> HandlerOutcome {
    std::hint::black_box(ev);
    COUNTER.hit(ev.seq);
    HandlerOutcome::ack()
}

/// Reads what heytom's `Context` gives: id (parsed), name, occurred-at
/// (parsed), correlation id.
#[subscriber]
async fn rs_kafka_meta_handler(ev: &PeersKafkaEvent, ctx: &mut Context<'_>) -> HandlerOutcome {
    let h = ctx.headers();
    let id = h
        .get("heytom-event-id")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| uuid::Uuid::parse_str(s).ok());
    let name = h.get("heytom-event-name").map(|v| v.len());
    let at = h
        .get("heytom-occurred-at")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    let corr = h.get("correlation-id").map(|v| v.len());
    std::hint::black_box((ev, id, name, at, corr));
    COUNTER.hit(ev.seq);
    HandlerOutcome::ack()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Heytom,
    Rs,
    RsMeta,
    /// heytom with every `send()` future awaited at once (the API shape ruststream has).
    HeytomConcurrent,
}

const SIDES: [&str; 4] = ["hey", "rs", "rsm", "heyc"];

fn topic(cfg: &Cfg, who: Who, round: usize) -> String {
    format!("peers_{}_{}_{round}", SIDES[who as usize], cfg.run)
}

pub async fn run(cfg: &Cfg, figs: &mut Figures) -> anyhow::Result<()> {
    let servers = cfg.kafka.clone().expect("kafka configured");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .create()?;
    let mut created = Vec::new();
    let result = rounds(cfg, figs, &servers, &admin, &mut created).await;
    let names: Vec<&str> = created.iter().map(String::as_str).collect();
    if !names.is_empty() {
        let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
    }
    result
}

async fn rounds(
    cfg: &Cfg,
    figs: &mut Figures,
    servers: &str,
    admin: &AdminClient<DefaultClientContext>,
    created: &mut Vec<String>,
) -> anyhow::Result<()> {
    let count = cfg.kafka_count;
    let events: Vec<PeersKafkaEvent> = payloads(count).iter().map(Into::into).collect();
    let hey_producer = KafkaProducer::new(KafkaOptions::new(servers))?;
    let rs_broker = KafkaBroker::new([servers.to_owned()])
        .producer_config("acks", "all")
        .producer_config("enable.idempotence", "true")
        .connect()
        .await?;
    let rs_pub = rs_broker.publisher(Publish::default());
    println!(
        "kafka: {count} msgs/round, {PARTITIONS} partitions, 64 keys, acks=all + idempotence, \
         fresh topics per round, consumers from earliest with fetch.wait.max.ms=10"
    );
    for round in 1..=cfg.rounds {
        let order = if round % 2 == 1 {
            [Who::Heytom, Who::Rs, Who::RsMeta]
        } else {
            [Who::RsMeta, Who::Rs, Who::Heytom]
        };
        // Topics are created outside the timing, each with one warm-up record.
        for who in [Who::Heytom, Who::Rs, Who::RsMeta, Who::HeytomConcurrent] {
            let t = topic(cfg, who, round);
            created.push(t.clone());
            if matches!(who, Who::Heytom | Who::HeytomConcurrent) {
                set_topic(&t);
                hey_producer.send(&events[0]).await?;
            } else {
                let _ = admin
                    .create_topics(
                        [&NewTopic::new(&t, PARTITIONS, TopicReplication::Fixed(1))],
                        &AdminOptions::new(),
                    )
                    .await?;
                rs_pub.message(&events[0]).to(t.as_str()).publish().await?;
            }
        }
        let prod_order = if round % 2 == 1 {
            [Who::Heytom, Who::HeytomConcurrent, Who::Rs, Who::RsMeta]
        } else {
            [Who::RsMeta, Who::Rs, Who::HeytomConcurrent, Who::Heytom]
        };
        let mut prod = [Side::default(); 4];
        for who in prod_order {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = topic(cfg, who, round);
            let (took, cpu) = measured(count, async {
                let start = Instant::now();
                match who {
                    Who::Heytom => {
                        set_topic(&t);
                        hey_producer.send_batch(&events).await?;
                    }
                    Who::HeytomConcurrent => {
                        set_topic(&t);
                        futures::future::try_join_all(events.iter().map(|e| hey_producer.send(e)))
                            .await?;
                    }
                    Who::Rs => {
                        let sends = events.iter().map(|e| {
                            let mut h = HeaderMap::new();
                            h.insert(PARTITION_KEY_HEADER, e.key.clone());
                            rs_pub.message(e).with_headers(h).to(t.as_str()).publish()
                        });
                        futures::future::try_join_all(sends).await?;
                    }
                    Who::RsMeta => {
                        let sends = events.iter().map(|e| {
                            let mut h = HeaderMap::new();
                            h.insert(PARTITION_KEY_HEADER, e.key.clone());
                            for (k, v) in heytom_like_headers("PeersKafkaEvent") {
                                h.insert(k, v);
                            }
                            rs_pub.message(e).with_headers(h).to(t.as_str()).publish()
                        });
                        futures::future::try_join_all(sends).await?;
                    }
                }
                Ok(start.elapsed())
            })
            .await?;
            prod[who as usize] = Side {
                value: rate(count, took),
                cpu_us: cpu,
            };
        }
        figs.add(
            "peers.kafka.produce",
            "msg/s",
            true,
            "heytom send_batch vs ruststream publish() futures awaited at once (no batch API)",
            round,
            prod[0],
            prod[1],
        );
        figs.add(
            "peers.kafka.produce_concurrent",
            "msg/s",
            true,
            "same API shape: heytom send() futures vs ruststream publish() futures, all awaited at once",
            round,
            prod[3],
            prod[1],
        );
        figs.add(
            "peers.kafka.produce_same_metadata",
            "msg/s",
            true,
            "ruststream sends the 4 heytom headers",
            round,
            prod[0],
            prod[2],
        );

        let mut cons = [Side::default(); 3];
        for who in order {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = topic(cfg, who, round);
            let group = format!("{t}_group");
            // Every record of the topic, the warm-up one included.
            COUNTER.reset(count + 1, false);
            let (took, cpu) = measured(count, async {
                match who {
                    Who::Heytom => {
                        set_topic(&t);
                        let consumer = KafkaConsumer::new(
                            KafkaOptions::new(servers)
                                .group_id(group)
                                .consumer_property("fetch.wait.max.ms", "10"),
                        )?;
                        consumer.start().await?;
                        consumer
                            .subscribe(move |e: PeersKafkaEvent| {
                                COUNTER.hit(e.seq);
                                std::hint::black_box(e);
                                async {}
                            })
                            .await?;
                        let took = COUNTER.wait_cpu(Duration::from_secs(120)).await;
                        consumer.stop().await?;
                        took
                    }
                    Who::HeytomConcurrent => unreachable!("not a consume side"),
                    Who::Rs | Who::RsMeta => {
                        let broker = KafkaBroker::new([servers.to_owned()]);
                        let source = KafkaTopic::new(t.clone())
                            .group(group)
                            .start(StartOffset::Earliest)
                            .commit(Commit::Tracked)
                            .config("fetch.wait.max.ms", "10")
                            .config("session.timeout.ms", "6000");
                        let workers = NonZeroUsize::new(8).expect("8");
                        let app = RustStream::new(AppInfo::new("peers", "0.1.0"));
                        let running = if who == Who::Rs {
                            app.with_broker(broker, move |b| {
                                b.include(
                                    rs_kafka_handler
                                        .workers_by_key(workers)
                                        .map_source(move |_| source),
                                );
                            })
                            .start()
                            .await?
                        } else {
                            app.with_broker(broker, move |b| {
                                b.include(
                                    rs_kafka_meta_handler
                                        .workers_by_key(workers)
                                        .map_source(move |_| source),
                                );
                            })
                            .start()
                            .await?
                        };
                        let took = COUNTER.wait_cpu(Duration::from_secs(120)).await;
                        running.shutdown().await?;
                        took
                    }
                }
            })
            .await?;
            // CPU over the same window as the rate: first to last handled
            // (the phase's whole CPU, start-up and shutdown included, is `_phase_cpu`).
            let (took, window_cpu) = took;
            let _phase_cpu = cpu;
            cons[who as usize] = Side {
                value: rate(count, took),
                cpu_us: window_cpu.as_secs_f64() * 1e6 / count as f64,
            };
        }
        figs.add(
            "peers.kafka.consume",
            "msg/s",
            true,
            "offset stored after the handler, 8 partitions in parallel; first to last handled",
            round,
            cons[0],
            cons[1],
        );
        figs.add(
            "peers.kafka.consume_same_metadata",
            "msg/s",
            true,
            "ruststream handler reads and parses the 4 heytom headers",
            round,
            cons[0],
            cons[2],
        );
    }
    rs_broker.shutdown().await?;
    Ok(())
}
