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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use super::lease::{millis, token, Availability, Leases};
use super::marker::{retry_storage, Mark};
use super::repository::{DbKind, Store};
use super::schedule::WakeSchedule;
pub(super) use super::sender::Committed;
use super::sender::Senders;
use super::transaction::to_outgoing;
use super::wake::WakeOthers;
use super::{
    ExhaustedCallback, LocalMessage, LocalMessageRetryOptions, MessageStatus, OutboxConfig,
};
use crate::error::Result;
use crate::producer::Producer;
use crate::telemetry;

/// Commits waiting for one transport's post-commit sender, at most.
pub(super) const COMMIT_QUEUE: usize = 4096;
/// Sent batches waiting to be marked; a sender waits when it is full.
const MARK_QUEUE: usize = 256;
/// How long one commit-lease token is handed to new transactions before a
/// fresh one replaces it: rows committed together share a token (one
/// status update per token), rows committed apart do not.
const COMMIT_TOKEN_EPOCH: Duration = Duration::from_millis(500);
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
    pub(super) retention: Option<Duration>,
    on_exhausted: Option<ExhaustedCallback>,
    /// This instance's id (in logs).
    pub(crate) owner: String,
    /// The current commit-lease token and when it was made: the `LockedBy`
    /// that transactions write with their rows (see [`Relay::commit_token`]).
    commit_lease: Mutex<(Arc<str>, Instant)>,
    /// Wakes the scanner at once (a commit with dispatch off, PostgreSQL
    /// `NOTIFY`, a requeue).
    pub(super) wake: Arc<Notify>,
    /// Wakes other instances' scanners (see `wake.rs`).
    pub(super) wake_others: WakeOthers,
    /// Wakes the scanner when a scheduled row is due (see `schedule.rs`).
    pub(super) schedule: WakeSchedule,
    /// Sent and confirmed rows, for the marker task to mark Sent in batches.
    pub(super) marks: mpsc::Sender<Mark>,
    /// Wakes the marker before its linger is over (see `Relay::queue_mark`).
    pub(super) mark_now: Notify,
    /// Rows in flight, renewed by the keeper.
    pub(super) leases: Leases,
    pub(super) availability: Availability,
    /// The last scan's counts and outcome, for health checks.
    pub(super) scan_health: super::health::ScanHealth,
}

/// The running outbox of an app: the store, the relay and its tasks.
pub struct OutboxRuntime {
    pub(crate) relay: Arc<Relay>,
    /// The post-commit senders, one per transport.
    senders: Senders,
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
        let notify_others = store.table.d.notify.is_some();
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
                commit_lease: Mutex::new((token(), Instant::now())),
                wake: Arc::new(Notify::new()),
                wake_others: WakeOthers::new(notify_others),
                schedule: WakeSchedule::default(),
                marks,
                mark_now: Notify::new(),
                leases: Leases::default(),
                availability: Availability::default(),
                scan_health: Default::default(),
            }),
            senders: Senders::new(),
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

    /// The outbox's health, from the last scan.
    pub(crate) fn health(&self) -> super::OutboxHealth {
        self.relay.health()
    }

    /// Starts the marker, the lease keeper, the notifier, the scanner and
    /// (PostgreSQL) the listener; post-commit senders start on first use.
    pub(crate) fn start(self: &Arc<Self>) {
        // The marker's receiver is there until the first start.
        let Some(marks) = lock(&self.marks).take() else {
            return;
        };
        {
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
        tasks.push(tokio::spawn(
            self.relay.clone().notify_loop(self.stop.subscribe()),
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
        tracing::info!(table = %self.relay.store.table.name, owner = %self.relay.owner, lease = ?self.relay.lease, scanner = self.relay.retry.enabled, "outbox relay started");
    }

    /// Wakes the scanner now (a row was requeued) instead of at its next interval.
    pub(crate) fn wake_scanner(&self) {
        self.relay.wake.notify_one();
    }

    /// Stops the relay: rows already committed are sent first, a scan in
    /// progress finishes its batch, their outcomes are written.
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        // Rows already committed are sent first.
        self.senders.close().await;
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

    /// Hands committed rows to the relay; `since` is when their first
    /// insert was sent (their commit lease started after it). Rows that do
    /// not fit in the queue (the broker is slower than the commits) keep
    /// their commit lease and are sent by a scanner once it expires.
    pub(crate) fn committed(&self, rows: Vec<LocalMessage>, since: Instant) {
        if rows.is_empty() {
            return;
        }
        if !self.relay.dispatch_after_commit {
            // Due at once: a scanner sends them.
            self.relay.wake_scanners(true);
            return;
        }
        self.senders.hand(&self.relay, Committed { rows, since });
    }
}

impl Relay {
    pub(super) fn lease_ms(&self) -> i64 {
        millis(self.lease)
    }

    /// The token a transaction's rows are leased to at insert (the commit
    /// lease). Transactions begun within one short epoch share it, so the
    /// rows they commit together are marked with one statement; then a
    /// fresh one is made.
    pub(crate) fn commit_token(&self) -> Arc<str> {
        let mut current = lock(&self.commit_lease);
        if current.1.elapsed() >= COMMIT_TOKEN_EPOCH {
            *current = (token(), Instant::now());
        }
        current.0.clone()
    }

    async fn scan_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let batch = i64::from(self.retry.batch_size.max(1));
        let max_retry = i32::try_from(self.retry.max_retry_count).unwrap_or(i32::MAX);
        // Retention runs once per scan interval, however often due rows wake the scanner.
        let mut retained_at: Option<Instant> = None;
        loop {
            self.schedule.scanning();
            // The batch being sent: the next claim overlaps its confirms.
            // Batches are sent one after another, in claim order.
            let mut in_flight: Option<JoinHandle<()>> = None;
            // While full batches follow each other, each claim starts at the
            // previous one's newest row (see `Store::claim`).
            let mut after = None;
            let mut failure = None;
            loop {
                if *stop.borrow() {
                    break;
                }
                // No wait for a transport that is down: its rows were given
                // back with its backoff, so they are not due before it.
                let token = token();
                let claimed = self
                    .store
                    .claim(&token, self.lease_ms(), max_retry, batch, after)
                    .await;
                // Renewed from now on: the batch may wait for the previous
                // one's confirms longer than its lease (a broker blocking
                // publishers).
                if let Ok(rows) = &claimed {
                    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
                    self.leases.hold(&token, &ids);
                }
                if let Some(previous) = in_flight.take() {
                    let _ = previous.await;
                }
                match claimed {
                    Ok(rows) if rows.is_empty() => break,
                    Ok(rows) => {
                        let full = rows.len() as i64 >= batch;
                        after = rows.iter().map(|r| r.created_at).max();
                        let relay = self.clone();
                        in_flight = Some(tokio::spawn(async move {
                            relay.dispatch(rows, "scan").await;
                        }));
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox scan failed; retrying on the next scan");
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(last) = in_flight.take() {
                let _ = last.await;
            }
            self.refresh_gauges().await;
            if *stop.borrow() {
                return;
            }
            self.scanned(failure).await;
            let retention = self
                .retention
                .filter(|_| retained_at.is_none_or(|t| t.elapsed() >= self.retry.scan_interval));
            if let Some(age) = retention {
                retained_at = Some(Instant::now());
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
            if !self.sleep_until_due(max_retry, &mut stop).await {
                return;
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

    /// Sends leased rows in creation order through the producer's
    /// transports and records the outcome, each row's fenced by the token
    /// it is leased to (its `locked_by`): Sent in batched updates; Failed
    /// with the error, a retry count and the next attempt time when the
    /// message itself failed; given back without counting a retry when the
    /// transport was unavailable.
    pub(crate) async fn dispatch(&self, rows: Vec<LocalMessage>, source: &'static str) {
        let started = self.start_dispatch(rows, source).await;
        self.finish_dispatch(started).await;
    }

    /// The first half of [`dispatch`](Self::dispatch): hands the rows to
    /// their transports in creation order and returns once they have them
    /// (a batch started later goes after them), with the results to come.
    pub(super) async fn start_dispatch(
        &self,
        mut rows: Vec<LocalMessage>,
        source: &'static str,
    ) -> Started {
        rows.sort_by_key(|r| (r.created_at, r.id));
        // One per post-commit send (one commit at one writer): built only
        // when a subscriber listens at its level (see `telemetry::consume`).
        let span = if tracing::level_enabled!(tracing::Level::INFO) {
            tracing::info_span!("outbox.relay", source, count = rows.len(), table = %self.store.table.name)
        } else {
            tracing::Span::none()
        };
        let mut outgoing = Vec::with_capacity(rows.len());
        let mut sending = Vec::with_capacity(rows.len());
        let mut failed: Vec<(LocalMessage, String)> = Vec::new();
        let mut spans = Vec::new();
        {
            let _in = span.enter();
            for row in rows {
                match to_outgoing(&row) {
                    Ok(mut o) => {
                        let e = &mut o.envelope;
                        spans.extend(telemetry::relay_publish(o.route, e, &row.mq_type, source));
                        outgoing.push(o);
                        sending.push(row);
                    }
                    Err(reason) => failed.push((row, reason)),
                }
            }
        }
        let pending = if outgoing.is_empty() {
            Box::pin(std::future::ready(Vec::new()))
        } else {
            self.producer
                .start_outgoing(outgoing)
                .instrument(span.clone())
                .await
        };
        Started {
            sending,
            failed,
            spans,
            pending,
            span,
        }
    }

    /// The second half of [`dispatch`](Self::dispatch): waits for the
    /// results and records them.
    pub(super) async fn finish_dispatch(&self, started: Started) {
        let Started {
            sending,
            mut failed,
            spans,
            pending,
            span,
        } = started;
        async {
            let results = pending.await;
            let mut tokens = Tokens::default();
            let mut sent: ByLease = Vec::new();
            // Per transport and lease: the rows it could not take and why;
            // whether it answered.
            let mut unavailable: HashMap<String, (String, ByLease)> = HashMap::new();
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
                        telemetry::metrics::outbox_sent(row.created_at);
                        answer(&row.mq_type);
                        let t = tokens.of(&row);
                        match sent.iter_mut().find(|(k, _)| *k == t) {
                            Some((_, ids)) => ids.push(row.id),
                            None => sent.push((t, vec![row.id])),
                        }
                    }
                    Err(e) if e.is_unavailable() => {
                        let t = tokens.of(&row);
                        let (_, held) = unavailable
                            .entry(row.mq_type.clone())
                            .or_insert_with(|| (e.to_string(), Vec::new()));
                        match held.iter_mut().find(|(k, _)| *k == t) {
                            Some((_, ids)) => ids.push(row.id),
                            None => held.push((t, vec![row.id])),
                        }
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
            for (t, ids) in sent {
                let mark = Mark {
                    token: tokens.get(t),
                    ids,
                };
                self.queue_mark(mark).await;
            }
            for (transport, (reason, held)) in unavailable {
                let wait = self.availability.failed(&transport, &reason);
                for (t, ids) in held {
                    self.release(&tokens.get(t), ids, &reason, wait).await;
                }
            }
            self.record_failures(failed).await;
            drop(spans);
        }
        .instrument(span)
        .await
    }

    /// The transport was unavailable: the rows are due again after the
    /// relay's backoff, their retries untouched.
    async fn release(&self, token: &str, ids: Vec<Uuid>, reason: &str, wait: Duration) {
        tracing::debug!(count = ids.len(), error = %reason, "outbox send not confirmed: transport unavailable");
        if let Err(e) =
            retry_storage(|| self.store.release(&ids, token, reason, millis(wait))).await
        {
            // They keep their lease and are sent again after it.
            tracing::warn!(error = %e, count = ids.len(), "could not give outbox rows back");
        }
        self.leases.forget(token, &ids);
    }

    async fn record_failures(&self, failed: Vec<(LocalMessage, String)>) {
        if failed.is_empty() {
            return;
        }
        let max = i64::from(self.retry.max_retry_count);
        // Rows failing alike under one lease share one update.
        let mut groups: HashMap<(String, i32, String), Vec<LocalMessage>> = HashMap::new();
        for (row, reason) in failed {
            tracing::warn!(event_id = %row.id, event_name = %row.message_type, attempt = row.retry_count + 1, error = %reason, "outbox send failed");
            let token = row.locked_by.clone().unwrap_or_default();
            groups
                .entry((token, row.retry_count, reason))
                .or_default()
                .push(row);
        }
        for ((token, retry_count, reason), rows) in groups {
            let token = token.as_str();
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

/// Row ids by lease token (an index into [`Tokens`]).
type ByLease = Vec<(usize, Vec<Uuid>)>;

/// A batch of rows handed to its transports, its results to come.
pub(super) struct Started {
    sending: Vec<LocalMessage>,
    failed: Vec<(LocalMessage, String)>,
    /// The rows' publish spans, open until their results are in.
    spans: Vec<tracing::Span>,
    pending: crate::transport::PendingResults,
    span: tracing::Span,
}

/// The lease tokens of one dispatched batch (the rows' `locked_by`), each
/// held once, by index.
#[derive(Default)]
struct Tokens(Vec<Arc<str>>);

impl Tokens {
    fn of(&mut self, row: &LocalMessage) -> usize {
        let t = row.locked_by.as_deref().unwrap_or_default();
        match self.0.iter().position(|k| &**k == t) {
            Some(i) => i,
            None => {
                self.0.push(Arc::from(t));
                self.0.len() - 1
            }
        }
    }

    fn get(&self, i: usize) -> Arc<str> {
        self.0[i].clone()
    }
}
