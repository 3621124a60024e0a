//! Counts the tracing events with a given message on the current thread
//! (a current-thread test runtime: every task the test drives runs there).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// The events with `message` seen while the guard lives.
pub struct LogCount {
    seen: Arc<AtomicUsize>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCount {
    /// Counts, on this thread, the events whose message is `message`, at
    /// every level (DEBUG included).
    pub fn of(message: &'static str) -> Self {
        let seen = Arc::new(AtomicUsize::new(0));
        let layer = Counter {
            message,
            seen: seen.clone(),
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        LogCount {
            seen,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn count(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

struct Counter {
    message: &'static str,
    seen: Arc<AtomicUsize>,
}

struct Message<'a>(&'a str, bool);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}") == self.0 {
            self.1 = true;
        }
    }
}

impl<S: Subscriber> Layer<S> for Counter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut m = Message(self.message, false);
        event.record(&mut m);
        if m.1 {
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
    }
}
