//! One consumer group's queue: ordered lanes per partition key, taken by
//! the group's workers a few messages at a time.
//!
//! A lane is held by one worker while it handles messages of it, so the
//! messages of one key are handled in order. Unkeyed messages spread over
//! the lanes; a worker takes the oldest message of a lane that is free or
//! that it holds, so one worker takes messages in arrival order, as from a
//! queue. Under a deep queue a worker takes a run of messages at once (one
//! lock, one wake-up for many); under a shallow one, one at a time, so that
//! slow handlers still run side by side.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::dispatch::Incoming;

/// Lanes per group: messages with one partition key share a lane and are
/// handled in order; messages without a key spread over all lanes.
pub(super) const LANES: usize = 16;
/// The most messages a worker takes at once.
const MAX_RUN: usize = 128;

pub(super) struct Group {
    state: Mutex<GroupState>,
    pub(super) notify: Notify,
}

struct GroupState {
    /// Messages with their arrival number, per lane.
    lanes: Vec<VecDeque<(u64, Incoming)>>,
    busy: [bool; LANES],
    next_seq: u64,
    next_lane: usize,
    /// Messages waiting in all lanes.
    len: usize,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the queues are still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lane of a partition key (`None`: the next lane in turn).
pub(super) fn key_lane(key: Option<&str>) -> Option<usize> {
    key.map(|k| {
        let mut h = DefaultHasher::new();
        k.hash(&mut h);
        (h.finish() % LANES as u64) as usize
    })
}

impl Group {
    pub(super) fn new() -> Self {
        Group {
            state: Mutex::new(GroupState {
                lanes: (0..LANES).map(|_| VecDeque::new()).collect(),
                busy: [false; LANES],
                next_seq: 0,
                next_lane: 0,
                len: 0,
            }),
            notify: Notify::new(),
        }
    }

    /// Appends messages (`lane`: from [`key_lane`]) in order, under one lock.
    pub(super) fn push_all(&self, msgs: impl IntoIterator<Item = (Option<usize>, Incoming)>) {
        let mut st = lock(&self.state);
        let mut pushed = false;
        for (lane, msg) in msgs {
            let lane = lane.unwrap_or_else(|| {
                let l = st.next_lane;
                st.next_lane = (l + 1) % LANES;
                l
            });
            let seq = st.next_seq;
            st.next_seq += 1;
            st.lanes[lane].push_back((seq, msg));
            st.len += 1;
            pushed = true;
        }
        drop(st);
        if pushed {
            self.notify.notify_one();
        }
    }

    pub(super) fn len(&self) -> usize {
        lock(&self.state).len
    }
}

/// Messages a worker took, in the order it handles them, with the lanes it
/// holds. Dropped, it gives back what was not settled (handed back, or its
/// worker aborted when a stop outlasted its deadline) to the front of its
/// lane, in order, and frees the lanes.
pub(super) struct Run {
    group: Arc<Group>,
    msgs: VecDeque<(usize, u64, Incoming)>,
    held: [bool; LANES],
}

impl Run {
    /// The next messages for one of `workers` workers, if any is free to
    /// take; and whether more are left for another worker.
    pub(super) fn take(group: &Arc<Group>, workers: usize) -> Option<(Self, bool)> {
        let mut st = lock(&group.state);
        let most = (st.len / workers.max(1)).clamp(1, MAX_RUN);
        let mut msgs = VecDeque::new();
        let mut held = [false; LANES];
        // The arrival number at the front of each lane this worker may take
        // from (u64::MAX: none); only the lane just taken from changes.
        let mut fronts = [u64::MAX; LANES];
        for (i, front) in fronts.iter_mut().enumerate() {
            if !st.busy[i] {
                if let Some((seq, _)) = st.lanes[i].front() {
                    *front = *seq;
                }
            }
        }
        while msgs.len() < most {
            let (lane, &seq) = fronts
                .iter()
                .enumerate()
                .min_by_key(|(_, seq)| **seq)
                .expect("LANES > 0");
            if seq == u64::MAX {
                break;
            }
            let Some((seq, m)) = st.lanes[lane].pop_front() else {
                break;
            };
            fronts[lane] = st.lanes[lane].front().map_or(u64::MAX, |(s, _)| *s);
            st.len -= 1;
            st.busy[lane] = true;
            held[lane] = true;
            msgs.push_back((lane, seq, m));
        }
        if msgs.is_empty() {
            return None;
        }
        let more = (0..LANES).any(|i| !st.busy[i] && !st.lanes[i].is_empty());
        // Built once the lock is released: dropping a run takes the lock.
        drop(st);
        let run = Run {
            group: group.clone(),
            msgs,
            held,
        };
        Some((run, more))
    }

    /// The message to handle now.
    pub(super) fn current(&self) -> Option<&Incoming> {
        self.msgs.front().map(|(_, _, m)| m)
    }

    /// The current message is done with: acknowledged or dead-lettered.
    pub(super) fn settle(&mut self) {
        self.msgs.pop_front();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let mut st = lock(&self.group.state);
        while let Some((lane, seq, m)) = self.msgs.pop_back() {
            st.lanes[lane].push_front((seq, m));
            st.len += 1;
        }
        let mut more = false;
        for lane in 0..LANES {
            if self.held[lane] {
                st.busy[lane] = false;
                more |= !st.lanes[lane].is_empty();
            }
        }
        drop(st);
        if more {
            self.group.notify.notify_one();
        }
    }
}
