//! One handler run in the inbox's transaction: record, run, write the
//! follow-ups, commit (or roll back). A decorator around the handler, so
//! the dispatcher's retry, panic and stop policy applies unchanged: a
//! failure or panic here is the handler's, after the rollback.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::{Pool, Transaction};

use super::runtime::InboxRuntime;
use super::{on_pool, InboxPool};
use crate::event::Envelope;
use crate::handler::{Context, ErasedHandler, HandlerFailure, StateMap, TxScope};
use crate::outbox::{OutboxDatabase, OutboxRuntime};

/// The `tracing` target of the inbox's events.
pub(crate) const TARGET: &str = "heytom_mq::inbox";

/// A handler that runs in the inbox's transaction.
pub(crate) struct InboxHandler {
    pub(crate) inner: Arc<dyn ErasedHandler>,
    pub(crate) name: Arc<str>,
    pub(crate) runtime: Arc<InboxRuntime>,
}

impl ErasedHandler for InboxHandler {
    fn call(
        &self,
        _envelope: &Envelope,
        ctx: Context,
        state: &StateMap,
    ) -> BoxFuture<'static, Result<(), HandlerFailure>> {
        let run = Run {
            inner: self.inner.clone(),
            name: self.name.clone(),
            runtime: self.runtime.clone(),
            state: state.clone(),
            ctx,
        };
        on_pool!(&self.runtime.pool, p => run.run(p.clone()).boxed())
    }
}

/// Everything one run needs, owned (the future is `'static`).
struct Run {
    inner: Arc<dyn ErasedHandler>,
    name: Arc<str>,
    runtime: Arc<InboxRuntime>,
    state: StateMap,
    ctx: Context,
}

fn failed(message: String) -> HandlerFailure {
    HandlerFailure::Failed(message.into())
}

async fn roll_back<DB: OutboxDatabase>(tx: Transaction<'static, DB>, envelope: &Envelope) {
    if let Err(e) = tx.rollback().await {
        // The connection is closed then; nothing was committed either way.
        tracing::debug!(target: TARGET, event_id = %envelope.id, error = %e, "inbox rollback failed");
    }
}

impl Run {
    async fn run<DB: OutboxDatabase>(self, pool: Pool<DB>) -> Result<(), HandlerFailure> {
        let Run {
            inner,
            name,
            runtime,
            state,
            ctx,
        } = self;
        let envelope = ctx.envelope().clone();
        let table = &runtime.table;
        let mut tx = pool.begin().await.map_err(|e| {
            failed(format!(
                "inbox: could not begin a transaction on {}: {e}",
                table.d.kind.as_str()
            ))
        })?;
        // The row first: its lock holds a concurrent duplicate until this
        // run ends, which then finds the row (or takes over after a rollback).
        let insert = table.insert(envelope.id, &name, Utc::now());
        match DB::__execute(&mut *tx, insert).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                roll_back(tx, &envelope).await;
                tracing::info!(target: TARGET, event_id = %envelope.id, handler = %name, "message already processed: skipped");
                return Ok(());
            }
            Err(e) => {
                roll_back(tx, &envelope).await;
                return Err(failed(format!(
                    "inbox: could not record the message in {}: {e}",
                    table.name
                )));
            }
        }
        let scope = TxScope::new(tx, runtime.outbox.is_some());
        let handler = inner.call(&envelope, ctx.with_scope(scope.clone()), &state);
        // Done (or unwound): its `Tx` was dropped and gave the transaction back.
        let result = AssertUnwindSafe(handler).catch_unwind().await;
        let tx = scope.take::<Transaction<'static, DB>>();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => {
                if let Ok(tx) = tx {
                    roll_back(tx, &envelope).await;
                }
                return Err(failure);
            }
            Err(panic) => {
                if let Ok(tx) = tx {
                    roll_back(tx, &envelope).await;
                }
                std::panic::resume_unwind(panic);
            }
        }
        let Ok(mut tx) = tx else {
            // Dropped wherever it went: rolled back then.
            return Err(failed(
                "the handler returned while its Tx lived on (moved into a task?); nothing was committed".to_owned(),
            ));
        };
        let staged = scope.take_staged();
        let follow_ups = match &runtime.outbox {
            Some(outbox) if !staged.is_empty() => {
                let written = OutboxRuntime::write_follow_ups::<DB>(
                    outbox,
                    &runtime.producer,
                    &mut *tx,
                    staged,
                )
                .await;
                match written {
                    Ok(f) => Some(f),
                    Err(e) => {
                        roll_back(tx, &envelope).await;
                        return Err(HandlerFailure::Failed(Box::new(e)));
                    }
                }
            }
            _ => None,
        };
        tx.commit().await.map_err(|e| {
            failed(format!(
                "inbox: commit failed ({e}); the run is rolled back and retried"
            ))
        })?;
        // Before the ack: a crash from here on leaves the row, which skips the redelivery.
        tracing::info!(target: TARGET, event_id = %envelope.id, handler = %name, "inbox committed");
        if let Some(f) = follow_ups {
            f.committed();
        }
        Ok(())
    }
}

impl std::fmt::Debug for InboxPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(super::dialect::of(self).kind.as_str())
    }
}
