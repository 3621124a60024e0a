//! The post-commit sender keeps commit order on PostgreSQL and the real
//! RabbitMQ and Kafka: it hands the next commits to the broker while earlier
//! ones still wait for their confirms, and one writer's events still arrive
//! in the order their transactions committed, each once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::{AppBuilder, HandlerEntry, RunningApp};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

mod outage_support;
use outage_support::{pg, purge, rabbit, require_services, unique};

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "order.sequence",
    exchange = "heytom.order.test",
    exchange_type = "topic",
    queue_name = "heytom.order.sequence",
    durable = true
)]
struct Sequenced {
    n: u32,
}

/// Records the numbers in the order they are handled (one at a time).
struct Record(Arc<Mutex<Vec<u32>>>);

impl EventHandler<Sequenced> for Record {
    async fn handle(&self, event: Sequenced, _ctx: Context) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(event.n);
        Ok(())
    }
}

/// An app producing through the outbox on a fresh table of its own.
async fn producer_app(builder: AppBuilder, pool: &sqlx::PgPool) -> (RunningApp, String) {
    let table = format!("ob_order_{}", unique());
    let app = builder
        .discover(false)
        .outbox(Outbox::postgres(pool.clone()).table_name(&table))
        .start()
        .await
        .expect("producer app");
    (app, table)
}

/// Stops both apps and drops the table.
async fn finish(producer: RunningApp, consumer: RunningApp, pool: &sqlx::PgPool, table: &str) {
    producer.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(pool)
        .await
        .unwrap();
}

/// Commits 400 transactions back to back from one writer, so commits
/// arrive while earlier ones wait for their confirms; every tenth carries
/// three events. Returns the numbers in commit order.
async fn commit_sequence<E: Event + Sync>(
    producer: &Producer,
    pool: &sqlx::PgPool,
    event: impl Fn(u32) -> E,
) -> Vec<u32> {
    let mut want = Vec::new();
    let mut n = 0u32;
    for t in 0..400u32 {
        let mut tx = producer.begin(pool).await.unwrap();
        let events = if t % 10 == 0 { 3 } else { 1 };
        for _ in 0..events {
            tx.publish(&event(n)).await.unwrap();
            want.push(n);
            n += 1;
        }
        tx.commit().await.unwrap();
    }
    want
}

/// Waits (at most a minute) for `n` numbers, then a little longer for any
/// sent twice; returns what arrived, in order.
async fn wait_for(log: &Mutex<Vec<u32>>, n: usize) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while log.lock().unwrap().len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    log.lock().unwrap().clone()
}

fn assert_in_order(got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "every event arrives once");
    let first_out_of_order = got.windows(2).position(|w| w[0] >= w[1]);
    assert_eq!(
        first_out_of_order,
        None,
        "events arrive in commit order (around position {first_out_of_order:?}: {:?})",
        first_out_of_order.map(|i| &got[i.saturating_sub(2)..(i + 3).min(got.len())])
    );
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writers_commits_arrive_in_commit_order_on_rabbitmq() {
    let Some(pool) = pg().await else { return };
    let log = Arc::new(Mutex::new(Vec::new()));
    let consumer = match App::builder()
        .rabbitmq(rabbit())
        .discover(false)
        .handler_entry(
            HandlerEntry::from_type::<Sequenced, Record>("record", Record(log.clone()))
                .concurrency(1),
        )
        .start()
        .await
    {
        Ok(app) => app,
        Err(e) if !require_services() => {
            eprintln!("NOTICE: RabbitMQ unreachable ({e}); skipping this test");
            return;
        }
        Err(e) => panic!("RabbitMQ unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {e}"),
    };
    purge("heytom.order.sequence").await;
    log.lock().unwrap().clear();

    let (producer_app, table) = producer_app(App::builder().rabbitmq(rabbit()), &pool).await;
    let want = commit_sequence(&producer_app.producer(), &pool, |n| Sequenced { n }).await;
    let got = wait_for(&log, want.len()).await;
    finish(producer_app, consumer, &pool, &table).await;
    assert_in_order(&got, &want);
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[kafka(topic = "heytom-order-sequence", partition_key = run)]
struct SequencedKafka {
    run: String,
    n: u32,
}

/// The number a run's first events carry, until one arrives.
const MARKER: u32 = u32::MAX;

/// Records the numbers of one run (the topic keeps earlier runs' events),
/// and whether a marker of the run arrived.
struct RecordRun(String, Arc<Mutex<Vec<u32>>>, Arc<AtomicBool>);

impl EventHandler<SequencedKafka> for RecordRun {
    async fn handle(&self, event: SequencedKafka, _ctx: Context) -> Result<(), HandlerError> {
        if event.run == self.0 {
            if event.n == MARKER {
                self.2.store(true, Ordering::SeqCst);
            } else {
                self.1.lock().unwrap().push(event.n);
            }
        }
        Ok(())
    }
}

/// The same on Kafka: one key, so one partition, which keeps order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writers_commits_arrive_in_commit_order_on_kafka() {
    let servers = match std::env::var("HEYTOM_KAFKA_BOOTSTRAP_SERVERS") {
        Ok(s) => s,
        Err(_) if require_services() => panic!(
            "HEYTOM_KAFKA_BOOTSTRAP_SERVERS unset and HEYTOM_TEST_REQUIRE_SERVICES=1 (scripts/kafka-broker.sh start)"
        ),
        Err(_) => {
            eprintln!("NOTICE: HEYTOM_KAFKA_BOOTSTRAP_SERVERS unset; skipping this test");
            return;
        }
    };
    let Some(pool) = pg().await else { return };
    let run = unique();
    let log = Arc::new(Mutex::new(Vec::new()));
    let assigned = Arc::new(AtomicBool::new(false));
    let consumer = App::builder()
        .kafka(heytom_mq::KafkaOptions::new(&servers).group_id(format!("order-{run}")))
        .discover(false)
        .handler_entry(
            HandlerEntry::from_type::<SequencedKafka, RecordRun>(
                "record",
                RecordRun(run.clone(), log.clone(), assigned.clone()),
            )
            .concurrency(1),
        )
        .start()
        .await
        .expect("kafka consumer app");
    let builder = App::builder().kafka(heytom_mq::KafkaOptions::new(&servers));
    let (producer_app, table) = producer_app(builder, &pool).await;
    let producer = producer_app.producer();
    // The consumer is assigned once a first event of this run arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !assigned.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Kafka consumer never assigned"
        );
        let mut tx = producer.begin(&pool).await.unwrap();
        let marker = SequencedKafka {
            run: run.clone(),
            n: MARKER,
        };
        tx.publish(&marker).await.unwrap();
        tx.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let want = commit_sequence(&producer, &pool, |n| SequencedKafka {
        run: run.clone(),
        n,
    })
    .await;
    let got = wait_for(&log, want.len()).await;
    finish(producer_app, consumer, &pool, &table).await;
    assert_in_order(&got, &want);
}
