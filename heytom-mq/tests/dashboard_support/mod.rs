//! What the dashboard tests share: an app with an outbox on one database
//! and the in-memory transport, the rows they seed, and the pools.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use heytom_mq::prelude::*;
use heytom_mq::{
    HandlerEntry, LocalMessage, LocalMessageRepository, MessageStatus, OutboxAdmin, RunningApp,
};
use serde::{Deserialize, Serialize};

/// The event the seeded rows carry; the relay sends it on the in-memory transport.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "DashboardNote")]
pub struct Note {
    pub text: String,
}

pub fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// `None` (skip) when a server is unreachable, unless services are required.
pub fn unavailable(what: &str, err: impl std::fmt::Display) {
    if require_services() {
        panic!("{what} unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {err}");
    }
    eprintln!("NOTICE: {what} unreachable ({err}); skipping this test");
}

pub fn unique() -> String {
    let s = uuid::Uuid::now_v7().simple().to_string();
    s[s.len() - 10..].to_owned()
}

pub async fn postgres() -> Option<Outbox> {
    let url = std::env::var("HEYTOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await;
    match pool {
        Ok(p) => Some(Outbox::postgres(p)),
        Err(e) => {
            unavailable("PostgreSQL", e);
            None
        }
    }
}

pub async fn mysql() -> Option<Outbox> {
    let url = std::env::var("HEYTOM_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await;
    match pool {
        Ok(p) => Some(Outbox::mysql(p)),
        Err(e) => {
            unavailable("MariaDB/MySQL", e);
            None
        }
    }
}

pub async fn sqlite() -> Option<Outbox> {
    sqlite_pool().await.map(Outbox::sqlite)
}

/// A pool on a fresh SQLite file.
pub async fn sqlite_pool() -> Option<sqlx::SqlitePool> {
    use std::str::FromStr;
    let path = std::env::temp_dir().join(format!("heytom-dashboard-{}.db", unique()));
    let opts =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .expect("test sqlite url")
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
    match sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(5)
        .connect_with(opts)
        .await
    {
        Ok(p) => Some(p),
        Err(e) => {
            unavailable("SQLite", e);
            None
        }
    }
}

/// The texts of the `Note`s the app's handler got.
pub type Delivered = Arc<Mutex<Vec<String>>>;

/// An app on `outbox` (a fresh table) and the in-memory transport, with a
/// handler of `Note` and a second one that always fails (so that a
/// delivery ends as an in-memory dead letter). Its scanner sleeps an hour
/// between scans: a requeued row is sent at once only because the
/// requeue wakes it.
pub async fn start_app(outbox: Outbox) -> (RunningApp, Outbox, Delivered) {
    let outbox = outbox.table_name(format!("Dash_{}", unique()));
    let delivered = Delivered::default();
    let seen = delivered.clone();
    let app = App::builder()
        .in_memory()
        .discover(false)
        .outbox(outbox.clone())
        .local_message_retry(heytom_mq::LocalMessageRetryOptions {
            scan_interval: Duration::from_secs(3600),
            max_retry_count: 3,
            ..Default::default()
        })
        .retry_policy(RetryPolicy::none())
        .handler_entry(HandlerEntry::from_closure("record_note", move |n: Note| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(n.text);
                true
            }
        }))
        .handler_entry(
            HandlerEntry::from_closure("reject_note", |_: Note| async { false })
                .group("rejecting-group"),
        )
        .start()
        .await
        .expect("app starts");
    (app, outbox, delivered)
}

/// The ids of the rows [`seed`] wrote.
pub struct Seeded {
    /// Failed rows of `Note` (retries used up), newest last.
    pub failed: Vec<uuid::Uuid>,
    /// A Failed row whose body holds a `<script>` tag.
    pub script: uuid::Uuid,
    /// A Pending row of type `DashboardLater`, not due for a day.
    pub later: uuid::Uuid,
    /// Two Sent rows of type `DashboardOld`, created two days ago.
    pub old: Vec<uuid::Uuid>,
}

fn row(status: MessageStatus, ty: &str, body: String, age: TimeDelta) -> LocalMessage {
    let mut m = LocalMessage::pending(ty, body);
    m.status = status;
    m.created_at = Utc::now() - age;
    m
}

/// Writes the rows the tests look at (and nothing the relay would send).
pub async fn seed(outbox: &Outbox) -> Seeded {
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for i in 0..3 {
        let body = serde_json::json!({ "text": format!("failed note {i}") }).to_string();
        let mut m = row(
            MessageStatus::Failed,
            "DashboardNote",
            body,
            TimeDelta::minutes(30 - i),
        );
        m.retry_count = 3;
        m.error_message = Some(format!("broker refused note {i}"));
        m.headers = Some(r#"{"correlation-id":"corr-42","tenant":"acme"}"#.to_owned());
        failed.push(m.id);
        rows.push(m);
    }
    let mut script = row(
        MessageStatus::Failed,
        "DashboardNote",
        serde_json::json!({ "text": "<script>alert('x')</script>" }).to_string(),
        TimeDelta::minutes(10),
    );
    script.retry_count = 3;
    script.error_message = Some("<b>bold</b> error".to_owned());
    let mut later = row(
        MessageStatus::Pending,
        "DashboardLater",
        "{}".to_owned(),
        TimeDelta::minutes(5),
    );
    later.next_attempt_at = Utc::now() + TimeDelta::days(1);
    let old: Vec<LocalMessage> = (0..2)
        .map(|_| {
            row(
                MessageStatus::Sent,
                "DashboardOld",
                "{}".to_owned(),
                TimeDelta::days(2),
            )
        })
        .collect();
    let seeded = Seeded {
        failed,
        script: script.id,
        later: later.id,
        old: old.iter().map(|m| m.id).collect(),
    };
    rows.push(script);
    rows.push(later);
    rows.extend(old);
    let errors: Vec<(uuid::Uuid, String)> = rows
        .iter()
        .filter_map(|m| Some((m.id, m.error_message.clone()?)))
        .collect();
    outbox.save_batch(&rows).await.expect("seed rows");
    // An insert writes no error; the relay's failure does, as this does.
    for (id, error) in errors {
        let done = outbox
            .update_status(id, MessageStatus::Failed, Some(&error))
            .await
            .expect("set the error");
        assert!(done);
    }
    seeded
}

/// Waits (generously) until the row has `status`.
pub async fn wait_status(admin: &OutboxAdmin, id: uuid::Uuid, status: MessageStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = admin.message(id).await.expect("read row").map(|m| m.status);
        if now == Some(status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "row {id} is {now:?}, not {status:?}, after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
