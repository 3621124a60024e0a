//! RabbitMQ: publish (persistent, every publisher confirm awaited) and
//! consume (ack after the handler, prefetch 64, 8 handlers at once).
//!
//! heytom-mq: `RabbitMqProducer::send_batch` / `RabbitMqConsumer` with
//! `concurrency(8)`. ruststream: a `ConfirmsPublish` publisher with every
//! message's `publish()` future awaited at once (each resolves on its
//! confirm) / a `LapinBroker` app with one `workers(8)` subscriber.

use std::num::NonZeroU16;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use heytom_mq::{RabbitMqConsumer, RabbitMqOptions, RabbitMqProducer, RabbitMqRoute, Route};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use ruststream::{Broker, ConnectedBroker};
use ruststream_lapin::prelude::*;
use serde::{Deserialize, Serialize};

use crate::common::{
    heytom_like_headers, measured, payloads, rate, Cfg, Figures, Payload, Side, COUNTER,
};

#[derive(Debug, Clone, Serialize, Deserialize, Outgoing)]
pub struct PeersRabbitEvent {
    pub seq: u64,
    pub key: String,
    pub data: String,
}

impl From<&Payload> for PeersRabbitEvent {
    fn from(p: &Payload) -> Self {
        PeersRabbitEvent {
            seq: p.seq,
            key: p.key.clone(),
            data: p.data.clone(),
        }
    }
}

static ROUTE: AtomicPtr<Route> = AtomicPtr::new(std::ptr::null_mut());
static DEFAULT_ROUTE: Route = Route::Default;

impl heytom_mq::Event for PeersRabbitEvent {
    const NAME: &'static str = "PeersRabbitEvent";
    fn route() -> &'static Route {
        // SAFETY: only ever set to a leaked Box, never freed.
        unsafe { ROUTE.load(Ordering::Acquire).as_ref() }.unwrap_or(&DEFAULT_ROUTE)
    }
    fn partition_key(&self) -> Option<String> {
        None
    }
}

struct Names {
    exchange: String,
    hey_queue: String,
    hey_key: String,
    rs_queue: String,
    rs_key: String,
    rsm_queue: String,
    rsm_key: String,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn names(cfg: &Cfg) -> Names {
    let r = &cfg.run;
    Names {
        exchange: format!("peers_ex_{r}"),
        hey_queue: format!("peers_hey_{r}"),
        hey_key: format!("peers.hey.{r}"),
        rs_queue: format!("peers_rs_{r}"),
        rs_key: format!("peers.rs.{r}"),
        rsm_queue: format!("peers_rsm_{r}"),
        rsm_key: format!("peers.rsm.{r}"),
    }
}

async fn setup(conn: &Connection, n: &Names) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        n.exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    for (q, k) in [
        (&n.hey_queue, &n.hey_key),
        (&n.rs_queue, &n.rs_key),
        (&n.rsm_queue, &n.rsm_key),
    ] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            q.as_str().into(),
            n.exchange.as_str().into(),
            k.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.close(200, "ok".into()).await?;
    Ok(())
}

async fn purge(conn: &Connection, n: &Names) {
    if let Ok(ch) = conn.create_channel().await {
        for q in [&n.hey_queue, &n.rs_queue, &n.rsm_queue] {
            let _ = ch
                .queue_purge(q.as_str().into(), QueuePurgeOptions::default())
                .await;
        }
        let _ = ch.close(200, "ok".into()).await;
    }
}

async fn teardown(conn: &Connection, n: &Names) {
    if let Ok(ch) = conn.create_channel().await {
        for q in [
            n.hey_queue.clone(),
            format!("{}.dlq", n.hey_queue),
            n.rs_queue.clone(),
            n.rsm_queue.clone(),
        ] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = ch
            .exchange_delete(n.exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
        let _ = ch.close(200, "ok".into()).await;
    }
}

#[subscriber]
async fn rs_rabbit_handler(ev: &PeersRabbitEvent) -> HandlerOutcome {
    std::hint::black_box(ev);
    COUNTER.hit(ev.seq);
    HandlerOutcome::ack()
}

/// The same-metadata handler reads what heytom's `Context` gives: the event
/// id (parsed), the name, the occurred-at time (parsed) and the correlation id.
#[subscriber]
async fn rs_rabbit_meta_handler(ev: &PeersRabbitEvent, ctx: &mut Context<'_>) -> HandlerOutcome {
    let h = ctx.headers();
    let id = h
        .get("message-id")
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

pub async fn run(cfg: &Cfg, figs: &mut Figures) -> anyhow::Result<()> {
    let n = names(cfg);
    let mut route = RabbitMqRoute::new(leak(&n.hey_key))
        .exchange(leak(&n.exchange))
        .queue_name(leak(&n.hey_queue));
    route.durable = Some(true);
    ROUTE.store(
        Box::into_raw(Box::new(Route::RabbitMq(route))),
        Ordering::Release,
    );
    let conn = Connection::connect(&cfg.rabbit_url, ConnectionProperties::default()).await?;
    setup(&conn, &n).await?;
    let result = rounds(cfg, figs, &conn, &n).await;
    teardown(&conn, &n).await;
    let _ = conn.close(200, "done".into()).await;
    result
}

async fn rounds(cfg: &Cfg, figs: &mut Figures, conn: &Connection, n: &Names) -> anyhow::Result<()> {
    let count = cfg.count;
    let events: Vec<PeersRabbitEvent> = payloads(count).iter().map(Into::into).collect();
    let options = RabbitMqOptions::new(cfg.rabbit_url.clone())
        .prefetch(64)
        .concurrency(8);
    let hey_producer = RabbitMqProducer::connect(options.clone()).await?;
    let rs_broker = LapinBroker::new(cfg.rabbit_url.clone()).connect().await?;
    let rs_pub = rs_broker.publisher(
        LapinPublish::default()
            .exchange(n.exchange.clone())
            .persistent(true)
            .confirms(),
    );
    // Opens ruststream's lazily created confirm channel outside the timing
    // (heytom's producer opened its channel when it connected).
    rs_pub
        .message(&events[0])
        .to("peers.warmup.unrouted")
        .publish()
        .await?;

    println!(
        "rabbitmq: {count} msgs/round, exchange {} (topic, durable), durable queues, persistent messages, confirms awaited",
        n.exchange
    );
    for round in 1..=cfg.rounds {
        let order = if round % 2 == 1 {
            [Who::Heytom, Who::Rs, Who::RsMeta]
        } else {
            [Who::RsMeta, Who::Rs, Who::Heytom]
        };
        // publish
        let pub_order = if round % 2 == 1 {
            [Who::Heytom, Who::HeytomConcurrent, Who::Rs, Who::RsMeta]
        } else {
            [Who::RsMeta, Who::Rs, Who::HeytomConcurrent, Who::Heytom]
        };
        let mut pub_res = [Side::default(); 4];
        for who in pub_order {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (took, cpu) = measured(count, async {
                let start = Instant::now();
                match who {
                    Who::Heytom => {
                        hey_producer.send_batch(&events).await?;
                    }
                    Who::HeytomConcurrent => {
                        futures::future::try_join_all(events.iter().map(|e| hey_producer.send(e)))
                            .await?;
                    }
                    Who::Rs => {
                        let sends = events
                            .iter()
                            .map(|e| rs_pub.message(e).to(n.rs_key.as_str()).publish());
                        futures::future::try_join_all(sends).await?;
                    }
                    Who::RsMeta => {
                        let sends = events.iter().map(|e| {
                            let mut h = HeaderMap::new();
                            let [(_, id), (kn, name), (ka, at), (_, corr)] =
                                heytom_like_headers("PeersRabbitEvent");
                            // message-id and correlation-id become AMQP properties.
                            h.insert("message-id", id);
                            h.insert("correlation-id", corr);
                            h.insert(kn, name);
                            h.insert(ka, at);
                            h.insert("content-type", "application/json");
                            rs_pub
                                .message(e)
                                .with_headers(h)
                                .to(n.rsm_key.as_str())
                                .publish()
                        });
                        futures::future::try_join_all(sends).await?;
                    }
                }
                Ok(start.elapsed())
            })
            .await?;
            pub_res[who as usize] = Side {
                value: rate(count, took),
                cpu_us: cpu,
            };
        }
        figs.add(
            "peers.rabbitmq.publish",
            "msg/s",
            true,
            "heytom send_batch vs ruststream ConfirmsPublish, all publish() futures awaited at once",
            round,
            pub_res[0],
            pub_res[1],
        );
        figs.add(
            "peers.rabbitmq.publish_concurrent",
            "msg/s",
            true,
            "same API shape: heytom send() futures vs ruststream publish() futures, all awaited at once",
            round,
            pub_res[3],
            pub_res[1],
        );
        figs.add(
            "peers.rabbitmq.publish_same_metadata",
            "msg/s",
            true,
            "ruststream sends message-id, correlation-id, event name, occurred-at",
            round,
            pub_res[0],
            pub_res[2],
        );

        // consume
        let mut con_res = [Side::default(); 3];
        for who in order {
            tokio::time::sleep(Duration::from_millis(300)).await;
            COUNTER.reset(count, false);
            let (took, cpu) = measured(count, async {
                match who {
                    Who::Heytom => {
                        let consumer = RabbitMqConsumer::connect(options.clone()).await?;
                        consumer.start().await?;
                        consumer
                            .subscribe(move |e: PeersRabbitEvent| {
                                COUNTER.hit(e.seq);
                                std::hint::black_box(e);
                                async { true }
                            })
                            .await?;
                        let took = COUNTER.wait_cpu(Duration::from_secs(120)).await;
                        consumer.stop().await?;
                        took
                    }
                    Who::HeytomConcurrent => unreachable!("not a consume side"),
                    Who::Rs | Who::RsMeta => {
                        let broker = LapinBroker::new(cfg.rabbit_url.clone())
                            .prefetch(NonZeroU16::new(64).expect("64"));
                        let workers = std::num::NonZeroUsize::new(8).expect("8");
                        let app = RustStream::new(AppInfo::new("peers", "0.1.0"));
                        let running = if who == Who::Rs {
                            let q = n.rs_queue.clone();
                            app.with_broker(broker, move |b| {
                                b.include(rs_rabbit_handler.name(q).workers(workers));
                            })
                            .start()
                            .await?
                        } else {
                            let q = n.rsm_queue.clone();
                            app.with_broker(broker, move |b| {
                                b.include(rs_rabbit_meta_handler.name(q).workers(workers));
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
            con_res[who as usize] = Side {
                value: rate(count, took),
                cpu_us: window_cpu.as_secs_f64() * 1e6 / count as f64,
            };
        }
        figs.add(
            "peers.rabbitmq.consume",
            "msg/s",
            true,
            "ack after the handler, prefetch 64, 8 handlers; first to last handled",
            round,
            con_res[0],
            con_res[1],
        );
        figs.add(
            "peers.rabbitmq.consume_same_metadata",
            "msg/s",
            true,
            "ruststream handler reads and parses id, name, occurred-at, correlation id",
            round,
            con_res[0],
            con_res[2],
        );
        purge(conn, n).await;
    }
    hey_producer.close().await?;
    rs_broker.shutdown().await?;
    Ok(())
}
