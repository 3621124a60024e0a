//! An outbox marks a row Sent once its transport confirms the message, so
//! `AppBuilder::build` refuses an outbox over a transport that cannot
//! confirm delivery — RabbitMQ with publisher confirms off, Kafka with
//! `acks = 0` in the options or on an event's route — unless the user opts
//! in with `Outbox::allow_unconfirmed_transport(true)`.
//!
//! Against the real brokers: the refusal comes before anything connects,
//! and the accepted combinations connect and start. RabbitMQ is
//! `HEYTOM_RABBITMQ_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! Kafka is `HEYTOM_KAFKA_BOOTSTRAP_SERVERS`, or a broker
//! `scripts/kafka-broker.sh` starts. Unreachable brokers skip with a
//! notice, or fail when `HEYTOM_TEST_REQUIRE_SERVICES=1`.

mod kafka_support;

use heytom_mq::prelude::*;
use heytom_mq::Error;
use serde::{Deserialize, Serialize};

/// Produced without waiting for the broker: a registered event the outbox
/// may be asked to send.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[kafka(topic = "heytom-test-unconfirmed-fire-and-forget", acks = "0")]
struct FireAndForget;

async fn memory_outbox() -> Outbox {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    Outbox::sqlite(pool)
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: heytom_mq::Result<T>, names: &[&str]) {
    match r {
        Err(Error::Configuration(m)) => {
            for n in names
                .iter()
                .chain(&["Outbox::allow_unconfirmed_transport(true)"])
            {
                assert!(m.contains(n), "`{n}` missing from: {m}");
            }
        }
        other => panic!("expected a configuration error naming {names:?}, got {other:?}"),
    }
}

/// Builds and starts, then shuts down: the combination is accepted and
/// really connects.
async fn starts(builder: heytom_mq::AppBuilder) {
    let app = builder.start().await.expect("accepted and started");
    app.shutdown().await.expect("shutdown");
}

fn rabbitmq_url() -> String {
    std::env::var("HEYTOM_RABBITMQ_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

async fn rabbitmq_reachable() -> bool {
    match RabbitMqProducer::connect(RabbitMqOptions::new(rabbitmq_url())).await {
        Ok(p) => {
            let _ = p.close().await;
            true
        }
        Err(e) => {
            if std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "RabbitMQ is required (HEYTOM_TEST_REQUIRE_SERVICES=1) but unreachable: {e}"
                );
            }
            eprintln!("NOTICE: RabbitMQ unreachable ({e}); skipping this test");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_without_publisher_confirms_is_refused_under_an_outbox() {
    if !rabbitmq_reachable().await {
        return;
    }
    let unconfirmed = || RabbitMqOptions::new(rabbitmq_url()).publisher_confirms(false);
    let app = || App::builder().discover(false);

    refused(
        app()
            .rabbitmq(unconfirmed())
            .outbox(memory_outbox().await)
            .build()
            .await,
        &["RabbitMQ publisher confirms are off"],
    );
    refused(
        app()
            .rabbitmq(unconfirmed())
            .outbox(memory_outbox().await)
            .start()
            .await,
        &["publisher_confirms(false)"],
    );
    // Opting in, or confirms on, or no outbox: accepted, and it connects.
    starts(
        app()
            .rabbitmq(unconfirmed())
            .outbox(memory_outbox().await.allow_unconfirmed_transport(true)),
    )
    .await;
    starts(
        app()
            .rabbitmq(RabbitMqOptions::new(rabbitmq_url()))
            .outbox(memory_outbox().await),
    )
    .await;
    starts(app().rabbitmq(unconfirmed())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_with_acks_zero_is_refused_under_an_outbox() {
    let Some(servers) = kafka_support::bootstrap() else {
        return;
    };
    let options = || kafka_support::options(&servers);
    let app = || App::builder().discover(false);

    // `acks = 0` for every producer, or for the producers only.
    refused(
        app()
            .kafka(options().property("acks", "0"))
            .outbox(memory_outbox().await)
            .build()
            .await,
        &["`acks = 0`", "KafkaOptions::property"],
    );
    refused(
        app()
            .kafka(options().producer_property("request.required.acks", "0"))
            .outbox(memory_outbox().await)
            .build()
            .await,
        &["`acks = 0`"],
    );
    // The options are fine, but a registered event asks for acks = 0.
    refused(
        app()
            .kafka(options())
            .outbox(memory_outbox().await)
            .build()
            .await,
        &["`FireAndForget`", "`acks = 0`"],
    );

    // Opting in: accepted, it connects, and the relay sends the event.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let outbox = Outbox::sqlite(pool.clone()).allow_unconfirmed_transport(true);
    let running = app()
        .kafka(options())
        .outbox(outbox.clone())
        .start()
        .await
        .expect("opted in");
    let mut tx = running.producer().begin(&pool).await.unwrap();
    tx.publish(&FireAndForget).await.unwrap();
    tx.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let counts = outbox.status_counts().await.unwrap();
        if counts.sent == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the row was not marked Sent: {counts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    running.shutdown().await.unwrap();
    // `acks = all` for the producers wins over the event's attribute.
    starts(
        app()
            .kafka(options().producer_property("acks", "all"))
            .outbox(memory_outbox().await),
    )
    .await;
    // Without an outbox nothing is marked Sent: acks = 0 is the user's business.
    starts(app().kafka(options().property("acks", "0"))).await;
}
