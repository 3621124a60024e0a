//! heytom-mq in one file, on the embedded default: the in-memory broker and
//! a local message table (transactional outbox) in a SQLite file.
//!
//! Run it with `cargo run --example quickstart`. It publishes a few events,
//! its handlers print what they get, one handler fails once and succeeds on
//! the retry, one poison event ends in the dead-letter destination, one order
//! is written together with its event in one SQLite transaction (and one
//! rolled-back order sends nothing), and it prints a summary before shutting
//! down by itself.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[kafka(topic = "user-events", partition_key = user_id)]
pub struct UserCreated {
    pub user_id: i32,
    pub name: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[rabbitmq(
    routing_key = "order.placed",
    exchange = "order.exchange",
    exchange_type = "topic"
)]
pub struct OrderPlaced {
    pub order_id: String,
    pub amount: f64,
}

/// Counts what happened, shared with the handlers as `State<Stats>`.
#[derive(Clone, Default)]
pub struct Stats {
    welcomed: Arc<AtomicU32>,
    audited: Arc<AtomicU32>,
    billed: Arc<AtomicU32>,
    billing_attempts: Arc<AtomicU32>,
}

#[handler]
async fn send_welcome_mail(event: UserCreated, ctx: Context, State(stats): State<Stats>) {
    println!(
        "[welcome] hello {} (user {}, event {})",
        event.name,
        event.user_id,
        ctx.event_id()
    );
    stats.welcomed.fetch_add(1, Ordering::SeqCst);
}

#[handler(name = "audit")]
async fn audit_user(event: UserCreated, State(stats): State<Stats>) -> bool {
    println!("[audit] user {} created", event.user_id);
    stats.audited.fetch_add(1, Ordering::SeqCst);
    true
}

#[handler]
async fn bill(
    event: OrderPlaced,
    ctx: Context,
    State(stats): State<Stats>,
) -> Result<(), HandlerError> {
    stats.billing_attempts.fetch_add(1, Ordering::SeqCst);
    if event.amount < 0.0 {
        println!(
            "[billing] order {} has a negative amount: refusing (attempt {})",
            event.order_id,
            ctx.attempt()
        );
        return Err(format!("negative amount {}", event.amount).into());
    }
    if event.order_id == "A-2" && ctx.attempt() == 1 {
        println!(
            "[billing] order {}: payment service timed out, will retry",
            event.order_id
        );
        return Err("payment service timeout".into());
    }
    println!(
        "[billing] billed order {} for {:.2} (attempt {})",
        event.order_id,
        event.amount,
        ctx.attempt()
    );
    stats.billed.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run().await
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .init();

    // The business database, which also holds the local message table.
    let db_file = std::env::temp_dir().join(format!("heytom-quickstart-{}.db", std::process::id()));
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&db_file)
                .create_if_missing(true),
        )
        .await?;
    sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY, amount REAL NOT NULL)")
        .execute(&pool)
        .await?;
    let outbox = Outbox::sqlite(pool.clone());

    let stats = Stats::default();
    let app = App::builder()
        .in_memory()
        .outbox(outbox.clone())
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(3)
                .initial_backoff(Duration::from_millis(50)),
        )
        .state(stats.clone())
        .start()
        .await?;
    let producer = app.producer();

    producer
        .send_batch(&[
            UserCreated {
                user_id: 1,
                name: "Ada".into(),
            },
            UserCreated {
                user_id: 2,
                name: "Grace".into(),
            },
        ])
        .await?;
    producer
        .send(&OrderPlaced {
            order_id: "A-1".into(),
            amount: 19.99,
        })
        .await?;
    producer
        .send(&OrderPlaced {
            order_id: "A-2".into(),
            amount: 5.00,
        })
        .await?;
    // A poison event: billing refuses it on every attempt.
    producer
        .send(&OrderPlaced {
            order_id: "A-3".into(),
            amount: -1.00,
        })
        .await?;

    // The order row and its event commit together; the event is sent right after.
    producer
        .send_with_transaction(&pool, |tx| {
            Box::pin(async move {
                sqlx::query("INSERT INTO orders (id, amount) VALUES (?, ?)")
                    .bind("A-4")
                    .bind(42.0)
                    .execute(&mut **tx)
                    .await?;
                Ok(OrderPlaced {
                    order_id: "A-4".into(),
                    amount: 42.0,
                })
            })
        })
        .await?;
    // This one fails inside the transaction: no order row, no event.
    let refused = producer
        .send_with_transaction(&pool, |tx| {
            Box::pin(async move {
                sqlx::query("INSERT INTO orders (id, amount) VALUES (?, ?)")
                    .bind("A-5")
                    .bind(7.0)
                    .execute(&mut **tx)
                    .await?;
                Err::<OrderPlaced, _>("out of stock".into())
            })
        })
        .await;
    if let Err(e) = refused {
        println!("[shop] order A-5 not placed: {e}");
    }

    let broker = app.in_memory_broker().cloned().expect("in-memory app");
    let dead = tokio::time::timeout(Duration::from_secs(10), broker.wait_for_dead_letters(1))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the poison event never reached the dead-letter destination")
        })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.billed.load(Ordering::SeqCst) < 3
        || stats.audited.load(Ordering::SeqCst) < 2
        || stats.welcomed.load(Ordering::SeqCst) < 2
        || outbox.status_counts().await?.sent < 1
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "handlers did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.shutdown().await?;
    let rows = outbox.status_counts().await?;
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_file.display()));
    }

    println!();
    println!("summary");
    println!(
        "  welcome mails sent     {}",
        stats.welcomed.load(Ordering::SeqCst)
    );
    println!(
        "  users audited          {}",
        stats.audited.load(Ordering::SeqCst)
    );
    println!(
        "  orders billed          {}",
        stats.billed.load(Ordering::SeqCst)
    );
    println!(
        "  billing attempts       {}",
        stats.billing_attempts.load(Ordering::SeqCst)
    );
    println!("  orders in SQLite       {orders}");
    println!(
        "  outbox rows            {} sent, {} pending, {} failed",
        rows.sent, rows.pending, rows.failed
    );
    for d in &dead {
        println!(
            "  dead-lettered          {} after {} attempts: {}",
            String::from_utf8_lossy(&d.body),
            d.dead_letter.attempts,
            d.dead_letter.reason
        );
    }
    Ok(())
}

// `cargo test -p heytom-mq-examples --example quickstart`: the handlers
// above under heytom_mq::testing::TestApp, on tokio's paused clock.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use heytom_mq::testing::TestApp;

    use super::*;

    async fn app(stats: &Stats) -> TestApp {
        // Every #[handler] of this example.
        TestApp::builder()
            .state(stats.clone())
            .retry_policy(RetryPolicy::default().max_attempts(3))
            .start()
            .await
            .expect("the quickstart's handlers start")
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_is_welcomed_and_audited() {
        let stats = Stats::default();
        let app = app(&stats).await;
        app.publish(&UserCreated {
            user_id: 1,
            name: "Ada".into(),
        })
        .await
        .expect("published");
        let handled = app
            .wait_handled::<UserCreated>(1, Duration::from_secs(60))
            .await
            .expect("both handlers done");
        assert!(handled[0].succeeded());
        assert_eq!(stats.welcomed.load(Ordering::SeqCst), 1);
        assert_eq!(stats.audited.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn billing_retries_a_timeout_and_dead_letters_a_negative_amount() {
        let stats = Stats::default();
        let app = app(&stats).await;
        for (order_id, amount) in [("A-2", 5.0), ("A-3", -1.0)] {
            app.publish(&OrderPlaced {
                order_id: order_id.into(),
                amount,
            })
            .await
            .expect("published");
        }
        let handled = app
            .wait_handled::<OrderPlaced>(2, Duration::from_secs(60))
            .await
            .expect("both done");
        assert_eq!(handled.iter().filter(|h| h.succeeded()).count(), 1);
        // A-2 failed once and was billed on its retry.
        assert_eq!(stats.billed.load(Ordering::SeqCst), 1);
        // three attempts, then the dead-letter list.
        assert_eq!(stats.billing_attempts.load(Ordering::SeqCst), 2 + 3);
        let dead = app.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].dead_letter.attempts, 3);
        assert!(dead[0].dead_letter.reason.contains("negative amount"));
    }
}
