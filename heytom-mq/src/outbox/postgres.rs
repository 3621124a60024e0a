//! PostgreSQL: unquoted identifiers (folded to lower case, as in the
//! original Heytom.MQ DDL), `$n` placeholders, `UUID` ids, claims with
//! `FOR UPDATE SKIP LOCKED`, scanners woken by `LISTEN/NOTIFY`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::admin::AdminSql;
use super::repository::{sql_backend, ClaimStyle, DbKind, Dialect, Placeholder};

pub(crate) const DIALECT: Dialect = Dialect {
    kind: DbKind::Postgres,
    dir: "postgres",
    open_quote: "",
    close_quote: "",
    placeholder: Placeholder::Dollar,
    id_param_cast: "::uuid",
    id_array_cast: Some("::uuid[]"),
    id_select_cast: "::text",
    time_select_cast: "::timestamptz",
    claim: ClaimStyle::UpdateReturning {
        lock: " FOR UPDATE SKIP LOCKED",
    },
    claim_from_last: true,
    delete_with_limit: false,
    create_sql: include_str!("../../migrations/postgres/001_create_local_messages.sql"),
    upgrade_sql: include_str!("../../migrations/postgres/002_add_relay_columns.sql"),
    created_sql: Some(include_str!("../../migrations/postgres/004_fillfactor.sql")),
    columns_sql: "SELECT column_name::text FROM information_schema.columns \
                  WHERE table_schema = current_schema() AND table_name = lower($1)",
    indexes_sql: None,
    quoted_table_sql: Some(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = $1",
    ),
    notify: Some("SELECT pg_notify($1, '')"),
    now_ms: "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
};

/// The admin queries' PostgreSQL parts.
pub(crate) const ADMIN: AdminSql = AdminSql {
    bucket: "((FLOOR(EXTRACT(EPOCH FROM {col}::timestamptz))::BIGINT - {since}) / {secs})::INT",
};

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
