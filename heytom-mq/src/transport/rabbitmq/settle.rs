//! Settling the deliveries of one consumer channel: every ack and nack of
//! the channel goes out from one task, in the order it decides them, and
//! the acks of a run of handled deliveries with consecutive delivery tags
//! go out as one `basic.ack` with `multiple` set: one frame, one write and
//! one broker operation for the run instead of one per message.
//!
//! A delivery is acknowledged only once it is handled (or dead-lettered):
//! `multiple` covers a tag only when every tag up to it is settled, and a
//! delivery handed back is nacked on its own before any `multiple` ack can
//! pass it. Handled deliveries waiting behind a slower one are held (their
//! prefetch slot too) until it settles, at most half the prefetch of them:
//! beyond that they are acked one by one, so one slow handler never
//! starves the others of prefetch.
//!
//! Delivery tags are the channel's own (1, 2, 3, … in delivery order; one
//! consumer per channel). A tag never seen (a delivery the client lost)
//! only stops the runs: the deliveries after it are then acked one by one.

use std::collections::BTreeMap;
use std::sync::Arc;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::connection::describe;

/// What to tell the broker about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Handled (or dead-lettered): acknowledge.
    Ack,
    /// Hand it back to the queue: nack with requeue.
    Requeue,
}

struct Settled {
    tag: u64,
    how: Settle,
    /// The delivery's prefetch slot, freed once its ack / nack is written.
    slot: OwnedSemaphorePermit,
}

/// The sending side, one clone per delivery in flight (and the consume
/// loop's); the settling task ends when every clone is gone.
#[derive(Clone)]
pub(crate) struct Settler {
    tx: mpsc::UnboundedSender<Settled>,
}

impl Settler {
    /// Starts the settling task of `channel`; `prefetch` bounds how many
    /// handled deliveries may wait for a run to close.
    pub(crate) fn start(channel: Arc<Channel>, queue: String, prefetch: u16) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Runs {
            covered: 0,
            waiting: BTreeMap::new(),
            slots: Vec::new(),
            hold: usize::from(prefetch / 2),
        };
        tokio::spawn(settle_all(channel, queue, rx, state));
        Settler { tx }
    }

    /// A delivery taken from the channel: settle it through the returned
    /// value; dropped unsettled (a panic), it is handed back.
    pub(crate) fn pending(&self, tag: u64, slot: OwnedSemaphorePermit) -> Pending {
        Pending {
            tag,
            slot: Some(slot),
            tx: self.tx.clone(),
        }
    }
}

/// A delivery not settled yet.
pub(crate) struct Pending {
    tag: u64,
    slot: Option<OwnedSemaphorePermit>,
    tx: mpsc::UnboundedSender<Settled>,
}

impl Pending {
    pub(crate) fn settle(mut self, how: Settle) {
        self.send(how);
    }

    fn send(&mut self, how: Settle) {
        if let Some(slot) = self.slot.take() {
            // The task is gone only with the runtime: the channel closes
            // with it and the broker requeues the delivery.
            let _ = self.tx.send(Settled {
                tag: self.tag,
                how,
                slot,
            });
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.send(Settle::Requeue);
    }
}

/// The frames one round of settlements sends, in this order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Frames {
    /// Nacks with requeue, one tag each.
    requeue: Vec<u64>,
    /// Acks of one tag each (handled deliveries held too long behind a gap).
    single: Vec<u64>,
    /// One ack with `multiple` up to this tag.
    up_to: Option<u64>,
}

/// The settling state of one channel.
struct Runs {
    /// Every tag up to this one is settled on the broker.
    covered: u64,
    /// Tags above `covered`: `true` handled and not acked yet, `false`
    /// already settled alone (a nack, or an ack of one tag).
    waiting: BTreeMap<u64, bool>,
    /// Slots of the tags in `waiting` not acked yet, freed with their ack.
    slots: Vec<(u64, OwnedSemaphorePermit)>,
    /// How many handled deliveries may wait behind a gap.
    hold: usize,
}

impl Runs {
    /// Takes in a batch of settlements; returns the frames to send and the
    /// slots those frames free.
    fn take(&mut self, batch: Vec<Settled>) -> (Frames, Vec<OwnedSemaphorePermit>) {
        let mut frames = Frames::default();
        let mut freed = Vec::new();
        for s in batch {
            match s.how {
                Settle::Requeue => {
                    frames.requeue.push(s.tag);
                    self.waiting.insert(s.tag, false);
                    freed.push(s.slot);
                }
                Settle::Ack => {
                    self.waiting.insert(s.tag, true);
                    self.slots.push((s.tag, s.slot));
                }
            }
        }
        // The run from the first unsettled tag on.
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.covered + 1 {
                break;
            }
            let (tag, to_ack) = entry.remove_entry();
            if to_ack {
                frames.up_to = Some(tag);
            }
            self.covered = tag;
        }
        let held = self.waiting.values().filter(|to_ack| **to_ack).count();
        if held > self.hold {
            for (tag, to_ack) in self.waiting.iter_mut() {
                if *to_ack {
                    frames.single.push(*tag);
                    *to_ack = false;
                }
            }
        }
        let covered = self.covered;
        let mut i = 0;
        while i < self.slots.len() {
            let tag = self.slots[i].0;
            if tag <= covered || self.waiting.get(&tag) == Some(&false) {
                freed.push(self.slots.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        (frames, freed)
    }
}

async fn settle_all(
    channel: Arc<Channel>,
    queue: String,
    mut rx: mpsc::UnboundedReceiver<Settled>,
    mut runs: Runs,
) {
    let mut batch = Vec::new();
    // Settlements that came while the previous frames were being written
    // go out together.
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let (frames, freed) = runs.take(std::mem::take(&mut batch));
        let mut sent = Ok(());
        for tag in frames.requeue {
            let nack = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            sent = sent.and(channel.basic_nack(tag, nack).await);
        }
        for tag in frames.single {
            sent = sent.and(channel.basic_ack(tag, BasicAckOptions::default()).await);
        }
        if let Some(tag) = frames.up_to {
            sent = sent.and(
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await,
            );
        }
        if let Err(e) = sent {
            // The channel is gone; the broker redelivers what it held.
            tracing::debug!(%queue, error = %describe(&e), "ack/nack not sent; the messages will be redelivered");
        }
        drop(freed);
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::Semaphore;

    use super::*;

    fn settled(tag: u64, how: Settle, slots: &Arc<Semaphore>) -> Settled {
        Settled {
            tag,
            how,
            slot: slots.clone().try_acquire_owned().expect("a slot"),
        }
    }

    fn runs(hold: usize) -> Runs {
        Runs {
            covered: 0,
            waiting: BTreeMap::new(),
            slots: Vec::new(),
            hold,
        }
    }

    #[test]
    fn a_run_is_acked_once_every_tag_before_it_is_settled() {
        let slots = Arc::new(Semaphore::new(64));
        let mut r = runs(32);
        // 2 and 3 handled while 1 still runs: held.
        let (f, freed) = r.take(vec![
            settled(2, Settle::Ack, &slots),
            settled(3, Settle::Ack, &slots),
        ]);
        assert_eq!(f, Frames::default());
        assert!(freed.is_empty());
        // 1 handled: one ack up to 3 frees all three slots.
        let (f, freed) = r.take(vec![settled(1, Settle::Ack, &slots)]);
        assert_eq!(f.up_to, Some(3));
        assert_eq!(freed.len(), 3);
        // 4 handed back, 5 handled: the nack first, then 5 alone in its run.
        let (f, freed) = r.take(vec![
            settled(5, Settle::Ack, &slots),
            settled(4, Settle::Requeue, &slots),
        ]);
        assert_eq!(f.requeue, vec![4]);
        assert_eq!(f.up_to, Some(5));
        assert_eq!(freed.len(), 2);
        // a run ending in a hand-back is acked up to its last handled tag
        let (f, _) = r.take(vec![
            settled(6, Settle::Ack, &slots),
            settled(7, Settle::Requeue, &slots),
        ]);
        assert_eq!((f.requeue, f.up_to), (vec![7], Some(6)));
        let (f, _) = r.take(vec![settled(8, Settle::Requeue, &slots)]);
        assert_eq!((f.requeue, f.up_to), (vec![8], None));
        assert_eq!(r.covered, 8);
        assert!(r.waiting.is_empty() && r.slots.is_empty());
    }

    #[test]
    fn deliveries_held_behind_a_slow_one_are_acked_alone_past_the_hold() {
        let slots = Arc::new(Semaphore::new(64));
        let mut r = runs(2);
        let (f, _) = r.take(vec![
            settled(2, Settle::Ack, &slots),
            settled(3, Settle::Ack, &slots),
        ]);
        assert_eq!(f, Frames::default());
        // a third behind tag 1: all three go alone, their slots freed
        let (f, freed) = r.take(vec![settled(4, Settle::Ack, &slots)]);
        assert_eq!(f.single, vec![2, 3, 4]);
        assert_eq!(f.up_to, None);
        assert_eq!(freed.len(), 3);
        // 5 waits again; 1 closes the run: ack up to 1 alone would leave 5
        // waiting, so the run is 1..=5 and the multiple ack names 5 (2..4
        // are no longer outstanding on the broker).
        let (f, _) = r.take(vec![settled(5, Settle::Ack, &slots)]);
        assert_eq!(f, Frames::default());
        let (f, freed) = r.take(vec![settled(1, Settle::Ack, &slots)]);
        assert_eq!((f.single, f.up_to), (vec![], Some(5)));
        assert_eq!(freed.len(), 2);
        assert_eq!(r.covered, 5);
    }

    #[test]
    fn a_run_of_tags_settled_alone_sends_no_multiple_ack() {
        let slots = Arc::new(Semaphore::new(64));
        let mut r = runs(0);
        // hold 0: anything behind a gap is acked at once
        let (f, freed) = r.take(vec![settled(2, Settle::Ack, &slots)]);
        assert_eq!((f.single.clone(), f.up_to), (vec![2], None));
        assert_eq!(freed.len(), 1);
        // 1 closes the gap: only 1 itself is acked (2 is no longer outstanding)
        let (f, _) = r.take(vec![settled(1, Settle::Ack, &slots)]);
        assert_eq!((f.single, f.up_to), (vec![], Some(1)));
        assert_eq!(r.covered, 2);
    }

    #[test]
    fn a_pending_delivery_dropped_unsettled_is_handed_back() {
        let slots = Arc::new(Semaphore::new(1));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let pending = Pending {
            tag: 7,
            slot: Some(slots.clone().try_acquire_owned().unwrap()),
            tx,
        };
        drop(pending);
        let s = rx.try_recv().expect("a settlement");
        assert_eq!((s.tag, s.how), (7, Settle::Requeue));
    }
}
