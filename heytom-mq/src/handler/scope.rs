//! What a handler run inside the inbox's transaction shares with the
//! runtime: the open transaction (until the `Tx` extractor takes it, and
//! again after the `Tx` is dropped) and the follow-ups `ctx.publish()`
//! staged for the outbox. A core type, type-erased, so that the handler
//! layer knows nothing of sqlx or the inbox that fills it.

// Without a database feature only the handlers' flags are read (to refuse them).
#![cfg_attr(not(feature = "_outbox"), allow(dead_code))]

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::event::{Envelope, Route};

/// One handler run in a transaction the runtime opened around it.
pub(crate) struct TxScope {
    /// The open transaction (a `sqlx::Transaction<'static, DB>`), boxed.
    transaction: Mutex<Option<Box<dyn Any + Send>>>,
    /// Follow-ups held back until the transaction commits; `None` when
    /// `ctx.publish()` sends at once (no outbox in the inbox's database).
    staged: Option<Mutex<Vec<(&'static Route, Envelope)>>>,
}

impl std::fmt::Debug for TxScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxScope")
            .field("staging", &self.staged.is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TxScope {
    /// A scope holding `transaction`; with `staging`, `ctx.publish()`
    /// stages follow-ups here instead of sending them.
    pub(crate) fn new<T: Any + Send>(transaction: T, staging: bool) -> Arc<Self> {
        Arc::new(TxScope {
            transaction: Mutex::new(Some(Box::new(transaction))),
            staged: staging.then(|| Mutex::new(Vec::new())),
        })
    }

    /// Takes the transaction out, if it is there and of type `T`.
    pub(crate) fn take<T: Any + Send>(&self) -> Result<T, &'static str> {
        let mut slot = lock(&self.transaction);
        match slot.take() {
            None => Err("the transaction is already taken (a handler takes one Tx)"),
            Some(b) if (*b).type_id() != TypeId::of::<T>() => {
                *slot = Some(b);
                Err("the inbox's transaction is on another database")
            }
            Some(b) => match b.downcast::<T>() {
                Ok(t) => Ok(*t),
                Err(_) => Err("the inbox's transaction is on another database"),
            },
        }
    }

    /// Puts the transaction back (a `Tx` being dropped).
    pub(crate) fn give_back<T: Any + Send>(&self, transaction: T) {
        *lock(&self.transaction) = Some(Box::new(transaction));
    }

    /// Whether `ctx.publish()` stages follow-ups here.
    pub(crate) fn stages(&self) -> bool {
        self.staged.is_some()
    }

    /// Stages a follow-up (dropped when this scope does not stage: check
    /// [`TxScope::stages`] first).
    pub(crate) fn stage(&self, route: &'static Route, envelope: Envelope) {
        if let Some(staged) = &self.staged {
            lock(staged).push((route, envelope));
        }
    }

    /// The staged follow-ups, in publish order.
    pub(crate) fn take_staged(&self) -> Vec<(&'static Route, Envelope)> {
        self.staged
            .as_ref()
            .map(|s| std::mem::take(&mut *lock(s)))
            .unwrap_or_default()
    }
}

/// The transaction a handler argument needs (`Tx<sqlx::Postgres>`),
/// checked against the inbox when the app is built.
#[derive(Debug, Clone, Copy)]
pub struct TransactionRequirement {
    /// `TypeId` of the sqlx database type (`sqlx::Postgres`).
    pub database: TypeId,
    /// The argument's type for messages (`Tx<Postgres>`).
    pub type_name: &'static str,
}

/// Refuses handlers that need an inbox (`#[handler(idempotent)]`, a `Tx`
/// argument) in an app that has none, naming the first.
pub(crate) fn require_no_inbox(handlers: &[super::HandlerEntry]) -> crate::Result<()> {
    for h in handlers {
        let asks = match h.transactions.first() {
            Some(t) => format!("takes {}", t.type_name),
            None if h.idempotent => "is #[handler(idempotent)]".to_owned(),
            None => continue,
        };
        return Err(crate::Error::config(format!(
            "handler `{}` {asks}, which needs an inbox, but the app has none: add AppBuilder::inbox(Inbox::postgres(pool)) (or mysql / sqlite){}",
            h.name,
            if cfg!(feature = "_outbox") {
                ""
            } else {
                "; heytom-mq was built without a database feature (postgres, mysql, sqlite)"
            }
        )));
    }
    Ok(())
}
