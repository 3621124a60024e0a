//! The service's event handlers: billing (RabbitMQ), analytics (Kafka) and
//! the payment reminder.
//!
//! Every handler takes `Tx<DB>`: the inbox's transaction, opened by the
//! runtime with the inbox row (message id, handler) already written. Its
//! business writes, that row and the follow-ups it publishes with
//! `ctx.publish()` (written into the outbox) commit together when it
//! succeeds, and roll back together when it fails; a redelivery of a
//! message it already processed is acknowledged without running it. So each
//! message changes the database once, whatever the broker redelivers.
//!
//! `handlers_on!` writes them once per database (their SQL is the same), in
//! the modules [`postgres`] and [`sqlite`]; the app discovers the module of
//! the database it runs on (see [`module_for`]).

use crate::store::Db;

/// The module path whose `#[handler]`s the app on `db` runs.
pub fn module_for(db: &Db) -> &'static str {
    match db {
        Db::Postgres(_) => concat!(module_path!(), "::postgres"),
        Db::Sqlite(_) => concat!(module_path!(), "::sqlite"),
    }
}

macro_rules! handlers_on {
    ($db:ty) => {
        use heytom_mq::prelude::*;
        use heytom_mq::sqlx;

        use crate::events::{OrderCancelled, OrderCreated, OrderInvoiced, PaymentReminder};
        use crate::store::now;

        /// Billing: invoices a new order, unless it was cancelled first,
        /// and tells analytics.
        #[handler(name = "billing.invoice", idempotent)]
        pub async fn invoice(
            event: OrderCreated,
            mut tx: Tx<$db>,
            ctx: Context,
        ) -> Result<(), HandlerError> {
            let changed = sqlx::query(
                "UPDATE orders SET status = 'invoiced', updated_at = $2 WHERE id = $1 AND status = 'created'",
            )
            .bind(&event.order_id)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                tracing::info!(order_id = %event.order_id, "not invoiced: the order is cancelled or unknown");
                return Ok(());
            }
            let invoice_id = uuid::Uuid::now_v7().to_string();
            sqlx::query(
                "INSERT INTO invoices (id, order_id, amount_cents, status) VALUES ($1, $2, $3, 'open')",
            )
            .bind(&invoice_id)
            .bind(&event.order_id)
            .bind(event.amount_cents)
            .execute(&mut *tx)
            .await?;
            // Into the outbox, in this transaction: sent once it commits.
            ctx.publish(&OrderInvoiced {
                order_id: event.order_id,
                invoice_id,
                customer: event.customer,
                amount_cents: event.amount_cents,
            })
            .await?;
            Ok(())
        }

        /// Billing: voids the invoice of a cancelled order.
        #[handler(name = "billing.void-invoice", idempotent)]
        pub async fn void_invoice(event: OrderCancelled, mut tx: Tx<$db>) -> Result<(), HandlerError> {
            sqlx::query("UPDATE invoices SET status = 'void' WHERE order_id = $1")
                .bind(&event.order_id)
                .execute(&mut *tx)
                .await?;
            Ok(())
        }

        /// Analytics: counts invoiced orders and revenue per customer.
        /// Without the inbox a redelivery would count the order twice.
        #[handler(name = "analytics.record-invoice", idempotent)]
        pub async fn record_invoice(event: OrderInvoiced, mut tx: Tx<$db>) -> Result<(), HandlerError> {
            sqlx::query(
                "INSERT INTO customer_stats (customer, orders_invoiced, revenue_cents) VALUES ($1, 1, $2)
                 ON CONFLICT (customer) DO UPDATE SET
                     orders_invoiced = customer_stats.orders_invoiced + 1,
                     revenue_cents = customer_stats.revenue_cents + excluded.revenue_cents",
            )
            .bind(&event.customer)
            .bind(event.amount_cents)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }

        /// Billing: reminds the customer of an order still open (not
        /// cancelled) when its reminder is due; here it counts the reminder,
        /// a real service would send a mail from the outbox.
        #[handler(name = "billing.payment-reminder", idempotent)]
        pub async fn remind(event: PaymentReminder, mut tx: Tx<$db>) -> Result<(), HandlerError> {
            let changed = sqlx::query(
                "UPDATE orders SET reminders_sent = reminders_sent + 1, updated_at = $2
                 WHERE id = $1 AND status <> 'cancelled'",
            )
            .bind(&event.order_id)
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 1 {
                tracing::info!(order_id = %event.order_id, "payment reminder sent");
            }
            Ok(())
        }
    };
}

/// The handlers on PostgreSQL.
pub mod postgres {
    handlers_on!(heytom_mq::sqlx::Postgres);
}

/// The handlers on SQLite.
pub mod sqlite {
    handlers_on!(heytom_mq::sqlx::Sqlite);
}
