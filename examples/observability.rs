//! heytom-mq's operations side in one service: the outbox dashboard,
//! Prometheus metrics, health checks, the AsyncAPI document, and spans
//! exported to stdout, with some traffic so that there is something to see.
//!
//! ```sh
//! cargo run -p heytom-mq-examples --example observability
//! # then open http://127.0.0.1:8080/dashboard
//! curl -s localhost:8080/metrics | grep heytom_
//! curl -s localhost:8080/health/ready
//! curl -s localhost:8080/asyncapi.json
//! ```
//!
//! By default it runs on the in-memory broker and a SQLite file
//! (`observability.db` in the temporary directory). With
//! `HEYTOM_RABBITMQ_URL`, `HEYTOM_KAFKA_BOOTSTRAP_SERVERS` or
//! `HEYTOM_DATABASE_URL` set it uses RabbitMQ, Kafka and that database
//! instead (events whose transport is not configured stay in memory).
//! `HEYTOM_HTTP_ADDR` changes the address (default `127.0.0.1:8080`);
//! `HEYTOM_SPANS=0` stops printing spans. Ctrl-C stops it.
//!
//! Traffic: an order every second, written together with its event in one
//! transaction (the outbox); billing fails the first attempt of every third
//! order (a retry) and refuses every tenth order outright (a failed row in
//! the dead letters); a shipment follows each billed order through
//! `ctx.publish()`, in the same trace.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::sqlx;
use opentelemetry::trace::TracerProvider as _;
use serde::{Deserialize, Serialize};
use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt, Layer};

#[derive(Event, Serialize, Deserialize, schemars::JsonSchema, Debug, Clone)]
#[rabbitmq(
    routing_key = "observability.order.placed",
    exchange = "observability.orders",
    exchange_type = "topic",
    queue_name = "observability.order.placed.queue",
    message_ttl = 3600000,
    max_length = 100000,
    dead_letter_exchange = "observability.dlx"
)]
pub struct OrderPlaced {
    pub order_id: u64,
    pub amount: f64,
    pub customer: Customer,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Debug, Clone)]
pub struct Customer {
    pub id: u64,
    pub email: String,
}

#[derive(Event, Serialize, Deserialize, schemars::JsonSchema, Debug, Clone)]
#[kafka(
    topic = "observability-shipments",
    partition_key = order_id,
    num_partitions = 3,
    retention_ms = 604800000
)]
pub struct ShipmentRequested {
    pub order_id: String,
    pub items: u32,
}

#[handler(max_attempts = 3)]
async fn bill(order: OrderPlaced, ctx: Context) -> Result<(), HandlerError> {
    tracing::info!(target: "observability", order = order.order_id, attempt = ctx.attempt(), "billing");
    if order.order_id.is_multiple_of(10) {
        return Err(format!("order {}: card declined", order.order_id).into());
    }
    if order.order_id.is_multiple_of(3) && ctx.attempt() == 1 {
        return Err("payment provider timed out".into());
    }
    tokio::time::sleep(Duration::from_millis(5 + order.order_id % 20)).await;
    ctx.publish(&ShipmentRequested {
        order_id: order.order_id.to_string(),
        items: 1 + (order.order_id % 4) as u32,
    })
    .await?;
    Ok(())
}

#[handler]
async fn ship(shipment: ShipmentRequested) {
    tracing::info!(target: "observability", order = %shipment.order_id, items = shipment.items, "shipping");
}

/// Spans to stdout (unless `HEYTOM_SPANS=0`), log lines to stderr.
fn init_tracing() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            Targets::new()
                .with_target("heytom_mq", tracing::Level::INFO)
                .with_target("observability", tracing::Level::INFO),
        );
    if std::env::var("HEYTOM_SPANS").is_ok_and(|v| v == "0") {
        tracing_subscriber::registry().with(logs).init();
        return None;
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("observability-example"))
        // heytom-mq's publish and handler spans are at debug level.
        .with_filter(
            Targets::new()
                .with_target("heytom_mq", tracing::Level::DEBUG)
                .with_target("observability", tracing::Level::INFO),
        );
    tracing_subscriber::registry().with(logs).with(otel).init();
    Some(provider)
}

/// The SQLite file of the default setup.
async fn sqlite() -> anyhow::Result<sqlx::SqlitePool> {
    let path = std::env::temp_dir().join("observability.db");
    let options =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    Ok(sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?)
}

/// Where the orders' transactions run: the outbox's database.
enum Database {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    /// A database this example does not open itself (MySQL): plain sends.
    Other,
}

/// One order a second, each in a transaction with its row in the outbox.
async fn traffic(producer: Producer, db: Database) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for order_id in 1.. {
        tick.tick().await;
        let order = OrderPlaced {
            order_id,
            amount: (order_id * 7 % 100) as f64 + 0.99,
            customer: Customer {
                id: order_id % 5,
                email: format!("customer{}@example.com", order_id % 5),
            },
        };
        let span = tracing::info_span!(target: "observability", "place order", order_id);
        let sent = async {
            match &db {
                Database::Sqlite(pool) => {
                    producer
                        .send_with_transaction(pool, |_tx| Box::pin(async move { Ok(order) }))
                        .await
                }
                Database::Postgres(pool) => {
                    producer
                        .send_with_transaction(pool, |_tx| Box::pin(async move { Ok(order) }))
                        .await
                }
                Database::Other => producer.send(&order).await,
            }
        };
        if let Err(e) = tracing::Instrument::instrument(sent, span).await {
            tracing::warn!(target: "observability", error = %e, "could not place an order");
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let provider = init_tracing();
    // Metrics: installed before the app is built.
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;

    // RabbitMQ / Kafka / the database from the environment; the in-memory
    // broker carries the events whose transport is not configured.
    let mut builder = App::from_env().in_memory();
    let db = match std::env::var("HEYTOM_DATABASE_URL") {
        Err(_) => {
            let sqlite = sqlite().await?;
            builder = builder.outbox(Outbox::sqlite(sqlite.clone()));
            Database::Sqlite(sqlite)
        }
        Ok(url) if url.starts_with("postgres") => {
            Database::Postgres(sqlx::PgPool::connect(&url).await?)
        }
        Ok(_) => Database::Other,
    };
    let running = builder
        .local_message_retry(LocalMessageRetryOptions {
            scan_interval: Duration::from_secs(5),
            ..Default::default()
        })
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(3)
                .initial_backoff(Duration::from_millis(200)),
        )
        .start()
        .await?;

    let asyncapi = heytom_mq::asyncapi::document_with_handlers(
        heytom_mq::asyncapi::AsyncApiInfo::new("heytom-mq observability example", "1.0.0")
            .description("Orders are billed, billed orders shipped."),
        running.handlers(),
    );
    let http = axum::Router::new()
        .nest(
            "/dashboard",
            heytom_mq::dashboard::Dashboard::new(&running)
                .asyncapi_document(asyncapi.clone())
                .router(),
        )
        .merge(heytom_mq::health::router(&running))
        .route(
            "/metrics",
            axum::routing::get(move || std::future::ready(prometheus.render())),
        )
        .route(
            "/asyncapi.json",
            axum::routing::get(move || std::future::ready(axum::Json(asyncapi.clone()))),
        );
    let addr: SocketAddr = std::env::var("HEYTOM_HTTP_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "dashboard http://{addr}/dashboard   metrics http://{addr}/metrics   health http://{addr}/health/ready   AsyncAPI http://{addr}/asyncapi.json"
    );
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            http.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let traffic = tokio::spawn(traffic(running.producer(), db));

    tokio::signal::ctrl_c().await?;
    traffic.abort();
    server.abort();
    running.shutdown().await?;
    if let Some(provider) = provider {
        let _ = provider.shutdown();
    }
    Ok(())
}
