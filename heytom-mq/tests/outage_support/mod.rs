//! What the broker-breaking tests (`outbox_outage.rs`, `crash.rs`) share:
//! the service addresses, the RabbitMQ options, and a consumer app that
//! counts deliveries per event id.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::{HandlerEntry, RabbitMqOptions, RunningApp};

pub fn rabbit_url() -> String {
    std::env::var("HEYTOM_TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

pub fn pg_url() -> String {
    std::env::var("HEYTOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A short unique suffix for table and group names.
pub fn unique() -> String {
    let s = uuid::Uuid::now_v7().simple().to_string();
    s[s.len() - 10..].to_owned()
}

/// The PostgreSQL pool, or `None` (a notice) when the server is missing and
/// services are not required.
pub async fn pg() -> Option<sqlx::PgPool> {
    match sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
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

/// RabbitMQ options that reconnect quickly after a broker restart.
pub fn rabbit() -> RabbitMqOptions {
    RabbitMqOptions::new(rabbit_url())
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .publish_timeout(Duration::from_secs(30))
}

/// Deliveries per event id, as a consumer app saw them.
pub type Seen = Arc<Mutex<HashMap<EventId, usize>>>;

/// A handler counting deliveries per event id.
pub struct Count(pub Seen);

impl<E: Event> EventHandler<E> for Count {
    async fn handle(&self, _event: E, ctx: Context) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(ctx.event_id()).or_default() += 1;
        Ok(())
    }
}

/// A consumer app counting the deliveries of `E`; its queue is purged first.
pub async fn counter<E: Event>() -> (RunningApp, Seen) {
    let seen = Seen::default();
    let app = App::builder()
        .rabbitmq(rabbit())
        .discover(false)
        .handler_entry(HandlerEntry::from_type::<E, Count>(
            "count",
            Count(seen.clone()),
        ))
        .start()
        .await
        .expect("consumer app");
    purge(E::route().as_rabbitmq().unwrap().queue_name.unwrap()).await;
    seen.lock().unwrap().clear();
    (app, seen)
}

/// Empties a RabbitMQ queue.
pub async fn purge(queue: &str) {
    let conn = lapin::Connection::connect(&rabbit_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_purge(queue.into(), Default::default())
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
}
