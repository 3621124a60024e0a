//! A real crash between commit and ack: the consumer runs in a child
//! process (this test binary run again as `inbox_crash_child`), and kills
//! itself with SIGKILL from a `tracing` layer on the inbox's "inbox
//! committed" event, which the runtime emits after the commit and before
//! the ack (Kafka: before the offset is stored). No destructor, no flush,
//! no ack. The broker delivers the message again to a fresh child, whose
//! inbox finds the row and skips it: one business row. On PostgreSQL,
//! MariaDB and SQLite, over RabbitMQ and over Kafka.

#[macro_use]
mod inbox_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use heytom_mq::prelude::*;
use heytom_mq::{Inbox, Tx};
use inbox_support::*;
use sqlx::AssertSqlSafe;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

/// One case: the consumer on `$via`, its inbox and business table in `$db`.
macro_rules! case {
    ($name:ident, $via:ident, $db:ty, $ph:literal) => {
        mod $name {
            use super::*;

            test_event!(Order, $via, { n: u32 });

            #[handler(idempotent)]
            async fn bill(event: Order, mut tx: Tx<$db>, ctx: Context) -> Result<(), HandlerError> {
                let table = std::env::var("HEYTOM_INBOX_BIZ")?;
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {table} (event_id, n) VALUES ({})",
                    $ph
                )))
                .bind(ctx.event_id().to_string())
                .bind(i64::from(event.n))
                .execute(&mut *tx)
                .await?;
                println!("ran {}", ctx.event_id());
                Ok(())
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_redelivery_after_a_crash_between_commit_and_ack_is_skipped() {
                super::crash_between_commit_and_ack(stringify!($name), Via::$via, |n| Order { n })
                    .await;
            }
        }
    };
}

case!(rabbitmq_postgres, RabbitMq, sqlx::Postgres, "$1, $2");
case!(rabbitmq_mysql, RabbitMq, sqlx::MySql, "?, ?");
case!(rabbitmq_sqlite, RabbitMq, sqlx::Sqlite, "?, ?");
case!(kafka_postgres, Kafka, sqlx::Postgres, "$1, $2");
case!(kafka_mysql, Kafka, sqlx::MySql, "?, ?");
case!(kafka_sqlite, Kafka, sqlx::Sqlite, "?, ?");

/// The database of a case, by its name; a SQLite file is shared with the
/// children through `HEYTOM_INBOX_SQLITE`.
enum Db {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

async fn connect(case: &str) -> Option<Db> {
    if case.ends_with("postgres") {
        postgres().await.map(Db::Postgres)
    } else if case.ends_with("mysql") {
        mysql().await.map(Db::MySql)
    } else {
        let url = std::env::var("HEYTOM_INBOX_SQLITE").expect("HEYTOM_INBOX_SQLITE");
        sqlite_at(&url).await.map(Db::Sqlite)
    }
}

impl Db {
    async fn execute(&self, sql: String) {
        let sql = AssertSqlSafe(sql);
        match self {
            Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Db::MySql(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
        .expect("statement");
    }

    async fn count(&self, sql: String) -> i64 {
        let sql = AssertSqlSafe(sql);
        match self {
            Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Db::MySql(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        }
        .expect("count")
    }

    fn with_outbox_and_inbox(&self, b: heytom_mq::AppBuilder, id: &str) -> heytom_mq::AppBuilder {
        let (out, rcv) = (
            format!("inbox_crash_out_{id}"),
            format!("inbox_crash_rcv_{id}"),
        );
        match self {
            Db::Postgres(p) => b
                .outbox(Outbox::postgres(p.clone()).table_name(out))
                .inbox(Inbox::postgres(p.clone()).table_name(rcv)),
            Db::MySql(p) => b
                .outbox(Outbox::mysql(p.clone()).table_name(out))
                .inbox(Inbox::mysql(p.clone()).table_name(rcv)),
            Db::Sqlite(p) => b
                .outbox(Outbox::sqlite(p.clone()).table_name(out))
                .inbox(Inbox::sqlite(p.clone()).table_name(rcv)),
        }
    }
}

/// Reads the inbox's events: prints what the parent waits for and, in the
/// first child, kills the process right after the commit.
struct CrashLayer {
    kill: bool,
}

#[derive(Default)]
struct Fields {
    message: String,
    event_id: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "event_id" => self.event_id = format!("{value:?}"),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for CrashLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
        if event.metadata().target() != "heytom_mq::inbox" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        use std::io::Write;
        if f.message == "inbox committed" {
            println!("committed {}", f.event_id);
            let _ = std::io::stdout().flush();
            if self.kill {
                // SAFETY: getpid and kill have no preconditions.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
            }
        } else if f.message == "message already processed: skipped" {
            println!("skipped {}", f.event_id);
            let _ = std::io::stdout().flush();
        }
    }
}

/// The child's side: a consumer app; never runs alone.
#[test]
#[ignore = "the child process of the inbox crash tests; they run it"]
fn inbox_crash_child() {
    let case = std::env::var("HEYTOM_INBOX_CASE").expect("HEYTOM_INBOX_CASE");
    let kill = std::env::var("HEYTOM_INBOX_KILL").is_ok_and(|v| v == "1");
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(CrashLayer { kill }),
    )
    .expect("subscriber");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let db = connect(&case).await.expect("database");
        let id = std::env::var("HEYTOM_INBOX_ID").unwrap();
        let via = if case.starts_with("kafka") {
            Via::Kafka
        } else {
            Via::RabbitMq
        };
        let builder = builder(via).await.expect("broker");
        let _app = db
            .with_outbox_and_inbox(
                builder.discover_in(format!("{}::{case}", module_path!())),
                &id,
            )
            .start()
            .await
            .expect("child app");
        println!("ready");
        std::future::pending::<()>().await;
    });
}

/// A child consumer, stdout piped, killed on drop.
struct ChildApp {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildApp {
    fn spawn(case: &str, id: &str, biz: &str, sqlite: &str, kill: bool) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "inbox_crash_child", "--nocapture"])
            .env("HEYTOM_INBOX_CASE", case)
            .env("HEYTOM_INBOX_SQLITE", sqlite)
            .env("HEYTOM_INBOX_KILL", if kill { "1" } else { "0" })
            .env("HEYTOM_INBOX_ID", id)
            .env("HEYTOM_INBOX_BIZ", biz)
            .env("HEYTOM_INBOX_RUN", run_id())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child app");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ChildApp { child, lines }
    }

    /// Reads lines until one equals `want`; returns those before it.
    fn wait_for(&self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if l == want {
                    return got;
                }
                got.push(l);
            }
        }
        panic!("the child never printed {want:?}; it printed {got:?}");
    }
}

impl Drop for ChildApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn crash_between_commit_and_ack<E: Event>(case: &str, via: Via, make: fn(u32) -> E) {
    let id = unique();
    let sqlite = format!(
        "sqlite://{}",
        std::env::temp_dir()
            .join(format!("heytom-inbox-crash-{id}.db"))
            .display()
    );
    // The children get the SQLite file through HEYTOM_INBOX_SQLITE.
    let db = if case.ends_with("sqlite") {
        sqlite_at(&sqlite).await.map(Db::Sqlite)
    } else {
        connect(case).await
    };
    let Some(db) = db else { return };
    let Some(builder) = builder(via).await else {
        return;
    };
    let biz = format!("inbox_crash_biz_{id}");
    db.execute(format!(
        "CREATE TABLE {biz} (event_id VARCHAR(64) NOT NULL, n BIGINT NOT NULL)"
    ))
    .await;

    // The first consumer commits, then dies before the ack.
    let mut first = ChildApp::spawn(case, &id, &biz, &sqlite, true);
    first.wait_for("ready");
    let sender = builder.discover(false).start().await.expect("sending app");
    let sent = sender.producer().send(&make(7)).await.expect("sent");
    let before = first.wait_for(&format!("committed {sent}"));
    assert!(before.contains(&format!("ran {sent}")), "{before:?}");
    let status = first.child.wait().expect("the first child ends");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "killed between commit and ack"
    );
    let rows = format!("SELECT COUNT(*) FROM {biz} WHERE event_id = '{sent}'");
    assert_eq!(db.count(rows.clone()).await, 1, "the commit happened");

    // The broker delivers it again; the inbox skips it.
    let second = ChildApp::spawn(case, &id, &biz, &sqlite, false);
    let lines = second.wait_for(&format!("skipped {sent}"));
    assert!(
        !lines.contains(&format!("ran {sent}")),
        "the handler ran again: {lines:?}"
    );
    assert_eq!(db.count(rows).await, 1, "exactly one effect");
    drop(second);
    sender.shutdown().await.expect("clean shutdown");
}
