//! The service's tables and what the HTTP endpoints read and write, on
//! PostgreSQL or SQLite.
//!
//! The SQL is the same on both (`$1` parameters, `ON CONFLICT`, timestamps
//! as RFC 3339 text); `store_on!` writes the functions once per database,
//! typed on its pool, because the outbox and the handlers' transactions are
//! typed on it. [`Db`] picks the one the service runs on.
//!
//! Each endpoint that changes an order writes its events in the same
//! transaction (`producer.begin(pool)` ... `tx.publish(..)` ... `commit`):
//! a rolled-back change sends nothing, a committed one is sent even if the
//! process dies right after the commit.

use heytom_mq::sqlx::{PgPool, SqlitePool};
use heytom_mq::{Inbox, Outbox};
use serde::Serialize;

/// The business tables. The outbox (`LocalMessages`) and the inbox
/// (`ReceivedMessages`) create their own.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id             TEXT PRIMARY KEY,
    customer       TEXT NOT NULL,
    amount_cents   BIGINT NOT NULL,
    status         TEXT NOT NULL,            -- created | invoiced | cancelled
    reminders_sent BIGINT NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS invoices (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL UNIQUE,
    amount_cents BIGINT NOT NULL,
    status       TEXT NOT NULL               -- open | void
);
CREATE TABLE IF NOT EXISTS customer_stats (
    customer        TEXT PRIMARY KEY,
    orders_invoiced BIGINT NOT NULL,
    revenue_cents   BIGINT NOT NULL
);
";

/// An order as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderView {
    pub id: String,
    pub customer: String,
    pub amount_cents: i64,
    /// `created`, then `invoiced` (billing), or `cancelled`.
    pub status: String,
    /// Billing's invoice, once it made one.
    pub invoice: Option<InvoiceView>,
    /// Payment reminders sent while the order was open.
    pub reminders_sent: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// An order's invoice.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InvoiceView {
    pub id: String,
    /// `open`, or `void` once the order was cancelled.
    pub status: String,
}

/// What analytics counted for one customer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CustomerStats {
    pub customer: String,
    pub orders_invoiced: i64,
    pub revenue_cents: i64,
}

/// What cancelling an order did.
#[derive(Debug)]
pub enum Cancelled {
    /// It was open and is cancelled now.
    Now(OrderView),
    /// It was cancelled before.
    Already,
    /// No such order.
    NotFound,
}

/// The current time as the tables keep it.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

type OrderRow = (
    String,
    String,
    i64,
    String,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
);

const SELECT_ORDER: &str = "
SELECT o.id, o.customer, o.amount_cents, o.status, o.reminders_sent, o.created_at, o.updated_at,
       i.id, i.status
FROM orders o LEFT JOIN invoices i ON i.order_id = o.id
WHERE o.id = $1";

fn order_view(row: OrderRow) -> OrderView {
    let (
        id,
        customer,
        amount_cents,
        status,
        reminders_sent,
        created_at,
        updated_at,
        inv_id,
        inv_status,
    ) = row;
    OrderView {
        id,
        customer,
        amount_cents,
        status,
        invoice: inv_id.map(|id| InvoiceView {
            id,
            status: inv_status.unwrap_or_default(),
        }),
        reminders_sent,
        created_at,
        updated_at,
    }
}

/// The store's functions on one database (`$db`), in a module of their own.
macro_rules! store_on {
    ($db:ty) => {
        use std::time::Duration;

        use heytom_mq::sqlx::{self, Pool};
        use heytom_mq::{Error, Producer};

        use super::{order_view, Cancelled, CustomerStats, OrderRow, OrderView, SELECT_ORDER};
        use crate::events::{OrderCancelled, OrderCreated, PaymentReminder};

        /// Creates the business tables if they are missing.
        pub async fn create_schema(pool: &Pool<$db>) -> Result<(), sqlx::Error> {
            sqlx::raw_sql(super::SCHEMA).execute(pool).await?;
            Ok(())
        }

        /// Writes the order, its `OrderCreated` and its `PaymentReminder`
        /// (due `reminder_after` from now) in one transaction: all or
        /// nothing. `OrderCreated` is sent right after the commit; the
        /// reminder stays in the outbox table until it is due, and is sent
        /// then, across restarts.
        pub async fn create_order(
            pool: &Pool<$db>,
            producer: &Producer,
            customer: String,
            amount_cents: i64,
            reminder_after: Duration,
        ) -> Result<OrderView, Error> {
            let id = uuid::Uuid::now_v7().to_string();
            let at = super::now();
            let mut tx = producer.begin(pool).await?;
            sqlx::query(
                "INSERT INTO orders (id, customer, amount_cents, status, created_at, updated_at)
                 VALUES ($1, $2, $3, 'created', $4, $4)",
            )
            .bind(&id)
            .bind(&customer)
            .bind(amount_cents)
            .bind(&at)
            .execute(&mut **tx)
            .await
            .map_err(|e| Error::storage("writing the order", e))?;
            tx.publish(&OrderCreated {
                order_id: id.clone(),
                customer: customer.clone(),
                amount_cents,
            })
            .await?;
            tx.publish_after(&PaymentReminder { order_id: id.clone() }, reminder_after)
                .await?;
            tx.commit().await?;
            Ok(OrderView {
                id,
                customer,
                amount_cents,
                status: "created".into(),
                invoice: None,
                reminders_sent: 0,
                created_at: at.clone(),
                updated_at: at,
            })
        }

        /// One order, with its invoice.
        pub async fn order(pool: &Pool<$db>, id: &str) -> Result<Option<OrderView>, sqlx::Error> {
            let row: Option<OrderRow> = sqlx::query_as(SELECT_ORDER)
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(order_view))
        }

        /// Cancels an open order and publishes `OrderCancelled`, in one
        /// transaction.
        pub async fn cancel_order(
            pool: &Pool<$db>,
            producer: &Producer,
            id: &str,
        ) -> Result<Cancelled, Error> {
            let mut tx = producer.begin(pool).await?;
            let changed = sqlx::query(
                "UPDATE orders SET status = 'cancelled', updated_at = $2
                 WHERE id = $1 AND status <> 'cancelled'",
            )
            .bind(id)
            .bind(super::now())
            .execute(&mut **tx)
            .await
            .map_err(|e| Error::storage("cancelling the order", e))?
            .rows_affected();
            if changed == 0 {
                let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM orders WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(|e| Error::storage("reading the order", e))?;
                tx.rollback().await?;
                return Ok(if exists.is_some() {
                    Cancelled::Already
                } else {
                    Cancelled::NotFound
                });
            }
            tx.publish(&OrderCancelled {
                order_id: id.to_owned(),
            })
            .await?;
            tx.commit().await?;
            match order(pool, id).await {
                Ok(Some(view)) => Ok(Cancelled::Now(view)),
                Ok(None) => Ok(Cancelled::NotFound),
                Err(e) => Err(Error::storage("reading the order", e)),
            }
        }

        /// What analytics counted for a customer.
        pub async fn customer_stats(
            pool: &Pool<$db>,
            customer: &str,
        ) -> Result<Option<CustomerStats>, sqlx::Error> {
            let row: Option<(String, i64, i64)> = sqlx::query_as(
                "SELECT customer, orders_invoiced, revenue_cents FROM customer_stats WHERE customer = $1",
            )
            .bind(customer)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|(customer, orders_invoiced, revenue_cents)| CustomerStats {
                customer,
                orders_invoiced,
                revenue_cents,
            }))
        }
    };
}

/// The store on PostgreSQL.
pub mod postgres {
    store_on!(heytom_mq::sqlx::Postgres);
}

/// The store on SQLite.
pub mod sqlite {
    store_on!(heytom_mq::sqlx::Sqlite);
}

/// The database the service runs on.
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Calls the same store function on whichever database it is.
macro_rules! on_db {
    ($db:expr, $pool:ident => $f:ident ( $($arg:expr),* )) => {
        match $db {
            Db::Postgres($pool) => postgres::$f($($arg),*).await,
            Db::Sqlite($pool) => sqlite::$f($($arg),*).await,
        }
    };
}

impl Db {
    /// Connects to `url` (`postgres://...` or `sqlite:...`).
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        use heytom_mq::sqlx::postgres::PgPoolOptions;
        use heytom_mq::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
        use std::str::FromStr;

        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .connect(url)
                .await?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(heytom_mq::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            anyhow::bail!(
                "HEYTOM_DATABASE_URL must start with postgres:// or sqlite:, found {:?}",
                url.split(':').next().unwrap_or_default()
            )
        }
    }

    /// Creates the business tables if they are missing.
    pub async fn create_schema(&self) -> anyhow::Result<()> {
        Ok(on_db!(self, p => create_schema(p))?)
    }

    /// The outbox on this database.
    pub fn outbox(&self) -> Outbox {
        match self {
            Db::Postgres(p) => Outbox::postgres(p.clone()),
            Db::Sqlite(p) => Outbox::sqlite(p.clone()),
        }
    }

    /// The inbox on this database, on the same pool as the outbox (so the
    /// handlers' follow-ups are written in their transactions).
    pub fn inbox(&self) -> Inbox {
        match self {
            Db::Postgres(p) => Inbox::postgres(p.clone()),
            Db::Sqlite(p) => Inbox::sqlite(p.clone()),
        }
    }

    /// See [`postgres::create_order`].
    pub async fn create_order(
        &self,
        producer: &heytom_mq::Producer,
        customer: String,
        amount_cents: i64,
        reminder_after: std::time::Duration,
    ) -> Result<OrderView, heytom_mq::Error> {
        on_db!(self, p => create_order(p, producer, customer, amount_cents, reminder_after))
    }

    /// See [`postgres::order`].
    pub async fn order(&self, id: &str) -> Result<Option<OrderView>, heytom_mq::sqlx::Error> {
        on_db!(self, p => order(p, id))
    }

    /// See [`postgres::cancel_order`].
    pub async fn cancel_order(
        &self,
        producer: &heytom_mq::Producer,
        id: &str,
    ) -> Result<Cancelled, heytom_mq::Error> {
        on_db!(self, p => cancel_order(p, producer, id))
    }

    /// See [`postgres::customer_stats`].
    pub async fn customer_stats(
        &self,
        customer: &str,
    ) -> Result<Option<CustomerStats>, heytom_mq::sqlx::Error> {
        on_db!(self, p => customer_stats(p, customer))
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Db::Postgres(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    }
}
