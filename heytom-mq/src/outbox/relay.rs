//! The relay: sends committed rows at once, and a retry scanner that claims
//! due rows (Pending left behind, Failed with a retry due) and sends them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use super::repository::{DbKind, Store};
use super::{
    ExhaustedCallback, LocalMessage, LocalMessageRetryOptions, MessageStatus, OutboxConfig,
};
use crate::error::Result;
use crate::event::{registered_event, Envelope, Headers};
use crate::producer::Producer;
use crate::transport::Outgoing;

/// Rows merged into one send after commits arrive together.
const DISPATCH_BATCH: usize = 1000;
/// Ids marked Sent per update at most.
const MARK_BATCH: usize = 1000;
/// How long the marker waits for more confirmed ids before writing.
const MARK_LINGER: Duration = Duration::from_millis(5);
/// Rows deleted per statement by retention.
const RETENTION_BATCH: i64 = 500;

/// What the relay tasks share.
pub(crate) struct Relay {
    pub(crate) store: Store,
    producer: Producer,
    pub(crate) retry: LocalMessageRetryOptions,
    pub(crate) dispatch_after_commit: bool,
    pub(crate) lease: Duration,
    backoff: Duration,
    max_backoff: Duration,
    retention: Option<Duration>,
    on_exhausted: Option<ExhaustedCallback>,
    /// This instance's id in the `LockedBy` column.
    pub(crate) owner: String,
    wake: Arc<Notify>,
    /// Ids sent and confirmed, for the marker task to mark Sent in batches.
    marks: mpsc::UnboundedSender<Vec<Uuid>>,
}

/// The running outbox of an app: the store, the relay and its tasks.
pub struct OutboxRuntime {
    pub(crate) relay: Arc<Relay>,
    committed: mpsc::UnboundedSender<Vec<LocalMessage>>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Vec<LocalMessage>>>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    marks: Mutex<Option<mpsc::UnboundedReceiver<Vec<Uuid>>>>,
    /// Stops the marker, after the tasks that feed it.
    marker_stop: watch::Sender<bool>,
    marker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for OutboxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRuntime")
            .field("store", &self.relay.store)
            .field("owner", &self.relay.owner)
            .field("retry", &self.relay.retry)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OutboxRuntime {
    /// Creates (or checks) the table and prepares the relay; `producer`
    /// sends through the app's transports.
    pub(crate) async fn build(config: OutboxConfig, producer: Producer) -> Result<Arc<Self>> {
        let OutboxConfig { outbox, retry } = config;
        let store = outbox.store()?;
        if outbox.create_table {
            store.create_table().await?;
        }
        store.probe().await?;
        let (committed, receiver) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        let (marker_stop, _) = watch::channel(false);
        let (marks, marks_rx) = mpsc::unbounded_channel();
        Ok(Arc::new(OutboxRuntime {
            relay: Arc::new(Relay {
                store,
                producer,
                retry,
                dispatch_after_commit: outbox.dispatch_after_commit,
                lease: outbox.dispatch_lease,
                backoff: outbox.retry_backoff,
                max_backoff: outbox.max_retry_backoff,
                retention: outbox.retention,
                on_exhausted: outbox.on_exhausted,
                owner: Uuid::now_v7().to_string(),
                wake: Arc::new(Notify::new()),
                marks,
            }),
            committed,
            receiver: Mutex::new(Some(receiver)),
            stop,
            tasks: Mutex::new(Vec::new()),
            marks: Mutex::new(Some(marks_rx)),
            marker_stop,
            marker: Mutex::new(None),
        }))
    }

    pub(crate) fn kind(&self) -> DbKind {
        self.relay.store.kind()
    }

    /// Starts the dispatcher, the scanner and (PostgreSQL) the listener.
    pub(crate) fn start(self: &Arc<Self>) {
        let Some(receiver) = lock(&self.receiver).take() else {
            return;
        };
        if let Some(marks) = lock(&self.marks).take() {
            *lock(&self.marker) = Some(tokio::spawn(
                self.relay
                    .clone()
                    .mark_loop(marks, self.marker_stop.subscribe()),
            ));
        }
        let mut tasks = lock(&self.tasks);
        tasks.push(tokio::spawn(
            self.relay
                .clone()
                .dispatch_loop(receiver, self.stop.subscribe()),
        ));
        if self.relay.retry.enabled {
            tasks.push(tokio::spawn(
                self.relay.clone().scan_loop(self.stop.subscribe()),
            ));
            let channel = self.relay.store.table.channel();
            if let Some(t) = self.relay.store.backend.spawn_listener(
                channel,
                self.relay.wake.clone(),
                self.stop.subscribe(),
            ) {
                tasks.push(t);
            }
        }
        tracing::info!(table = %self.relay.store.table.name, owner = %self.relay.owner, scanner = self.relay.retry.enabled, "outbox relay started");
    }

    /// Stops the relay: rows already committed are sent first, a scan in
    /// progress finishes its batch.
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let _ = t.await;
        }
        let _ = self.marker_stop.send(true);
        let marker = lock(&self.marker).take();
        if let Some(m) = marker {
            let _ = m.await;
        }
    }

    /// Hands committed rows to the relay.
    pub(crate) fn committed(&self, rows: Vec<LocalMessage>) {
        if rows.is_empty() || !self.relay.dispatch_after_commit {
            return;
        }
        // If the relay is gone the rows stay leased and a scanner sends them later.
        let _ = self.committed.send(rows);
    }
}

impl Relay {
    async fn dispatch_loop(
        self: Arc<Self>,
        mut receiver: mpsc::UnboundedReceiver<Vec<LocalMessage>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let first = tokio::select! {
                biased;
                rows = receiver.recv() => match rows {
                    Some(rows) => rows,
                    None => return,
                },
                _ = stop.changed() => {
                    // Send what was committed before the stop.
                    let mut rows = Vec::new();
                    while let Ok(more) = receiver.try_recv() {
                        rows.extend(more);
                    }
                    for chunk in rows.chunks(DISPATCH_BATCH) {
                        self.dispatch(chunk.to_vec(), "commit").await;
                    }
                    return;
                }
            };
            let mut rows = first;
            while rows.len() < DISPATCH_BATCH {
                match receiver.try_recv() {
                    Ok(more) => rows.extend(more),
                    Err(_) => break,
                }
            }
            self.dispatch(rows, "commit").await;
        }
    }

    async fn scan_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let batch = i64::from(self.retry.batch_size);
        let max_retry = i32::try_from(self.retry.max_retry_count).unwrap_or(i32::MAX);
        loop {
            loop {
                if *stop.borrow() {
                    return;
                }
                let lease_until = (Utc::now() + self.lease).timestamp_millis();
                match self
                    .store
                    .claim(&self.owner, lease_until, max_retry, batch)
                    .await
                {
                    Ok(rows) if rows.is_empty() => break,
                    Ok(rows) => {
                        let full = rows.len() as i64 >= batch;
                        self.dispatch(rows, "scan").await;
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox scan failed; retrying on the next scan");
                        break;
                    }
                }
            }
            if let Some(age) = self.retention {
                let before = Utc::now() - age;
                match self
                    .store
                    .delete_before(MessageStatus::Sent, before, RETENTION_BATCH)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(deleted = n, "outbox retention"),
                    Err(e) => tracing::warn!(error = %e, "outbox retention failed"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.retry.scan_interval) => {}
                _ = self.wake.notified() => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            }
        }
    }

    /// Marks confirmed rows Sent, merging what arrives within a few
    /// milliseconds into one update: one write per batch, not per commit.
    async fn mark_loop(
        self: Arc<Self>,
        mut marks: mpsc::UnboundedReceiver<Vec<Uuid>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let mut ids = tokio::select! {
                biased;
                m = marks.recv() => match m {
                    Some(ids) => ids,
                    None => return,
                },
                _ = stop.changed() => {
                    let mut ids = Vec::new();
                    while let Ok(more) = marks.try_recv() {
                        ids.extend(more);
                    }
                    marks.close();
                    while let Ok(more) = marks.try_recv() {
                        ids.extend(more);
                    }
                    self.mark_sent(ids).await;
                    return;
                }
            };
            let linger = tokio::time::sleep(MARK_LINGER);
            tokio::pin!(linger);
            while ids.len() < MARK_BATCH {
                tokio::select! {
                    biased;
                    m = marks.recv() => match m {
                        Some(more) => ids.extend(more),
                        None => break,
                    },
                    _ = &mut linger => break,
                }
            }
            self.mark_sent(ids).await;
        }
    }

    async fn mark_sent(&self, ids: Vec<Uuid>) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = retry_storage(|| self.store.mark_sent(&ids)).await {
            // The rows keep their lease and are sent again after it: at least once.
            tracing::error!(error = %e, count = ids.len(), "could not mark outbox rows sent");
        }
    }

    fn backoff_for(&self, failures: i32) -> Duration {
        let exp = u32::try_from(failures.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.backoff
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// Sends rows in creation order through the producer's transports and
    /// records the outcome: Sent in batched updates, Failed with the error,
    /// a retry count and the next attempt time.
    pub(crate) async fn dispatch(&self, mut rows: Vec<LocalMessage>, source: &'static str) {
        rows.sort_by_key(|r| (r.created_at, r.id));
        let span = tracing::info_span!("outbox.relay", source, count = rows.len(), table = %self.store.table.name);
        async {
            let mut outgoing = Vec::with_capacity(rows.len());
            let mut sending = Vec::with_capacity(rows.len());
            let mut failed: Vec<(LocalMessage, String)> = Vec::new();
            for row in rows {
                match to_outgoing(&row) {
                    Ok(o) => {
                        outgoing.push(o);
                        sending.push(row);
                    }
                    Err(reason) => failed.push((row, reason)),
                }
            }
            let results = if outgoing.is_empty() {
                Vec::new()
            } else {
                self.producer.send_outgoing(&outgoing).await
            };
            let mut sent = Vec::with_capacity(sending.len());
            for (row, r) in sending.into_iter().zip(results) {
                match r {
                    Ok(()) => {
                        tracing::trace!(event_id = %row.id, event_name = %row.message_type, "outbox row sent");
                        sent.push(row.id);
                    }
                    Err(e) => failed.push((row, e.to_string())),
                }
            }
            if !sent.is_empty() {
                if let Err(mpsc::error::SendError(sent)) = self.marks.send(sent) {
                    // The marker has stopped: mark here.
                    self.mark_sent(sent).await;
                }
            }
            self.record_failures(failed).await;
        }
        .instrument(span)
        .await
    }

    async fn record_failures(&self, failed: Vec<(LocalMessage, String)>) {
        if failed.is_empty() {
            return;
        }
        let max = i64::from(self.retry.max_retry_count);
        // Rows failing alike (broker down) share one update.
        let mut groups: HashMap<(i32, String), Vec<LocalMessage>> = HashMap::new();
        for (row, reason) in failed {
            tracing::warn!(event_id = %row.id, event_name = %row.message_type, attempt = row.retry_count + 1, error = %reason, "outbox send failed");
            groups
                .entry((row.retry_count, reason))
                .or_default()
                .push(row);
        }
        for ((retry_count, reason), rows) in groups {
            let failures = retry_count.saturating_add(1);
            let next = Utc::now() + self.backoff_for(failures);
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            let next_ms = next.timestamp_millis();
            if let Err(e) = retry_storage(|| self.store.mark_failed(&ids, &reason, next_ms)).await {
                tracing::error!(error = %e, count = ids.len(), "could not mark outbox rows failed");
                continue;
            }
            if i64::from(failures) >= max {
                for mut row in rows {
                    row.status = MessageStatus::Failed;
                    row.retry_count = failures;
                    row.error_message = Some(reason.clone());
                    row.locked_by = None;
                    tracing::warn!(event_id = %row.id, event_name = %row.message_type, retries = failures, error = %reason, "outbox row exhausted its retries; it stays Failed (requeue it with Outbox::requeue)");
                    if let Some(cb) = &self.on_exhausted {
                        if std::panic::catch_unwind(AssertUnwindSafe(|| cb(&row))).is_err() {
                            tracing::error!(event_id = %row.id, "Outbox::on_exhausted callback panicked");
                        }
                    }
                }
            }
        }
    }
}

/// Retries a status update a few times: a lost update means a resend after
/// the lease (a deadlock victim on MySQL, a busy SQLite file).
async fn retry_storage<F, Fut>(mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut delay = Duration::from_millis(20);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 4 => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, attempt, "outbox status update failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 3;
                attempt += 1;
            }
        }
    }
}

/// Rebuilds the envelope of a row; fails (the row is marked Failed) when its
/// type is not a registered event or its headers are not a JSON object.
fn to_outgoing(row: &LocalMessage) -> std::result::Result<Outgoing, String> {
    let Some(reg) = registered_event(&row.message_type) else {
        return Err(format!(
            "unknown message type `{}`: no Event with this NAME is compiled into this binary",
            row.message_type
        ));
    };
    let headers: Headers = match row.headers.as_deref() {
        None | Some("") => Headers::new(),
        Some(h) => serde_json::from_str(h).map_err(|e| format!("invalid Headers column: {e}"))?,
    };
    Ok(Outgoing {
        route: (reg.route)(),
        envelope: Envelope {
            id: row.id,
            name: row.message_type.clone(),
            occurred_at: row.created_at,
            headers,
            partition_key: row.partition_key.clone(),
            payload: row.message_body.clone().into_bytes(),
        },
    })
}
