//! [`Tx<DB>`]: the handler argument that is the inbox's transaction.

use std::sync::Arc;

use sqlx::Transaction;

use crate::handler::{
    readable_type_name, Context, ExtractError, FromContext, StateMap, TransactionRequirement,
    TxScope,
};
use crate::outbox::OutboxDatabase;

/// The transaction a handler runs in: opened by the runtime on the
/// inbox's pool, with the inbox row already written; committed by the
/// runtime (with the follow-ups `ctx.publish()` staged, written into the
/// outbox) when the handler succeeds, rolled back when it fails or panics.
///
/// It derefs to the connection, so `&mut *tx` is an executor; take the
/// argument as `mut tx`. Do not commit it yourself, and do not keep it
/// beyond the handler's return (a handler that succeeds without giving it
/// back fails).
///
/// `DB` is `sqlx::Postgres`, `sqlx::MySql` or `sqlx::Sqlite`, the database
/// of the app's [`Inbox`](crate::Inbox); `AppBuilder::build` refuses
/// another, and an app without an inbox.
///
/// ```no_run
/// # use heytom_mq::prelude::*;
/// # use heytom_mq::Tx;
/// # #[derive(Event, serde::Serialize, serde::Deserialize)] struct OrderPlaced { order_id: String }
/// # #[derive(Event, serde::Serialize, serde::Deserialize)] struct OrderBilled { order_id: String }
/// #[handler]
/// async fn bill(event: OrderPlaced, mut tx: Tx<sqlx::Postgres>, ctx: Context) -> Result<(), HandlerError> {
///     sqlx::query("INSERT INTO invoices (order_id) VALUES ($1)")
///         .bind(&event.order_id)
///         .execute(&mut *tx)
///         .await?;
///     // written into the outbox in this transaction, sent after the commit
///     ctx.publish(&OrderBilled { order_id: event.order_id }).await?;
///     Ok(())
/// }
/// ```
pub struct Tx<DB: OutboxDatabase> {
    /// `Some` until dropped, when it goes back to the scope.
    tx: Option<Transaction<'static, DB>>,
    scope: Arc<TxScope>,
}

impl<DB: OutboxDatabase> Tx<DB> {
    /// The sqlx transaction itself (for a savepoint: `tx.transaction().begin()`).
    pub fn transaction(&mut self) -> &mut Transaction<'static, DB> {
        match self.tx.as_mut() {
            Some(t) => t,
            // Only `Drop` takes it out.
            None => unreachable!("Tx used after drop"),
        }
    }
}

impl<DB: OutboxDatabase> std::fmt::Debug for Tx<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("database", &DB::KIND.as_str())
            .finish()
    }
}

impl<DB: OutboxDatabase> std::ops::Deref for Tx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &Self::Target {
        match self.tx.as_ref() {
            Some(t) => t,
            None => unreachable!("Tx used after drop"),
        }
    }
}

impl<DB: OutboxDatabase> std::ops::DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.transaction()
    }
}

impl<DB: OutboxDatabase> Drop for Tx<DB> {
    fn drop(&mut self) {
        // The runtime commits or rolls it back after the handler.
        if let Some(tx) = self.tx.take() {
            self.scope.give_back(tx);
        }
    }
}

impl<DB: OutboxDatabase> FromContext for Tx<DB> {
    fn from_context(ctx: &Context, _state: &StateMap) -> Result<Self, ExtractError> {
        let name = readable_type_name::<Self>();
        let Some(scope) = ctx.scope() else {
            return Err(ExtractError(format!(
                "{name} needs the app's inbox (AppBuilder::inbox)"
            )));
        };
        let tx = scope
            .take::<Transaction<'static, DB>>()
            .map_err(|why| ExtractError(format!("{name}: {why}")))?;
        Ok(Tx {
            tx: Some(tx),
            scope: scope.clone(),
        })
    }

    fn transaction() -> Option<TransactionRequirement> {
        Some(TransactionRequirement {
            database: std::any::TypeId::of::<DB>(),
            type_name: readable_type_name::<Self>(),
        })
    }
}
