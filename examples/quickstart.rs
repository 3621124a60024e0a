//! heytom-mq in one file, on the embedded default (in-memory broker).
//!
//! Run it with `cargo run --example quickstart`. It publishes a few events,
//! its handlers print what they get, one handler fails once and succeeds on
//! the retry, one poison event ends in the dead-letter destination, and it
//! prints a summary before shutting down by itself.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

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
async fn main() -> Result<(), heytom_mq::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .init();

    let stats = Stats::default();
    let app = App::builder()
        .in_memory()
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

    let broker = app.in_memory_broker().cloned().expect("in-memory app");
    let dead = tokio::time::timeout(Duration::from_secs(10), broker.wait_for_dead_letters(1))
        .await
        .map_err(|_| {
            heytom_mq::Error::config("the poison event never reached the dead-letter destination")
        })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.billed.load(Ordering::SeqCst) < 2
        || stats.audited.load(Ordering::SeqCst) < 2
        || stats.welcomed.load(Ordering::SeqCst) < 2
    {
        if tokio::time::Instant::now() > deadline {
            return Err(heytom_mq::Error::config("handlers did not finish in time"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.shutdown().await?;

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
