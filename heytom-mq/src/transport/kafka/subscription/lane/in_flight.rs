//! The bound on messages fetched but not yet finished: a counter of free
//! slots the poll thread takes from in bulk (one atomic operation per poll
//! batch, not a lock per message) and the lanes give back one by one as
//! their messages finish (one atomic add; a wake-up only while the poll
//! thread waits).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::super::{lock, MAX_BATCH};

pub(in crate::transport::kafka::subscription) struct InFlight {
    free: AtomicUsize,
    /// The poll thread waits for slots: only then is a release worth a syscall.
    waiting: AtomicBool,
    lock: Mutex<()>,
    freed: Condvar,
    /// A waiting poll thread is woken once this many slots are free, so that
    /// it fetches a batch rather than one message per freed slot.
    low_water: usize,
}

impl InFlight {
    pub(in crate::transport::kafka::subscription) fn new(n: usize) -> Arc<Self> {
        Arc::new(InFlight {
            free: AtomicUsize::new(n),
            waiting: AtomicBool::new(false),
            lock: Mutex::new(()),
            freed: Condvar::new(),
            low_water: (n / 2).clamp(1, MAX_BATCH),
        })
    }

    /// Takes up to `max` free slots at once; how many it took.
    pub(super) fn take(&self, max: usize) -> usize {
        let mut free = self.free.load(Ordering::Acquire);
        loop {
            let n = free.min(max);
            if n == 0 {
                return 0;
            }
            match self.free.compare_exchange_weak(
                free,
                free - n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return n,
                Err(now) => free = now,
            }
        }
    }

    /// Waits up to `wait` while no slot is free and fewer than the
    /// low-water mark are (returns at once when one is free).
    pub(super) fn wait(&self, wait: Duration) {
        if self.free.load(Ordering::Acquire) > 0 || wait.is_zero() {
            return;
        }
        let guard = lock(&self.lock);
        // SeqCst pairs with `release`: either it sees the flag, or this sees its slots.
        self.waiting.store(true, Ordering::SeqCst);
        let guard = self
            .freed
            .wait_timeout_while(guard, wait, |_| {
                self.free.load(Ordering::SeqCst) < self.low_water
            })
            .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        self.waiting.store(false, Ordering::SeqCst);
        drop(guard);
    }

    /// Gives `n` slots back.
    pub(super) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let free = self.free.fetch_add(n, Ordering::SeqCst) + n;
        if free >= self.low_water && self.waiting.load(Ordering::SeqCst) {
            // Taking the lock orders this after the waiter's check.
            let _guard = lock(&self.lock);
            self.freed.notify_one();
        }
    }

    /// Whether at least the low-water mark of slots is free, counting
    /// `extra` slots the caller holds.
    pub(super) fn roomy(&self, extra: usize) -> bool {
        self.free.load(Ordering::Acquire) + extra >= self.low_water
    }
}

/// Finished messages whose slots go back together: one atomic add on the
/// counter the poll thread takes from, not one per message.
const RELEASE_EVERY: usize = 32;

/// Slots held for the messages of one batch. Finished (or dropped)
/// messages give theirs back every [`RELEASE_EVERY`], at [`Slots::flush`]
/// (before the lane waits for a handler) and on drop, with whatever is left.
pub(super) struct Slots {
    in_flight: Arc<InFlight>,
    held: usize,
    /// Of `held`, the slots of messages already finished.
    finished: usize,
}

impl Slots {
    pub(super) fn new(in_flight: &Arc<InFlight>, held: usize) -> Self {
        Slots {
            in_flight: in_flight.clone(),
            held,
            finished: 0,
        }
    }

    /// One message of the batch is done with.
    pub(super) fn finish_one(&mut self) {
        if self.finished < self.held {
            self.finished += 1;
            if self.finished >= RELEASE_EVERY {
                self.flush();
            }
        }
    }

    /// Gives back the slots of the messages finished so far.
    pub(super) fn flush(&mut self) {
        if self.finished > 0 {
            self.held -= self.finished;
            self.in_flight.release(self.finished);
            self.finished = 0;
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.in_flight.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_in_bulk_and_come_back() {
        let f = InFlight::new(4);
        assert_eq!(f.take(3), 3);
        assert_eq!(f.take(3), 1);
        assert_eq!(f.take(3), 0);
        let mut s = Slots::new(&f, 4);
        s.finish_one();
        assert_eq!(f.take(10), 0, "finished slots go back together");
        s.flush();
        assert_eq!(f.take(10), 1);
        f.release(1);
        s.finish_one();
        drop(s);
        assert_eq!(f.take(10), 4);
    }

    #[test]
    fn finished_slots_go_back_every_release_every() {
        let n = RELEASE_EVERY * 2 + 3;
        let f = InFlight::new(n);
        assert_eq!(f.take(n), n);
        let mut s = Slots::new(&f, n);
        for _ in 0..RELEASE_EVERY - 1 {
            s.finish_one();
        }
        assert_eq!(f.take(n), 0);
        s.finish_one();
        assert_eq!(f.take(n), RELEASE_EVERY);
        // More finished than held gives back no more than held.
        for _ in 0..n {
            s.finish_one();
        }
        drop(s);
        assert_eq!(f.take(n), n - RELEASE_EVERY);
    }

    #[test]
    fn a_waiting_poller_wakes_when_enough_slots_free() {
        let f = InFlight::new(4);
        assert_eq!(f.take(4), 4);
        let g = f.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            g.release(2);
        });
        f.wait(Duration::from_secs(30));
        assert_eq!(f.take(4), 2);
        t.join().unwrap();
    }
}
