//! Event ids: UUID v7 (RFC 9562), made for every message sent.
//!
//! `Uuid::now_v7` keeps its ordering state behind a process-wide mutex and
//! works in 128-bit nanoseconds; this generator keeps the same guarantee
//! (ids made in one process are strictly increasing, whichever thread or
//! task makes them) with one atomic word: the millisecond in the upper bits
//! and a counter below it, started at a random value each millisecond
//! (RFC 9562 section 6.2, method 1, with a 22-bit counter). The rest of the
//! id is random.
//!
//! Layout (most significant first): 48 bits of Unix milliseconds, version
//! 7, 12 counter bits, the variant, the 10 low counter bits, 52 random
//! bits. Two ids of this process never collide (the millisecond and counter
//! are never repeated); ids of other processes differ by the random counter
//! start and the random bits, as the RFC intends.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// Counter bits below the millisecond in [`STATE`].
const COUNTER_BITS: u32 = 22;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;
/// A new millisecond starts its counter below half of its range, so it has
/// at least 2^21 ids before it borrows the next millisecond.
const SEED_MASK: u64 = COUNTER_MASK >> 1;

/// The last id's millisecond and counter (`ms << 22 | counter`).
static STATE: AtomicU64 = AtomicU64::new(0);

/// A fresh UUID v7 event id: later than every id this process made before.
pub(crate) fn new_event_id() -> Uuid {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    id_at(ms)
}

/// A fresh event id for an event made at `ms` (Unix milliseconds, from a
/// clock read the caller has anyway): later than every id before it.
pub(crate) fn event_id_at(ms: i64) -> Uuid {
    id_at(u64::try_from(ms).unwrap_or(0))
}

fn id_at(ms: u64) -> Uuid {
    let (seq, random) = next(ms);
    Uuid::from_u128(layout(seq, random))
}

/// Advances the shared state for an id made at `ms`: a later millisecond
/// starts a new random counter; the same one (or a clock that went back)
/// counts on, into the next millisecond if the counter runs over. Returns
/// the state taken and 64 random bits.
fn next(ms: u64) -> (u64, u64) {
    let random = random_u64();
    let mut current = STATE.load(Ordering::Relaxed);
    loop {
        let taken = if ms > current >> COUNTER_BITS {
            (ms << COUNTER_BITS) | (random & SEED_MASK)
        } else {
            current + 1
        };
        match STATE.compare_exchange_weak(current, taken, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return (taken, random),
            Err(now) => current = now,
        }
    }
}

/// The id's 128 bits from the state taken and random bits.
fn layout(seq: u64, random: u64) -> u128 {
    let ms = (seq >> COUNTER_BITS) as u128 & ((1 << 48) - 1);
    let counter = (seq & COUNTER_MASK) as u128;
    let version = 0x7u128 << 76;
    let rand_a = (counter >> 10) << 64;
    let variant = 0b10u128 << 62;
    let rand_b = ((counter & 0x3ff) << 52) | (random >> 12) as u128;
    (ms << 80) | version | rand_a | variant | rand_b
}

/// wyrand, one state per thread, seeded from the operating system's
/// randomness (std's `RandomState` keys) the first time a thread makes an
/// id.
fn random_u64() -> u64 {
    thread_local! {
        static SEED: Cell<u64> = const { Cell::new(0) };
    }
    SEED.with(|seed| {
        let mut s = seed.get();
        if s == 0 {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x6865_7974_6f6d);
            s = h.finish() | 1;
        }
        s = s.wrapping_add(0xa076_1d64_78bd_642f);
        seed.set(s);
        let t = (s as u128).wrapping_mul((s ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    fn ms_of(id: Uuid) -> u64 {
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        secs * 1000 + u64::from(nanos) / 1_000_000
    }

    #[test]
    fn ids_are_version_7_in_time_and_never_repeat_across_threads() {
        let before = now_ms();
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..20_000).map(|_| new_event_id()).collect::<Vec<_>>()))
            .collect();
        let per_thread: Vec<Vec<Uuid>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let after = now_ms();
        for ids in &per_thread {
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "a thread's ids went back"
            );
        }
        let mut all: Vec<Uuid> = per_thread.into_iter().flatten().collect();
        for id in &all {
            assert_eq!(id.get_version_num(), 7, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
            // The counter may borrow a millisecond or two, never more here.
            let ms = ms_of(*id);
            assert!(
                ms >= before && ms <= after + 2,
                "{id}: {ms} not in {before}..={after}"
            );
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "an id was made twice");
    }

    #[test]
    fn an_id_made_after_another_threads_id_is_later() {
        // Two threads hand the last id back and forth, each making the
        // next one: every id must be later than the one it was handed
        // (state kept per thread would start its own counter below it).
        let (to_b, from_a) = std::sync::mpsc::channel::<Uuid>();
        let (to_a, from_b) = std::sync::mpsc::channel::<Uuid>();
        let b = std::thread::spawn(move || {
            while let Ok(prev) = from_a.recv() {
                let id = new_event_id();
                assert!(id > prev, "{id} made after {prev}");
                if to_a.send(id).is_err() {
                    break;
                }
            }
        });
        let mut prev = new_event_id();
        for _ in 0..20_000 {
            to_b.send(prev).unwrap();
            let theirs = from_b.recv().unwrap();
            let id = new_event_id();
            assert!(id > theirs, "{id} made after {theirs}");
            prev = id;
        }
        drop(to_b);
        b.join().unwrap();
    }

    #[test]
    fn an_id_made_for_a_time_carries_its_millisecond() {
        // (Not a time ahead of the clock: every later id of this test
        // process would count on from it.)
        let at = now_ms();
        let id = event_id_at(at as i64);
        // Another test's id made a moment later may have moved the state
        // on to the next millisecond already.
        assert!((at..=at + 2).contains(&ms_of(id)), "{id} for {at}");
        // Ids made now count on from it: the process's ids never go back.
        assert!(new_event_id() > id);
    }

    #[test]
    fn ids_made_one_after_the_other_increase_whatever_the_clock_says() {
        let first = new_event_id();
        // A clock far in the past (stepped back) counts on from the state.
        let (seq, r) = next(1);
        let stepped_back = Uuid::from_u128(layout(seq, r));
        assert!(stepped_back > first, "{stepped_back} after {first}");
        let then = new_event_id();
        assert!(then > stepped_back);
        assert!(ms_of(then) >= ms_of(first));
        // A counter that runs over borrows the next millisecond.
        let full = (5u64 << COUNTER_BITS) | COUNTER_MASK;
        let last = Uuid::from_u128(layout(full, u64::MAX));
        let over = Uuid::from_u128(layout(full + 1, 0));
        assert!(over > last);
        assert_eq!((over.get_version_num(), ms_of(over)), (7, 6));
    }
}
