//! The outbox through `heytom_mq::sqlx` only: this crate does not depend on
//! sqlx, so every sqlx name here comes from the re-export.

use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::sqlx::{self, SqlitePool};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct NoteWritten {
    x: i64,
}

/// Where the handler reports what it received.
#[derive(Clone)]
struct Received(mpsc::UnboundedSender<(EventId, NoteWritten)>);

#[handler]
async fn on_note_written(
    event: NoteWritten,
    ctx: Context,
    State(received): State<Received>,
) -> bool {
    received.0.send((ctx.event_id(), event)).is_ok()
}

#[tokio::test]
async fn the_outbox_works_with_the_reexported_sqlx_alone() -> anyhow::Result<()> {
    let pool = SqlitePool::connect("sqlite::memory:").await?;
    let outbox = Outbox::sqlite(pool.clone());
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let app = App::builder()
        .in_memory()
        .outbox(outbox.clone())
        .discover_in(module_path!())
        .state(Received(sender))
        .start()
        .await?;
    let producer = app.producer();

    let id = producer
        .send_with_transaction(&pool, |tx| {
            Box::pin(async move {
                sqlx::query("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("INSERT INTO t (x) VALUES (?)")
                    .bind(42_i64)
                    .execute(&mut **tx)
                    .await?;
                Ok(NoteWritten { x: 42 })
            })
        })
        .await?;

    // The handler received the event, with the id the outbox gave it.
    let delivered = tokio::time::timeout(Duration::from_secs(20), receiver.recv())
        .await
        .map_err(|_| anyhow::anyhow!("the handler received nothing within 20 s"))?;
    assert_eq!(delivered, Some((id, NoteWritten { x: 42 })));

    // The business row committed with it.
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(&pool)
        .await?;
    assert_eq!(rows, 1);

    // And the relay marks the outbox row Sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let counts = outbox.status_counts().await?;
        if counts.sent == 1 {
            assert_eq!((counts.pending, counts.failed), (0, 0), "{counts:?}");
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the outbox row was not marked Sent: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    app.shutdown().await?;
    pool.close().await;
    Ok(())
}
