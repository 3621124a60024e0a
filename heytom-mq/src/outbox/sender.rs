//! The post-commit path of the relay: committed rows go straight from the
//! commit to one sender per transport, which sends them under their commit
//! lease while it is young (no statement before the publish), or takes them
//! over with a fenced update first when it is not.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::lease::token;
use super::relay::{Relay, Started, COMMIT_QUEUE};
use super::LocalMessage;

/// Committed rows waiting for the post-commit senders, at most; rows that
/// do not fit keep their commit lease and are sent by a scanner after it.
const MAX_QUEUED_ROWS: usize = 20_000;
/// Rows merged into one send after commits arrive together.
const DISPATCH_BATCH: usize = 1000;
/// Batches one post-commit sender has handed to its transport and waits
/// for the results of, at most: with RabbitMQ's confirms taking a disk
/// write, the next commits need not wait for the previous ones' confirms
/// (8 writers: p50 commit to confirm halved, `bench_outbox`).
const SENDS_IN_FLIGHT: usize = 8;
/// Batches waiting at one transport's post-commit sender, at most (their
/// rows count against the relay's row bound until the sender takes them).
const SENDER_QUEUE: usize = COMMIT_QUEUE;
/// A commit lease is sent under as it is while less than this part of it
/// has passed since the row's insert was sent (the lease runs from the
/// insert, on the database's clock, so at least the rest of it is left);
/// the lease keeper renews it within a third of the lease from then on.
/// Older rows are taken over with a fenced update first.
const YOUNG_LEASE_PART: u32 = 6;

/// Rows of one or more commits, and when the first of their inserts was
/// sent to the database (their commit leases started after that).
pub(crate) struct Committed {
    pub(crate) rows: Vec<LocalMessage>,
    pub(crate) since: Instant,
}

impl Committed {
    /// Adds another commit's rows; the batch is as old as its oldest rows.
    fn merge(&mut self, other: Committed) {
        self.rows.extend(other.rows);
        self.since = self.since.min(other.since);
    }
}

/// The post-commit senders of a relay, one per transport (by the rows'
/// `MQType`), so a broker that hangs holds up its own rows only. A commit
/// hands its rows straight to its transport's sender (started on first
/// use): one task wakes per commit, not a router and then a sender. Closed
/// when the relay stops.
pub(crate) struct Senders {
    by_transport: Mutex<Option<HashMap<String, SenderTask>>>,
    /// Rows handed to a sender and not taken by it yet, bounded by
    /// `MAX_QUEUED_ROWS` over every sender's queue.
    queued: Arc<AtomicUsize>,
}

struct SenderTask {
    queue: mpsc::Sender<Committed>,
    task: JoinHandle<()>,
}

impl Senders {
    pub(crate) fn new() -> Self {
        Senders {
            by_transport: Mutex::new(Some(HashMap::new())),
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Hands one commit's rows to the senders of their transports. Rows
    /// stay counted in `queued` until their sender takes them; more than
    /// `MAX_QUEUED_ROWS` waiting (the broker is slower than the commits), a
    /// sender whose queue is full, or a relay that has stopped leaves them
    /// to the scanner (they keep their commit lease).
    pub(crate) fn hand(&self, relay: &Arc<Relay>, batch: Committed) {
        let queued = &self.queued;
        let n = batch.rows.len();
        if queued.fetch_add(n, Ordering::AcqRel) + n > MAX_QUEUED_ROWS {
            queued.fetch_sub(n, Ordering::AcqRel);
            tracing::debug!(
                count = n,
                "outbox send queue full: rows left to the scanner"
            );
            return;
        }
        let since = batch.since;
        let mut senders = self.by_transport.lock().unwrap_or_else(|p| p.into_inner());
        let Some(senders) = senders.as_mut() else {
            queued.fetch_sub(n, Ordering::AcqRel);
            tracing::debug!(count = n, "outbox relay stopped: rows left to the scanner");
            return;
        };
        // Usually every row goes to one transport: no regrouping then.
        let one = batch.rows.first().map(|r| r.mq_type.as_str());
        if batch.rows.iter().all(|r| Some(r.mq_type.as_str()) == one) {
            self.hand_to(senders, relay, batch.rows, since);
            return;
        }
        let mut by: HashMap<String, Vec<LocalMessage>> = HashMap::new();
        for r in batch.rows {
            match by.get_mut(r.mq_type.as_str()) {
                Some(rows) => rows.push(r),
                None => {
                    by.insert(r.mq_type.clone(), vec![r]);
                }
            }
        }
        for rows in by.into_values() {
            self.hand_to(senders, relay, rows, since);
        }
    }

    /// Queues rows of one transport at its sender, started on first use.
    fn hand_to(
        &self,
        senders: &mut HashMap<String, SenderTask>,
        relay: &Arc<Relay>,
        rows: Vec<LocalMessage>,
        since: Instant,
    ) {
        let n = rows.len();
        let transport = rows.first().map_or("", |r| r.mq_type.as_str());
        // Looked up by name first: no key made per commit.
        let sender = match senders.get(transport) {
            Some(s) => s,
            None => senders.entry(transport.to_owned()).or_insert_with(|| {
                let (queue, rx) = mpsc::channel(SENDER_QUEUE);
                let task = tokio::spawn(relay.clone().send_loop(rx, self.queued.clone()));
                SenderTask { queue, task }
            }),
        };
        if sender.queue.try_send(Committed { rows, since }).is_err() {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            tracing::debug!(count = n, "outbox sender busy: rows left to the scanner");
        }
    }

    /// Stops taking commits; each sender sends what it holds, then ends.
    pub(crate) async fn close(&self) {
        let senders = self
            .by_transport
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        // Closing the queues lets each sender finish what it holds.
        let tasks: Vec<JoinHandle<()>> = senders.into_values().map(|s| s.task).collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Relay {
    /// One transport's post-commit sender: merges what is queued into
    /// batches and hands them to the transport in commit order. A batch's
    /// confirms are awaited while the next batches are handed over (up to
    /// [`SENDS_IN_FLIGHT`] batches at once), which keeps the order: each
    /// batch is handed over after the one before it is.
    async fn send_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Committed>,
        queued: Arc<AtomicUsize>,
    ) {
        let mut in_flight = FuturesUnordered::new();
        loop {
            tokio::select! {
                // Results first: they free a place for the next batch.
                biased;
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                got = rx.recv(), if in_flight.len() < SENDS_IN_FLIGHT => {
                    let Some(mut batch) = got else { break };
                    queued.fetch_sub(batch.rows.len(), Ordering::AcqRel);
                    while batch.rows.len() < DISPATCH_BATCH {
                        match rx.try_recv() {
                            Ok(more) => {
                                queued.fetch_sub(more.rows.len(), Ordering::AcqRel);
                                batch.merge(more);
                            }
                            Err(_) => break,
                        }
                    }
                    let Committed { mut rows, since } = batch;
                    while !rows.is_empty() {
                        let rest = rows.split_off(rows.len().min(DISPATCH_BATCH));
                        if let Some(started) = self.start_committed(rows, since).await {
                            in_flight.push(self.finish_dispatch(started));
                        }
                        rows = rest;
                    }
                }
            }
        }
        while in_flight.next().await.is_some() {}
    }

    /// Sends committed rows: under their commit lease while it is young
    /// (held by the lease keeper from now on), otherwise after taking them
    /// over from it with a fenced update (a row a scanner took meanwhile is
    /// left to it). While the transport is unavailable, leaves them to a
    /// scanner. Returns the batch handed to its transport, its results to
    /// come, if any row was sent.
    async fn start_committed(
        &self,
        mut rows: Vec<LocalMessage>,
        since: Instant,
    ) -> Option<Started> {
        // Rows of a transport that is down wait for the scanner (after their
        // commit lease); the others go at once.
        let before = rows.len();
        rows.retain(|r| self.availability.wait(&r.mq_type).is_zero() && r.locked_by.is_some());
        if rows.len() < before {
            tracing::debug!(
                count = before - rows.len(),
                "transport unavailable: committed rows left to the scanner"
            );
        }
        if rows.is_empty() {
            return None;
        }
        // The commit leases of these rows, each with its rows' ids.
        let mut leases: Vec<(Arc<str>, Vec<Uuid>)> = Vec::new();
        for r in &rows {
            let t = r.locked_by.as_deref().unwrap_or_default();
            match leases.iter_mut().find(|(k, _)| &**k == t) {
                Some((_, ids)) => ids.push(r.id),
                None => leases.push((Arc::from(t), vec![r.id])),
            }
        }
        let young = self.lease / YOUNG_LEASE_PART;
        if since.elapsed() < young.max(Duration::from_millis(1)) {
            for (t, ids) in &leases {
                self.leases.hold(t, ids);
            }
            return Some(self.start_dispatch(rows, "commit").await);
        }
        let token = token();
        // Sets: a batch is up to 1000 rows, looked up once per row.
        let mut got = HashSet::with_capacity(rows.len());
        for (from, ids) in &leases {
            self.leases.hold(&token, ids);
            match self
                .store
                .take_over(ids, from, &token, self.lease_ms())
                .await
            {
                Ok(g) => {
                    let g: HashSet<Uuid> = g.into_iter().collect();
                    if g.len() < ids.len() {
                        let lost: Vec<Uuid> =
                            ids.iter().filter(|id| !g.contains(id)).copied().collect();
                        self.leases.forget(&token, &lost);
                        tracing::debug!(
                            count = lost.len(),
                            "committed rows already taken by a scanner"
                        );
                    }
                    got.extend(g);
                }
                Err(e) => {
                    self.leases.forget(&token, ids);
                    tracing::warn!(error = %e, count = ids.len(), "could not lease committed rows; a scanner sends them after the commit lease");
                }
            }
        }
        rows.retain(|r| got.contains(&r.id));
        for r in &mut rows {
            r.locked_by = Some(token.to_string());
        }
        if rows.is_empty() {
            return None;
        }
        Some(self.start_dispatch(rows, "commit").await)
    }
}
