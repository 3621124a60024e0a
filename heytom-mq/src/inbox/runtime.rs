//! The inbox of a built app: the startup checks, the handlers it wraps,
//! and the task that deletes old rows.

use std::any::TypeId;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::dialect::{self, InboxTable, MAX_HANDLER_NAME_LEN};
use super::guard::{InboxHandler, TARGET};
use super::{on_pool, Inbox, InboxPool};
use crate::error::{check, Error, Result};
use crate::handler::{require_no_inbox, HandlerEntry};
use crate::outbox::OutboxRuntime;
use crate::producer::Producer;

/// The longest [`Inbox::retention`] accepted: 100 years.
const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The inbox of a running app.
pub(crate) struct InboxRuntime {
    pub(crate) pool: InboxPool,
    pub(crate) table: InboxTable,
    /// The outbox follow-ups are written to, when it is in this database.
    pub(crate) outbox: Option<Arc<OutboxRuntime>>,
    pub(crate) producer: Producer,
    retention: Option<Duration>,
    cleanup_interval: Duration,
    cleanup: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for InboxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxRuntime")
            .field("table", &self.table)
            .field("outbox", &self.outbox.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether a handler runs in the inbox's transaction.
fn uses_inbox(h: &HandlerEntry, for_all: bool) -> bool {
    for_all || h.idempotent || !h.transactions.is_empty()
}

/// What a handler asks of the inbox, for messages.
fn asks(h: &HandlerEntry) -> String {
    match h.transactions.first() {
        Some(t) => format!("takes {}", t.type_name),
        None => "is #[handler(idempotent)]".to_owned(),
    }
}

/// The checks `AppBuilder::build` runs before it connects anything: a
/// handler that needs the inbox when there is none, a `Tx` of another
/// database, the inbox's own settings.
pub(crate) fn require_inbox(handlers: &[HandlerEntry], inbox: Option<&Inbox>) -> Result<()> {
    let Some(inbox) = inbox else {
        return require_no_inbox(handlers);
    };
    inbox.table()?;
    if let Some(age) = inbox.retention {
        check::duration(
            "Inbox::retention",
            age,
            Duration::from_secs(60),
            MAX_RETENTION,
        )?;
    }
    check::duration(
        "Inbox::cleanup_interval",
        inbox.cleanup_interval,
        Duration::from_secs(1),
        check::DAY,
    )?;
    let database = on_pool!(&inbox.pool, p => type_of_database(p));
    for h in handlers {
        if !uses_inbox(h, inbox.for_all_handlers) {
            continue;
        }
        if h.name.len() > MAX_HANDLER_NAME_LEN {
            return Err(Error::config(format!(
                "handler `{}`: the inbox records handler names of at most {MAX_HANDLER_NAME_LEN} bytes; give it a shorter #[handler(name = \"...\")]",
                h.name
            )));
        }
        if h.transactions.len() > 1 {
            return Err(Error::config(format!(
                "handler `{}` takes {} transactions; a handler runs in one: take one Tx",
                h.name,
                h.transactions.len()
            )));
        }
        if let Some(t) = h.transactions.first() {
            if t.database != database {
                return Err(Error::config(format!(
                    "handler `{}` takes {} but the inbox is on {}: its transaction is opened on the inbox's pool, so take Tx of that database",
                    h.name,
                    t.type_name,
                    inbox.kind().as_str()
                )));
            }
        }
    }
    Ok(())
}

fn type_of_database<DB: sqlx::Database>(_: &sqlx::Pool<DB>) -> TypeId {
    TypeId::of::<DB>()
}

impl InboxRuntime {
    /// [`InboxRuntime::build`] when the app has an inbox; the handlers,
    /// those that run in its transaction wrapped.
    pub(crate) async fn attach(
        inbox: Option<Inbox>,
        mut handlers: Vec<HandlerEntry>,
        producer: &Producer,
    ) -> Result<(Option<Arc<Self>>, Vec<HandlerEntry>)> {
        let runtime = match inbox {
            Some(i) => Some(Self::build(i, &mut handlers, producer).await?),
            None => None,
        };
        Ok((runtime, handlers))
    }

    /// Creates (or checks) the table, finds the outbox the follow-ups go
    /// to, and wraps the handlers that run in the inbox's transaction.
    /// `producer` is the app's (with its outbox, if any).
    pub(crate) async fn build(
        inbox: Inbox,
        handlers: &mut [HandlerEntry],
        producer: &Producer,
    ) -> Result<Arc<Self>> {
        let table = inbox.table()?;
        if inbox.create_table {
            inbox.ensure_table().await?;
        }
        let probe = table.probe.clone();
        on_pool!(&inbox.pool, p => dialect::run(p, &probe).await).map_err(|e| {
            Error::storage(
                format!(
                    "the inbox table {} is missing or lacks columns ({e}); create it with {} or leave Inbox::create_table on",
                    table.name,
                    table.migration()
                ),
                e,
            )
        })?;
        let outbox = OutboxRuntime::of(producer).filter(|o| o.kind() == table.d.kind);
        if let Some(o) = &outbox {
            let q = o.probe_statement();
            on_pool!(&inbox.pool, p => dialect::execute(p, q).await).map_err(|e| {
                Error::config(format!(
                    "the outbox table {} is not reachable through the inbox's pool ({e}); a handler's follow-ups are written into it in the inbox's transaction: configure Outbox and Inbox on the same database",
                    o.table_name()
                ))
            })?;
        }
        let wrapped: Vec<&mut HandlerEntry> = handlers
            .iter_mut()
            .filter(|h| uses_inbox(h, inbox.for_all_handlers))
            .collect();
        if outbox.is_none() {
            if let Some(h) = wrapped.iter().find(|h| !h.transactions.is_empty()) {
                return Err(Error::config(format!(
                    "handler `{}` {}: its follow-ups are written into the outbox in its transaction, so the app needs an outbox on the inbox's database ({}): add AppBuilder::outbox",
                    h.name,
                    asks(h),
                    table.d.kind.as_str()
                )));
            }
        }
        let runtime = Arc::new(InboxRuntime {
            pool: inbox.pool,
            table,
            outbox,
            producer: producer.clone(),
            retention: inbox.retention,
            cleanup_interval: inbox.cleanup_interval,
            cleanup: Mutex::new(None),
        });
        for h in wrapped {
            h.handler = Arc::new(InboxHandler {
                inner: h.handler.clone(),
                name: Arc::from(h.name.as_str()),
                runtime: runtime.clone(),
            });
        }
        Ok(runtime)
    }

    /// Starts the task that deletes rows older than the retention.
    pub(crate) fn start(self: &Arc<Self>) {
        let Some(age) = self.retention else { return };
        let mut cleanup = self.cleanup.lock().unwrap_or_else(|p| p.into_inner());
        if cleanup.is_some() {
            return;
        }
        let (stop, mut stopped) = watch::channel(false);
        let this = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let before = chrono::Utc::now()
                    - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
                match purge(&this.pool, &this.table, before).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::debug!(target: TARGET, table = %this.table.name, deleted = n, "old inbox rows deleted")
                    }
                    Err(e) => {
                        tracing::warn!(target: TARGET, table = %this.table.name, error = %e, "deleting old inbox rows failed; trying again later")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(this.cleanup_interval) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        *cleanup = Some((stop, task));
    }

    /// Stops the cleanup task.
    pub(crate) async fn stop(&self) {
        let task = self
            .cleanup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, task)) = task {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// Deletes rows received before `before`, in batches; returns how many.
pub(crate) async fn purge(
    pool: &InboxPool,
    table: &InboxTable,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<u64> {
    let mut total = 0;
    loop {
        let q = table.delete_before(before, dialect::DELETE_BATCH);
        let n = on_pool!(pool, p => dialect::execute(p, q).await).map_err(|e| {
            Error::storage(
                format!(
                    "deleting old rows of the inbox table {} failed: {e}",
                    table.name
                ),
                e,
            )
        })?;
        total += n;
        if n < dialect::DELETE_BATCH as u64 {
            return Ok(total);
        }
    }
}
