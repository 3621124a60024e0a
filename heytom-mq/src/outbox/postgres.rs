//! PostgreSQL: quoted identifiers, `$n` placeholders, `UUID` ids, claims with
//! `FOR UPDATE SKIP LOCKED`, scanners woken by `LISTEN/NOTIFY`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::repository::{sql_backend, ClaimStyle, DbKind, Dialect, Placeholder};

pub(crate) const DIALECT: Dialect = Dialect {
    kind: DbKind::Postgres,
    open_quote: '"',
    close_quote: '"',
    placeholder: Placeholder::Dollar,
    id_param_cast: "::uuid",
    id_select_cast: "::text",
    claim: ClaimStyle::UpdateReturning {
        lock: " FOR UPDATE SKIP LOCKED",
    },
    before_claim: None,
    delete_with_limit: false,
    ddl,
    notify: Some("SELECT pg_notify($1, '')"),
};

fn ddl(t: &str) -> Vec<String> {
    vec![
        format!(
            r#"CREATE TABLE IF NOT EXISTS "{t}" (
    "Id" UUID NOT NULL PRIMARY KEY,
    "MQType" VARCHAR(50) NOT NULL,
    "Topic" VARCHAR(255) NOT NULL,
    "RoutingKey" VARCHAR(255) NULL,
    "MessageType" VARCHAR(255) NOT NULL,
    "MessageBody" TEXT NOT NULL,
    "Status" INT NOT NULL DEFAULT 0,
    "CreatedAt" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "UpdatedAt" TIMESTAMPTZ NULL,
    "RetryCount" INT NOT NULL DEFAULT 0,
    "ErrorMessage" TEXT NULL,
    "Headers" TEXT NULL,
    "PartitionKey" VARCHAR(255) NULL,
    "NextAttemptAt" BIGINT NOT NULL DEFAULT 0,
    "LockedBy" VARCHAR(64) NULL
)"#
        ),
        format!(r#"CREATE INDEX IF NOT EXISTS "IX_{t}_Status" ON "{t}" ("Status")"#),
        format!(r#"CREATE INDEX IF NOT EXISTS "IX_{t}_CreatedAt" ON "{t}" ("CreatedAt")"#),
        format!(r#"CREATE INDEX IF NOT EXISTS "IX_{t}_Due" ON "{t}" ("Status", "CreatedAt")"#),
    ]
}

fn listen(
    pool: &PgPool,
    channel: String,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let pool = pool.clone();
    Some(tokio::spawn(async move {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "outbox LISTEN connection failed; scanning on the interval");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            if let Err(e) = listener.listen(&channel).await {
                tracing::debug!(error = %e, "outbox LISTEN failed; scanning on the interval");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = stop.changed() => return,
                }
            }
            loop {
                tokio::select! {
                    n = listener.recv() => match n {
                        Ok(_) => wake.notify_one(),
                        Err(e) => {
                            tracing::debug!(error = %e, "outbox LISTEN connection lost");
                            break;
                        }
                    },
                    _ = stop.changed() => return,
                }
            }
        }
    }))
}

sql_backend!(PgBackend, Postgres, DIALECT, listen);
