//! The post-commit sender keeps commit order on PostgreSQL and the real
//! RabbitMQ: it hands the next commits to the broker while earlier ones
//! still wait for their confirms, and one writer's events still arrive in
//! the order their transactions committed, each once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::HandlerEntry;
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

mod outage_support;
use outage_support::{pg_url, purge, rabbit, require_services, unique};

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

async fn pg() -> Option<sqlx::PgPool> {
    match sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&pg_url())
        .await
    {
        Ok(p) => Some(p),
        Err(e) if require_services() => {
            panic!("PostgreSQL unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {e}")
        }
        Err(e) => {
            eprintln!("NOTICE: PostgreSQL unreachable ({e}); skipping this test");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writers_commits_arrive_in_commit_order() {
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

    let table = format!("ob_order_{}", unique());
    let producer_app = App::builder()
        .rabbitmq(rabbit())
        .discover(false)
        .outbox(Outbox::postgres(pool.clone()).table_name(&table))
        .start()
        .await
        .expect("producer app");
    let producer = producer_app.producer();
    // Back to back, so commits arrive while earlier ones wait for their
    // confirms; every tenth transaction carries three events.
    let mut want = Vec::new();
    let mut n = 0u32;
    for t in 0..400u32 {
        let mut tx = producer.begin(&pool).await.unwrap();
        let events = if t % 10 == 0 { 3 } else { 1 };
        for _ in 0..events {
            tx.publish(&Sequenced { n }).await.unwrap();
            want.push(n);
            n += 1;
        }
        tx.commit().await.unwrap();
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while log.lock().unwrap().len() < want.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything sent twice would arrive soon after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = log.lock().unwrap().clone();

    producer_app.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&pool)
        .await
        .unwrap();

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
