//! The relay's statements on a real PostgreSQL (`HEYTOM_TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`): planned as the
//! server plans them on first use (a custom plan, the arguments known),
//! none of them reads the whole table. A table keeps every Sent row for
//! its retention (by default forever), so a statement that scans it costs
//! more with every row ever sent.

use std::str::FromStr;

use chrono::Utc;
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use super::dialect::Built;
use super::postgres::PgBackend;
use super::repository::Backend;
use super::statements::Table;
use super::{MessageStatus, Outbox};

/// Rows in the table: enough that a scan of all of them looks cheaper to
/// the planner than 1000 primary-key lookups (default `random_page_cost`).
const ROWS: i64 = 20_000;
/// Ids per statement, as in a full batch.
const IDS: i64 = 1000;

async fn pool() -> Option<PgPool> {
    let url = std::env::var("HEYTOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let connected = match PgConnectOptions::from_str(&url) {
        Ok(opts) => {
            PgPoolOptions::new()
                .max_connections(2)
                .connect_with(opts)
                .await
        }
        Err(e) => Err(e),
    };
    match connected {
        Ok(pool) => Some(pool),
        Err(e) if std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("PostgreSQL unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {e}")
        }
        Err(e) => {
            eprintln!("NOTICE: PostgreSQL unreachable ({e}); skipping this test");
            None
        }
    }
}

/// The plan of `stmt` as text (`EXPLAIN`, not run), its arguments bound
/// as the relay binds them.
async fn plan(pool: &PgPool, stmt: Built) -> String {
    let explain = Built {
        sql: format!("EXPLAIN {}", stmt.sql),
        args: stmt.args,
    };
    PgBackend { pool: pool.clone() }
        .fetch_names(explain)
        .await
        .expect("EXPLAIN")
        .join("\n")
}

#[tokio::test]
async fn no_statement_of_the_relay_scans_the_whole_table() {
    let Some(pool) = pool().await else { return };
    let name = format!("plan_{}", Uuid::now_v7().simple());
    Outbox::postgres(pool.clone())
        .table_name(&name)
        .ensure_table()
        .await
        .expect("create table");
    let run = async {
        // Mostly Sent rows, as a table that keeps them looks; the newest
        // are Pending.
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {name} (Id, MQType, Topic, MessageType, MessageBody, Status, CreatedAt) \
             SELECT gen_random_uuid(), 'memory', 'orders', 'OrderPlaced', '{{\"n\":' || i || '}}', \
                    CASE WHEN i > {ROWS} - 2 * {IDS} THEN 0 ELSE 1 END, \
                    now() - interval '1 hour' + i * interval '1 millisecond' \
             FROM generate_series(1, {ROWS}) i"
        )))
        .execute(&pool)
        .await
        .expect("insert rows");
        sqlx::query(AssertSqlSafe(format!("ANALYZE {name}")))
            .execute(&pool)
            .await
            .expect("analyze");
        let ids: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT Id FROM {name} WHERE Status = 0 ORDER BY CreatedAt LIMIT {IDS}"
        )))
        .fetch_all(&pool)
        .await
        .expect("ids");
        assert_eq!(ids.len() as i64, IDS);

        let t = Table::new(&super::postgres::DIALECT, &name);
        let now = Utc::now();
        let claim = |after| {
            let lock = " FOR UPDATE SKIP LOCKED";
            t.claim_update_returning(MessageStatus::Pending, 60_000, "tok", 10, IDS, lock, after)
        };
        let statements = [
            ("claim", claim(None)),
            (
                "claim from the last",
                claim(Some(now - chrono::TimeDelta::minutes(5))),
            ),
            ("mark sent", t.mark_sent(&ids, "tok", now)),
            ("delete sent", t.delete_sent(&ids, "tok")),
            ("mark failed", t.mark_failed(&ids, "tok", "boom", now, 1000)),
            ("release", t.release(&ids, "tok", "down", now, 1000)),
            ("renew", t.renew(&ids, "tok", 60_000)),
            ("take over", t.take_over(&ids, "from", "tok", 60_000)),
            ("held", t.held(&ids, "tok")),
            (
                "lease due",
                t.lease_due(&ids, MessageStatus::Pending, 10, 60_000, "tok"),
            ),
        ];
        let mut scans = Vec::new();
        for (what, stmt) in statements {
            let plan = plan(&pool, stmt).await;
            if plan.contains(&format!("Seq Scan on {name}")) {
                scans.push(format!("{what}:\n{plan}"));
            }
        }
        assert!(
            scans.is_empty(),
            "statements that read the whole table:\n{}",
            scans.join("\n")
        );
    };
    let outcome = std::panic::AssertUnwindSafe(run).catch_unwind().await;
    let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {name}")))
        .execute(&pool)
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
