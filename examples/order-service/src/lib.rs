//! heytom-mq's example service: orders over HTTP, billing on RabbitMQ,
//! analytics on Kafka. Each order is written with its events in one
//! database transaction (the outbox), its payment reminder scheduled in the
//! same transaction (`publish_after`, the transactional `send_after`); each
//! handler's writes, its inbox row and its follow-ups commit together
//! (`Tx` + the inbox), so every message takes effect once.
//!
//! It runs with no configuration on the in-memory broker and a SQLite file
//! (`order-service.db`), and on the real services with heytom-mq's usual
//! environment variables:
//!
//! | variable | default | |
//! |---|---|---|
//! | `HEYTOM_DATABASE_URL` | `sqlite:order-service.db` | `postgres://...` or `sqlite:...` |
//! | `HEYTOM_RABBITMQ_URL` | unset | billing's events on RabbitMQ |
//! | `HEYTOM_KAFKA_BOOTSTRAP_SERVERS` | unset | analytics' events on Kafka |
//! | `ORDER_SERVICE_LISTEN` | `127.0.0.1:3000` | the HTTP address |
//! | `ORDER_SERVICE_REMINDER_AFTER_SECS` | `30` | when the payment reminder is due |
//!
//! With RabbitMQ and Kafka unset every event travels in-process; with one of
//! them set, the other must be too (an event whose transport is missing
//! stops the start with an error naming it).

use std::net::SocketAddr;
use std::time::Duration;

use heytom_mq::{App, AppBuilder, Producer, RunningApp};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod events;
pub mod handlers;
pub mod http;
pub mod store;

use store::Db;

/// The service's settings, from the environment (see the crate docs).
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub reminder_after: Duration,
}

impl Settings {
    /// Reads the settings; a malformed value is an error naming its variable.
    pub fn from_env() -> anyhow::Result<Settings> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let listen = var("ORDER_SERVICE_LISTEN").unwrap_or_else(|| "127.0.0.1:3000".into());
        let listen = listen.parse().map_err(|e| {
            anyhow::anyhow!("ORDER_SERVICE_LISTEN must be an address like 127.0.0.1:3000, found {listen:?}: {e}")
        })?;
        let reminder = var("ORDER_SERVICE_REMINDER_AFTER_SECS").unwrap_or_else(|| "30".into());
        let reminder_after = reminder
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0 * 30.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                anyhow::anyhow!("ORDER_SERVICE_REMINDER_AFTER_SECS must be a number of seconds from 0 to 30 days, found {reminder:?}")
            })?;
        Ok(Settings {
            listen,
            database_url: var("HEYTOM_DATABASE_URL")
                .unwrap_or_else(|| "sqlite:order-service.db".into()),
            reminder_after,
        })
    }
}

/// The service's messaging on `builder`: the handlers of its database,
/// the outbox and the inbox on it. `main` passes `App::from_env()`; the
/// tests pass `App::builder()` to `TestApp::from_builder`.
pub fn configure(builder: AppBuilder, db: &Db) -> AppBuilder {
    builder
        .discover_in(handlers::module_for(db))
        .outbox(db.outbox())
        .inbox(db.inbox())
}

/// The running service.
pub struct Service {
    addr: SocketAddr,
    app: RunningApp,
    db: Db,
    server: JoinHandle<std::io::Result<()>>,
    stop_http: oneshot::Sender<()>,
}

/// Connects the database (creating the tables), starts the handlers and
/// the HTTP server.
pub async fn start(settings: Settings) -> anyhow::Result<Service> {
    let db = Db::connect(&settings.database_url).await?;
    db.create_schema().await?;
    let app = configure(App::from_env(), &db).start().await?;
    let listener = TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let router = http::router(http::Api {
        db: db.clone(),
        producer: app.producer(),
        reminder_after: settings.reminder_after,
    });
    let (stop_http, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Service {
        addr,
        app,
        db,
        server,
        stop_http,
    })
}

impl Service {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The producer.
    pub fn producer(&self) -> Producer {
        self.app.producer()
    }

    /// Stops taking requests, then stops the handlers (in-flight work
    /// finishes or is handed back) and closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop_http.send(());
        self.server.await??;
        self.app.shutdown().await?;
        self.db.close().await;
        Ok(())
    }
}
