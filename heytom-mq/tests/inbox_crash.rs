//! A real crash between commit and ack: the consumer runs in a child
//! process (this test binary run again as `inbox_crash_child`), and kills
//! itself with SIGKILL from a `tracing` layer on the inbox's "inbox
//! committed" event, which the runtime emits after the commit and before
//! the ack (Kafka: before the offset is stored). No destructor, no flush,
//! no ack. The broker delivers the message again to a fresh child, whose
//! inbox finds the row and skips it: one business row, on PostgreSQL, over
//! RabbitMQ and over Kafka.

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

mod rabbitmq {
    use super::*;

    test_event!(Order, RabbitMq, { n: u32 });

    #[handler(idempotent)]
    async fn bill(
        event: Order,
        mut tx: Tx<sqlx::Postgres>,
        ctx: Context,
    ) -> Result<(), HandlerError> {
        super::write(&mut tx, &ctx, event.n).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_redelivery_after_a_crash_between_commit_and_ack_is_skipped() {
        super::crash_between_commit_and_ack::<Order>("rabbitmq", |n| Order { n }).await;
    }
}

mod kafka {
    use super::*;

    test_event!(Order, Kafka, { n: u32 });

    #[handler(idempotent)]
    async fn bill(
        event: Order,
        mut tx: Tx<sqlx::Postgres>,
        ctx: Context,
    ) -> Result<(), HandlerError> {
        super::write(&mut tx, &ctx, event.n).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_redelivery_after_a_crash_between_commit_and_ack_is_skipped() {
        super::crash_between_commit_and_ack::<Order>("kafka", |n| Order { n }).await;
    }
}

/// The handlers' business write, and a line for the parent.
async fn write(tx: &mut Tx<sqlx::Postgres>, ctx: &Context, n: u32) -> Result<(), HandlerError> {
    let table = std::env::var("HEYTOM_INBOX_BIZ")?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (event_id, n) VALUES ($1, $2)"
    )))
    .bind(ctx.event_id().to_string())
    .bind(i64::from(n))
    .execute(&mut **tx)
    .await?;
    println!("ran {}", ctx.event_id());
    Ok(())
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
    let via = std::env::var("HEYTOM_INBOX_VIA").expect("HEYTOM_INBOX_VIA");
    let kill = std::env::var("HEYTOM_INBOX_KILL").is_ok_and(|v| v == "1");
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(CrashLayer { kill }),
    )
    .expect("subscriber");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let pool = postgres().await.expect("PostgreSQL");
        let id = std::env::var("HEYTOM_INBOX_ID").unwrap();
        let builder = match via.as_str() {
            "rabbitmq" => builder(Via::RabbitMq).await,
            _ => builder(Via::Kafka).await,
        }
        .expect("broker");
        let _app = builder
            .discover_in(&format!("{}::{via}", module_path!()))
            .outbox(Outbox::postgres(pool.clone()).table_name(format!("inbox_crash_out_{id}")))
            .inbox(Inbox::postgres(pool).table_name(format!("inbox_crash_rcv_{id}")))
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
    fn spawn(via: &str, id: &str, biz: &str, kill: bool) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "inbox_crash_child", "--nocapture"])
            .env("HEYTOM_INBOX_VIA", via)
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

async fn crash_between_commit_and_ack<E: Event>(via: &str, make: fn(u32) -> E) {
    let Some(pool) = postgres().await else { return };
    let Some(builder) = builder(if via == "kafka" {
        Via::Kafka
    } else {
        Via::RabbitMq
    })
    .await
    else {
        return;
    };
    let id = unique();
    let biz = format!("inbox_crash_biz_{id}");
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {biz} (event_id VARCHAR(64) NOT NULL, n BIGINT NOT NULL)"
    )))
    .execute(&pool)
    .await
    .unwrap();

    // The first consumer commits, then dies before the ack.
    let mut first = ChildApp::spawn(via, &id, &biz, true);
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
    let rows = || async {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {biz} WHERE event_id = $1"
        )))
        .bind(sent.to_string())
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(rows().await, 1, "the commit happened");

    // The broker delivers it again; the inbox skips it.
    let second = ChildApp::spawn(via, &id, &biz, false);
    let lines = second.wait_for(&format!("skipped {sent}"));
    assert!(
        !lines.contains(&format!("ran {sent}")),
        "the handler ran again: {lines:?}"
    );
    assert_eq!(rows().await, 1, "exactly one effect");
    drop(second);
    sender.shutdown().await.expect("clean shutdown");
}
