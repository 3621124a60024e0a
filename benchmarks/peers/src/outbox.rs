//! Publishing through each one's outbox on PostgreSQL, delivered over
//! RabbitMQ to a handler of the same process.
//!
//! heytom-mq: `Producer::begin(&pool)`, the business insert, `tx.publish`,
//! `tx.commit()`: the outbox row is written in the business transaction and
//! the relay sends it after the commit (confirm awaited, row marked sent);
//! the handler runs behind the app's RabbitMQ consumer.
//!
//! ruststream-sqlx 0.7 has **no transactional outbox in that sense**: its
//! `Outbox` records a row *when the message is published*, on a connection
//! of its own pool, outside any transaction of the caller (and then
//! publishes at once, marking the row processed when the consumer's handler
//! acks; unprocessed rows are republished at the next start). The closest a
//! ruststream user can write is: business transaction, commit, then a
//! tracked publish (row insert + publish + confirm). That is what is
//! measured, and the figures are printed as "not equivalent": a crash
//! between the commit and the tracked publish loses the event on the
//! ruststream side, not on heytom's.

use std::num::{NonZeroU16, NonZeroUsize};
use std::sync::atomic::{AtomicI64, AtomicPtr, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use heytom_mq::{App as HeyApp, EventHandler, HandlerError, RabbitMqOptions};
use heytom_mq::{Outbox as HeyOutbox, RabbitMqRoute, Route};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use ruststream::{Broker, ConnectedBroker, OutgoingMessage};
use ruststream_lapin::prelude::*;
use ruststream_sqlx::outbox::Outbox as RsOutbox;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, Postgres};
use sqlx::AssertSqlSafe;

use crate::common::{
    heytom_like_headers, measured, payloads, percentile, rate, Cfg, Figures, Payload, Side, COUNTER,
};

const WRITERS: usize = 8;
const NOT_EQUIVALENT: &str = "NOT EQUIVALENT: ruststream-sqlx records its outbox row outside the business transaction (own connection, after the commit); closest ruststream code measured";

#[derive(Debug, Clone, Serialize, Deserialize, Outgoing)]
pub struct PeersOutboxEvent {
    pub seq: u64,
    pub key: String,
    pub data: String,
}

impl From<&Payload> for PeersOutboxEvent {
    fn from(p: &Payload) -> Self {
        PeersOutboxEvent {
            seq: p.seq,
            key: p.key.clone(),
            data: p.data.clone(),
        }
    }
}

static ROUTE: AtomicPtr<Route> = AtomicPtr::new(std::ptr::null_mut());
static DEFAULT_ROUTE: Route = Route::Default;

impl heytom_mq::Event for PeersOutboxEvent {
    const NAME: &'static str = "PeersOutboxEvent";
    fn route() -> &'static Route {
        // SAFETY: only ever set to a leaked Box, never freed.
        unsafe { ROUTE.load(Ordering::Acquire).as_ref() }.unwrap_or(&DEFAULT_ROUTE)
    }
    fn partition_key(&self) -> Option<String> {
        None
    }
}

heytom_mq::__private::inventory::submit! {
    heytom_mq::__private::EventRegistration {
        name: <PeersOutboxEvent as heytom_mq::Event>::NAME,
        route: <PeersOutboxEvent as heytom_mq::Event>::route,
    }
}

struct HeyHandler;

impl EventHandler<PeersOutboxEvent> for HeyHandler {
    fn handle(
        &self,
        event: PeersOutboxEvent,
        _ctx: heytom_mq::Context,
    ) -> impl std::future::Future<Output = Result<(), HandlerError>> + Send {
        COUNTER.hit(event.seq);
        std::hint::black_box(event);
        async { Ok(()) }
    }
}

/// ruststream-sqlx's outbox table (the name is a constant of the derive).
/// Columns as in ruststream-sqlx's README.
#[derive(ruststream_sqlx::Outbox, sqlx::FromRow)]
#[outbox(table = "peers_rs_outbox")]
pub struct RsOutboxRow {
    #[field(id)]
    id: i64,
    #[field(name)]
    name: String,
    #[field(payload)]
    payload: Vec<u8>,
    #[field(processed_at)]
    processed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ruststream_sqlx::outbox::Publish<Postgres> for RsOutboxRow {
    async fn publish(conn: &mut PgConnection, msg: &OutgoingMessage<'_>) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO peers_rs_outbox (name, payload) VALUES ($1, $2) RETURNING id",
        )
        .bind(msg.name())
        .bind(msg.payload())
        .fetch_one(conn)
        .await
    }
}

#[subscriber]
async fn rs_outbox_handler(ev: &PeersOutboxEvent) -> HandlerOutcome {
    std::hint::black_box(ev);
    COUNTER.hit(ev.seq);
    HandlerOutcome::ack()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Heytom,
    Rs,
    RsMeta,
}

struct Names {
    exchange: String,
    hey_queue: String,
    hey_key: String,
    rs_queue: &'static str,
    rsm_queue: &'static str,
    hey_table: String,
    biz: String,
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub async fn run(cfg: &Cfg, figs: &mut Figures) -> anyhow::Result<()> {
    let r = &cfg.run;
    let n = Names {
        exchange: format!("peers_oex_{r}"),
        hey_queue: format!("peers_ohey_{r}"),
        hey_key: format!("peers.ohey.{r}"),
        rs_queue: leak(format!("peers_ors_{r}")),
        rsm_queue: leak(format!("peers_orsm_{r}")),
        hey_table: format!("peers_hey_outbox_{r}"),
        biz: format!("peers_biz_{r}"),
    };
    let mut route = RabbitMqRoute::new(leak(n.hey_key.clone()))
        .exchange(leak(n.exchange.clone()))
        .queue_name(leak(n.hey_queue.clone()));
    route.durable = Some(true);
    ROUTE.store(
        Box::into_raw(Box::new(Route::RabbitMq(route))),
        Ordering::Release,
    );
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect(&cfg.pg_url)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {} (id BIGINT PRIMARY KEY, note TEXT NOT NULL)",
        n.biz
    )))
    .execute(&pool)
    .await?;
    sqlx::query("DROP TABLE IF EXISTS peers_rs_outbox")
        .execute(&pool)
        .await?;
    sqlx::query(
        "CREATE TABLE peers_rs_outbox (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, \
         payload BYTEA NOT NULL, processed_at TIMESTAMPTZ)",
    )
    .execute(&pool)
    .await?;
    let conn = Connection::connect(&cfg.rabbit_url, ConnectionProperties::default()).await?;
    {
        let ch = conn.create_channel().await?;
        for q in [n.rs_queue, n.rsm_queue] {
            ch.queue_declare(
                q.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        }
        ch.close(200, "ok".into()).await?;
    }
    let result = rounds(cfg, figs, &pool, &n).await;
    // Clean up whatever happened.
    if let Ok(ch) = conn.create_channel().await {
        for q in [
            n.hey_queue.clone(),
            format!("{}.dlq", n.hey_queue),
            n.rs_queue.to_owned(),
            n.rsm_queue.to_owned(),
        ] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = ch
            .exchange_delete(n.exchange.as_str().into(), Default::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
    for t in [n.biz.as_str(), n.hey_table.as_str(), "peers_rs_outbox"] {
        let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS \"{t}\"")))
            .execute(&pool)
            .await;
        let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {t}")))
            .execute(&pool)
            .await;
    }
    pool.close().await;
    result
}

async fn rounds(cfg: &Cfg, figs: &mut Figures, pool: &PgPool, n: &Names) -> anyhow::Result<()> {
    // heytom: one app with the outbox, the RabbitMQ transport and the handler.
    let hey_app = HeyApp::builder()
        .discover(false)
        .rabbitmq(
            RabbitMqOptions::new(cfg.rabbit_url.clone())
                .prefetch(64)
                .concurrency(8),
        )
        .outbox(HeyOutbox::postgres(pool.clone()).table_name(&n.hey_table))
        .handler::<PeersOutboxEvent, _>(HeyHandler)
        .start()
        .await?;
    let hey_producer = hey_app.producer();

    // ruststream: the outbox registry, its consumer layer on a lapin app, and
    // a tracked confirms publisher on the default exchange (the routing key is
    // the queue name, so the tracked name is the delivery's name too).
    let tracking = RsOutbox::new(pool.clone())
        .register::<RsOutboxRow>(n.rs_queue)
        .register::<RsOutboxRow>(n.rsm_queue);
    let workers = NonZeroUsize::new(8).expect("8");
    let (rsq, rsmq) = (n.rs_queue, n.rsm_queue);
    let rs_app = RustStream::new(AppInfo::new("peers-outbox", "0.1.0"))
        .layer(tracking.layer())
        .with_broker(
            LapinBroker::new(cfg.rabbit_url.clone()).prefetch(NonZeroU16::new(64).expect("64")),
            move |b| {
                b.include(rs_outbox_handler.name(rsq).workers(workers));
                b.include(rs_outbox_handler.name(rsmq).workers(workers));
            },
        )
        .start()
        .await?;
    let rs_broker = LapinBroker::new(cfg.rabbit_url.clone()).connect().await?;
    let rs_pub = Arc::new(
        tracking.wrap(rs_broker.publisher(LapinPublish::default().persistent(true).confirms())),
    );

    let next_id = Arc::new(AtomicI64::new(0));
    let events: Arc<Vec<PeersOutboxEvent>> = Arc::new(
        payloads(cfg.outbox_count.max(cfg.latency_count))
            .iter()
            .map(Into::into)
            .collect(),
    );
    let insert = Arc::new(format!("INSERT INTO {} (id, note) VALUES ($1, $2)", n.biz));

    // One untimed warm-up transaction on each side.
    COUNTER.reset(3, false);
    for who in [Who::Heytom, Who::Rs, Who::RsMeta] {
        one_tx(
            who,
            &hey_producer,
            &rs_pub,
            pool,
            &insert,
            &next_id,
            &events[0],
            n,
            None,
        )
        .await?;
    }
    COUNTER.wait(Duration::from_secs(30)).await?;

    println!(
        "outbox: PostgreSQL -> RabbitMQ -> handler; throughput {} tx/round with {WRITERS} writers \
         (time until the handler saw the last one), latency {} sequential commits (commit -> handler)",
        cfg.outbox_count, cfg.latency_count
    );
    println!("outbox: {NOT_EQUIVALENT}");
    for round in 1..=cfg.rounds {
        let order = if round % 2 == 1 {
            [Who::Heytom, Who::Rs, Who::RsMeta]
        } else {
            [Who::RsMeta, Who::Rs, Who::Heytom]
        };
        let mut thr = [Side::default(); 3];
        let mut p50 = [Side::default(); 3];
        let mut p99 = [Side::default(); 3];
        for who in order {
            // throughput
            tokio::time::sleep(Duration::from_millis(300)).await;
            let count = cfg.outbox_count / WRITERS * WRITERS;
            COUNTER.reset(count, false);
            let (took, cpu) = measured(count, async {
                let start = Instant::now();
                let mut tasks = Vec::new();
                for w in 0..WRITERS {
                    let (hp, rp, pool, insert, next_id, events) = (
                        hey_producer.clone(),
                        rs_pub.clone(),
                        pool.clone(),
                        insert.clone(),
                        next_id.clone(),
                        events.clone(),
                    );
                    let names = (n.rs_queue, n.rsm_queue);
                    tasks.push(tokio::spawn(async move {
                        for i in 0..count / WRITERS {
                            let ev = &events[w * (count / WRITERS) + i];
                            one_tx_named(who, &hp, &rp, &pool, &insert, &next_id, ev, names, None)
                                .await?;
                        }
                        Ok::<_, anyhow::Error>(())
                    }));
                }
                for t in tasks {
                    t.await??;
                }
                COUNTER.wait(Duration::from_secs(300)).await?;
                Ok(start.elapsed())
            })
            .await?;
            thr[who as usize] = Side {
                value: rate(count, took),
                cpu_us: cpu,
            };

            // latency: one writer, commit -> handler
            tokio::time::sleep(Duration::from_millis(300)).await;
            let l = cfg.latency_count;
            COUNTER.reset(l, true);
            let mut committed = Vec::with_capacity(l);
            let (_, cpu) = measured(l, async {
                for ev in events.iter().take(l) {
                    let mut at = None;
                    one_tx(
                        who,
                        &hey_producer,
                        &rs_pub,
                        pool,
                        &insert,
                        &next_id,
                        ev,
                        n,
                        Some(&mut at),
                    )
                    .await?;
                    committed.push((ev.seq, at.expect("commit time")));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                COUNTER.wait(Duration::from_secs(60)).await?;
                Ok(())
            })
            .await?;
            let seen = COUNTER.seen();
            let mut lat: Vec<Duration> = committed
                .iter()
                .filter_map(|(seq, t0)| seen.get(seq).map(|t| t.saturating_duration_since(*t0)))
                .collect();
            lat.sort();
            p50[who as usize] = Side {
                value: percentile(&lat, 0.5),
                cpu_us: cpu,
            };
            p99[who as usize] = Side {
                value: percentile(&lat, 0.99),
                cpu_us: f64::NAN,
            };
        }
        for (suffix, rs, note) in [
            ("", 1usize, NOT_EQUIVALENT),
            (
                "_same_metadata",
                2,
                "NOT EQUIVALENT (as above); ruststream also sends the heytom metadata headers",
            ),
        ] {
            figs.add(
                &format!("peers.outbox.throughput{suffix}"),
                "tx/s",
                true,
                note,
                round,
                thr[0],
                thr[rs],
            );
            figs.add(
                &format!("peers.outbox.latency_p50{suffix}"),
                "ms",
                false,
                note,
                round,
                p50[0],
                p50[rs],
            );
            figs.add(
                &format!("peers.outbox.latency_p99{suffix}"),
                "ms",
                false,
                note,
                round,
                p99[0],
                p99[rs],
            );
        }
    }
    // What each outbox did with its rows (a check that both really went
    // through their outbox, not a timed figure).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hey_counts = HeyOutbox::postgres(pool.clone())
        .table_name(&n.hey_table)
        .status_counts()
        .await?;
    let (rs_rows, rs_processed): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(processed_at) FROM peers_rs_outbox")
            .fetch_one(pool)
            .await?;
    println!(
        "outbox rows: heytom {} sent, {} pending, {} failed | ruststream {rs_rows} recorded, {rs_processed} processed",
        hey_counts.sent, hey_counts.pending, hey_counts.failed
    );
    hey_app.shutdown().await?;
    rs_app.shutdown().await?;
    rs_broker.shutdown().await?;
    Ok(())
}

type RsPub = ruststream_sqlx::outbox::TrackedPublisher<
    ruststream_lapin::ConfirmsPublisher,
    Postgres,
    ruststream_sqlx::outbox::Registered<
        RsOutboxRow,
        ruststream_sqlx::outbox::Registered<RsOutboxRow, ruststream_sqlx::outbox::Nil>,
    >,
>;

#[allow(clippy::too_many_arguments)]
async fn one_tx(
    who: Who,
    hey: &heytom_mq::Producer,
    rs: &RsPub,
    pool: &PgPool,
    insert: &str,
    next_id: &AtomicI64,
    ev: &PeersOutboxEvent,
    n: &Names,
    at: Option<&mut Option<Instant>>,
) -> anyhow::Result<()> {
    one_tx_named(
        who,
        hey,
        rs,
        pool,
        insert,
        next_id,
        ev,
        (n.rs_queue, n.rsm_queue),
        at,
    )
    .await
}

/// One business transaction with its event, each side its own way; `at`
/// receives the instant just before the commit.
#[allow(clippy::too_many_arguments)]
async fn one_tx_named(
    who: Who,
    hey: &heytom_mq::Producer,
    rs: &RsPub,
    pool: &PgPool,
    insert: &str,
    next_id: &AtomicI64,
    ev: &PeersOutboxEvent,
    (rs_queue, rsm_queue): (&'static str, &'static str),
    at: Option<&mut Option<Instant>>,
) -> anyhow::Result<()> {
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    let note = format!("order {id}");
    match who {
        Who::Heytom => {
            let mut tx = hey.begin(pool).await?;
            sqlx::query(AssertSqlSafe(insert.to_owned()))
                .bind(id)
                .bind(&note)
                .execute(&mut **tx)
                .await?;
            tx.publish(ev).await?;
            if let Some(at) = at {
                *at = Some(Instant::now());
            }
            tx.commit().await?;
        }
        Who::Rs | Who::RsMeta => {
            let mut tx = pool.begin().await?;
            sqlx::query(AssertSqlSafe(insert.to_owned()))
                .bind(id)
                .bind(&note)
                .execute(&mut *tx)
                .await?;
            if let Some(at) = at {
                *at = Some(Instant::now());
            }
            tx.commit().await?;
            if who == Who::Rs {
                rs.message(ev).to(rs_queue).publish().await?;
            } else {
                let mut h = HeaderMap::new();
                let [(_, id), (kn, name), (ka, at), (_, corr)] =
                    heytom_like_headers("PeersOutboxEvent");
                h.insert("message-id", id);
                h.insert("correlation-id", corr);
                h.insert(kn, name);
                h.insert(ka, at);
                rs.message(ev)
                    .with_headers(h)
                    .to(rsm_queue)
                    .publish()
                    .await?;
            }
        }
    }
    Ok(())
}
