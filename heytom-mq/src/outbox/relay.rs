//! The relay: sends committed rows at once, and a retry scanner that claims
//! due rows (Pending left behind, Failed with a retry due) and sends them.
//!
//! A row is in flight at one sender at a time. Every claim leases rows to
//! a fresh token in `LockedBy`, measured on the database's clock; the
//! sender renews its leases while the send is in flight, and every status
//! update is fenced by the token, so a row another sender took over is
//! never marked by the one that lost it, and a Sent row never goes back.
//! Committed rows carry this instance's commit lease until the sender
//! takes them over (or a scanner does, after it expired).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use super::lease::{millis, token, Availability, Leases};
use super::marker::{retry_storage, Mark};
use super::repository::{DbKind, Store};
use super::transaction::to_outgoing;
use super::{
    ExhaustedCallback, LocalMessage, LocalMessageRetryOptions, MessageStatus, OutboxConfig,
};
use crate::error::Result;
use crate::producer::Producer;

/// Rows merged into one send after commits arrive together.
const DISPATCH_BATCH: usize = 1000;
/// Committed rows waiting for the post-commit sender, at most; rows that do
/// not fit keep their commit lease and are sent by a scanner after it.
const MAX_QUEUED_ROWS: usize = 20_000;
/// Commits waiting for the post-commit sender, at most.
const COMMIT_QUEUE: usize = 4096;
/// Batches waiting at one transport's post-commit sender, at most (their
/// rows count against `MAX_QUEUED_ROWS` until the sender takes them).
const SENDER_QUEUE: usize = COMMIT_QUEUE;
/// Sent batches waiting to be marked; a sender waits when it is full.
const MARK_QUEUE: usize = 64;
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
    /// This instance's id: the `LockedBy` of rows it committed and has not
    /// taken over for sending yet (the commit lease).
    pub(crate) owner: String,
    wake: Arc<Notify>,
    /// Sent and confirmed rows, for the marker task to mark Sent in batches.
    pub(super) marks: mpsc::Sender<Mark>,
    /// Rows in flight, renewed by the keeper.
    pub(super) leases: Leases,
    availability: Availability,
}

/// The running outbox of an app: the store, the relay and its tasks.
pub struct OutboxRuntime {
    pub(crate) relay: Arc<Relay>,
    committed: mpsc::Sender<Vec<LocalMessage>>,
    /// Rows in `committed`, bounded by `MAX_QUEUED_ROWS`.
    queued: Arc<AtomicUsize>,
    receiver: Mutex<Option<mpsc::Receiver<Vec<LocalMessage>>>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    marks: Mutex<Option<mpsc::Receiver<Mark>>>,
    /// Stops the marker and the keeper, after the tasks that feed them.
    marker_stop: watch::Sender<bool>,
    marker: Mutex<Vec<JoinHandle<()>>>,
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
        let (committed, receiver) = mpsc::channel(COMMIT_QUEUE);
        let (stop, _) = watch::channel(false);
        let (marker_stop, _) = watch::channel(false);
        let (marks, marks_rx) = mpsc::channel(MARK_QUEUE);
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
                leases: Leases::default(),
                availability: Availability::default(),
            }),
            committed,
            queued: Arc::new(AtomicUsize::new(0)),
            receiver: Mutex::new(Some(receiver)),
            stop,
            tasks: Mutex::new(Vec::new()),
            marks: Mutex::new(Some(marks_rx)),
            marker_stop,
            marker: Mutex::new(Vec::new()),
        }))
    }

    pub(crate) fn kind(&self) -> DbKind {
        self.relay.store.kind()
    }

    /// Starts the dispatcher, the scanner, the lease keeper, the marker and
    /// (PostgreSQL) the listener.
    pub(crate) fn start(self: &Arc<Self>) {
        let Some(receiver) = lock(&self.receiver).take() else {
            return;
        };
        if let Some(marks) = lock(&self.marks).take() {
            let mut marker = lock(&self.marker);
            marker.push(tokio::spawn(
                self.relay
                    .clone()
                    .mark_loop(marks, self.marker_stop.subscribe()),
            ));
            marker.push(tokio::spawn(
                self.relay.clone().keep_loop(self.marker_stop.subscribe()),
            ));
        }
        let mut tasks = lock(&self.tasks);
        tasks.push(tokio::spawn(self.relay.clone().dispatch_loop(
            receiver,
            self.queued.clone(),
            self.stop.subscribe(),
        )));
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
        tracing::info!(table = %self.relay.store.table.name, owner = %self.relay.owner, lease = ?self.relay.lease, scanner = self.relay.retry.enabled, "outbox relay started");
    }

    /// Stops the relay: rows already committed are sent first, a scan in
    /// progress finishes its batch, their outcomes are written.
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let _ = t.await;
        }
        let _ = self.marker_stop.send(true);
        let marker: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.marker));
        for m in marker {
            let _ = m.await;
        }
    }

    /// Hands committed rows to the relay. Rows that do not fit in the queue
    /// (the broker is slower than the commits) keep their commit lease and
    /// are sent by a scanner once it expires.
    pub(crate) fn committed(&self, rows: Vec<LocalMessage>) {
        if rows.is_empty() || !self.relay.dispatch_after_commit {
            return;
        }
        let n = rows.len();
        if self.queued.fetch_add(n, Ordering::AcqRel) + n > MAX_QUEUED_ROWS {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            tracing::debug!(
                count = n,
                "outbox send queue full: rows left to the scanner"
            );
            return;
        }
        if self.committed.try_send(rows).is_err() {
            // Full, or the relay is gone: a scanner sends them after the lease.
            self.queued.fetch_sub(n, Ordering::AcqRel);
            tracing::debug!(
                count = n,
                "outbox send queue full: rows left to the scanner"
            );
        }
    }
}

impl Relay {
    pub(super) fn lease_ms(&self) -> i64 {
        millis(self.lease)
    }

    /// Takes committed rows off the commit queue and hands them to one
    /// sender per transport (by the rows' `MQType`), so a broker that hangs
    /// holds up its own rows only. A sender whose queue is full leaves the
    /// rows to the scanner (they keep their commit lease).
    async fn dispatch_loop(
        self: Arc<Self>,
        mut receiver: mpsc::Receiver<Vec<LocalMessage>>,
        queued: Arc<AtomicUsize>,
        mut stop: watch::Receiver<bool>,
    ) {
        // Rows stay counted in `queued` until their transport's sender takes
        // them: the bound covers both queues.
        let mut senders: HashMap<String, (mpsc::Sender<Vec<LocalMessage>>, JoinHandle<()>)> =
            HashMap::new();
        let mut route = |rows: Vec<LocalMessage>| {
            let mut by_transport: HashMap<String, Vec<LocalMessage>> = HashMap::new();
            for r in rows {
                by_transport.entry(r.mq_type.clone()).or_default().push(r);
            }
            for (transport, rows) in by_transport {
                let (tx, _) = senders.entry(transport).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(SENDER_QUEUE);
                    (tx, tokio::spawn(self.clone().send_loop(rx, queued.clone())))
                });
                if let Err(e) = tx.try_send(rows) {
                    let n = match e {
                        mpsc::error::TrySendError::Full(r)
                        | mpsc::error::TrySendError::Closed(r) => r.len(),
                    };
                    queued.fetch_sub(n, Ordering::AcqRel);
                    tracing::debug!(count = n, "outbox sender busy: rows left to the scanner");
                }
            }
        };
        loop {
            tokio::select! {
                biased;
                rows = receiver.recv() => match rows {
                    Some(first) => {
                        // Commits that arrived together travel as one batch.
                        let mut rows = first;
                        while rows.len() < DISPATCH_BATCH {
                            match receiver.try_recv() {
                                Ok(more) => rows.extend(more),
                                Err(_) => break,
                            }
                        }
                        route(rows);
                    }
                    None => break,
                },
                _ = stop.changed() => {
                    // Send what was committed before the stop.
                    receiver.close();
                    let mut rows = Vec::new();
                    while let Ok(more) = receiver.try_recv() {
                        rows.extend(more);
                    }
                    for chunk in rows.chunks(DISPATCH_BATCH) {
                        route(chunk.to_vec());
                    }
                    break;
                }
            }
        }
        // Closing the queues lets each sender finish what it holds.
        let handles: Vec<JoinHandle<()>> = senders.into_values().map(|(_, h)| h).collect();
        for h in handles {
            let _ = h.await;
        }
    }

    /// One transport's post-commit sender: merges what is queued into
    /// batches and sends them in commit order.
    async fn send_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Vec<LocalMessage>>,
        queued: Arc<AtomicUsize>,
    ) {
        let take = |rows: Vec<LocalMessage>| {
            queued.fetch_sub(rows.len(), Ordering::AcqRel);
            rows
        };
        while let Some(first) = rx.recv().await {
            let mut rows = take(first);
            while rows.len() < DISPATCH_BATCH {
                match rx.try_recv() {
                    Ok(more) => rows.extend(take(more)),
                    Err(_) => break,
                }
            }
            for chunk in rows.chunks(DISPATCH_BATCH) {
                self.send_committed(chunk.to_vec()).await;
            }
        }
    }

    /// Takes committed rows over from the commit lease and sends the ones
    /// it got; while the transport is unavailable, leaves them to a scanner.
    async fn send_committed(&self, mut rows: Vec<LocalMessage>) {
        // Rows of a transport that is down wait for the scanner (after their
        // commit lease); the others go at once.
        let before = rows.len();
        rows.retain(|r| self.availability.wait(&r.mq_type).is_zero());
        if rows.len() < before {
            tracing::debug!(
                count = before - rows.len(),
                "transport unavailable: committed rows left to the scanner"
            );
        }
        if rows.is_empty() {
            return;
        }
        let token = token();
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        self.leases.hold(&token, &ids);
        let got = match self
            .store
            .take_over(&ids, &self.owner, &token, self.lease_ms())
            .await
        {
            Ok(got) => got,
            Err(e) => {
                self.leases.forget(&token, &ids);
                tracing::warn!(error = %e, count = ids.len(), "could not lease committed rows; a scanner sends them after the commit lease");
                return;
            }
        };
        if got.len() < ids.len() {
            let lost: Vec<Uuid> = ids.iter().filter(|id| !got.contains(id)).copied().collect();
            self.leases.forget(&token, &lost);
            tracing::debug!(
                count = lost.len(),
                "committed rows already taken by a scanner"
            );
            rows.retain(|r| got.contains(&r.id));
        }
        self.dispatch(rows, token, "commit").await;
    }

    async fn scan_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let batch = i64::from(self.retry.batch_size.max(1));
        let max_retry = i32::try_from(self.retry.max_retry_count).unwrap_or(i32::MAX);
        loop {
            loop {
                if *stop.borrow() {
                    return;
                }
                // No wait for a transport that is down: its rows were given
                // back with its backoff, so they are not due before it.
                let token = token();
                match self
                    .store
                    .claim(&token, self.lease_ms(), max_retry, batch)
                    .await
                {
                    Ok(rows) if rows.is_empty() => break,
                    Ok(rows) => {
                        let full = rows.len() as i64 >= batch;
                        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
                        self.leases.hold(&token, &ids);
                        self.dispatch(rows, token, "scan").await;
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
                let before = chrono::TimeDelta::from_std(age)
                    .ok()
                    .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
                    .unwrap_or(chrono::DateTime::UNIX_EPOCH);
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

    fn backoff_for(&self, failures: i32) -> Duration {
        let exp = u32::try_from(failures.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.backoff
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// Sends rows leased to `token` in creation order through the
    /// producer's transports and records the outcome: Sent in batched
    /// updates; Failed with the error, a retry count and the next attempt
    /// time when the message itself failed; given back without counting a
    /// retry when the transport was unavailable.
    pub(crate) async fn dispatch(
        &self,
        mut rows: Vec<LocalMessage>,
        token: Arc<str>,
        source: &'static str,
    ) {
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
            // Per transport: the rows it could not take and why; whether it answered.
            let mut unavailable: HashMap<String, (Vec<Uuid>, String)> = HashMap::new();
            let mut answered: Vec<String> = Vec::new();
            let mut answer = |mq_type: &str| {
                if !answered.iter().any(|t| t == mq_type) {
                    answered.push(mq_type.to_owned());
                }
            };
            for (row, r) in sending.into_iter().zip(results) {
                match r {
                    Ok(()) => {
                        tracing::trace!(event_id = %row.id, event_name = %row.message_type, "outbox row sent");
                        answer(&row.mq_type);
                        sent.push(row.id);
                    }
                    Err(e) if e.is_unavailable() => {
                        unavailable
                            .entry(row.mq_type.clone())
                            .or_insert_with(|| (Vec::new(), e.to_string()))
                            .0
                            .push(row.id);
                    }
                    Err(e) => {
                        // The broker refused this message: it answered.
                        answer(&row.mq_type);
                        failed.push((row, e.to_string()));
                    }
                }
            }
            for transport in &answered {
                self.availability.answered(transport);
            }
            if !sent.is_empty() {
                let mark = Mark {
                    token: token.clone(),
                    ids: sent,
                };
                if let Err(mpsc::error::SendError(mark)) = self.marks.send(mark).await {
                    // The marker has stopped: mark here.
                    self.mark_sent(vec![mark]).await;
                }
            }
            for (transport, (ids, reason)) in unavailable {
                self.release(&token, &transport, ids, &reason).await;
            }
            self.record_failures(&token, failed).await;
        }
        .instrument(span)
        .await
    }

    /// The transport was unavailable: the rows are due again after the
    /// relay's backoff, their retries untouched.
    async fn release(&self, token: &str, transport: &str, ids: Vec<Uuid>, reason: &str) {
        let wait = self.availability.failed(transport, reason);
        tracing::debug!(count = ids.len(), error = %reason, "outbox send not confirmed: transport unavailable");
        if let Err(e) =
            retry_storage(|| self.store.release(&ids, token, reason, millis(wait))).await
        {
            // They keep their lease and are sent again after it.
            tracing::warn!(error = %e, count = ids.len(), "could not give outbox rows back");
        }
        self.leases.forget(token, &ids);
    }

    async fn record_failures(&self, token: &str, failed: Vec<(LocalMessage, String)>) {
        if failed.is_empty() {
            return;
        }
        let max = i64::from(self.retry.max_retry_count);
        // Rows failing alike share one update.
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
            let backoff = millis(self.backoff_for(failures));
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            let written =
                retry_storage(|| self.store.mark_failed(&ids, token, &reason, backoff)).await;
            self.leases.forget(token, &ids);
            match written {
                Err(e) => {
                    tracing::error!(error = %e, count = ids.len(), "could not mark outbox rows failed");
                    continue;
                }
                Ok(n) if (n as usize) < ids.len() => {
                    tracing::warn!(
                        count = ids.len() - n as usize,
                        "failed outbox rows had been taken over by another sender"
                    );
                    continue;
                }
                Ok(_) => {}
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
