//! What a transport provides to run the suite ([`Fixture`], [`Features`]),
//! the suite's event shape ([`Msg`], [`EventSet`]), the recorder handlers
//! write to ([`Probe`]), and the macros that instantiate the suite.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heytom_mq::{
    AppBuilder, Context, Event, EventHandler, HandlerError, Headers, RetryPolicy, RunningApp,
};
use tokio::sync::Notify;

/// How long a check waits for something before it fails instead of hanging.
/// Never an assertion about speed: a healthy run takes a fraction of it.
pub const WAIT: Duration = Duration::from_secs(60);

/// What a transport supports beyond the behaviour every transport has.
#[derive(Debug, Clone, Copy)]
pub struct Features {
    /// Events with one partition key are handled in order even with
    /// concurrent handlers (Kafka partitions, in-memory lanes). Without it
    /// ordering is checked on one consumer with concurrency 1.
    pub per_key_ordering: bool,
    /// Messages published while no consumer runs wait for the next start,
    /// and acknowledged ones are not delivered again.
    pub persistent: bool,
    /// The header that sets a message's priority, if the transport has priorities.
    pub priority_header: Option<&'static str>,
}

/// A message as it lies in a transport's dead-letter destination.
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// String headers (reserved `heytom-*` ones included).
    pub headers: BTreeMap<String, String>,
    /// The original body.
    pub body: Vec<u8>,
}

impl RawMessage {
    /// One header, or a failure naming the missing one.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("dead letter has no `{name}` header: {:?}", self.headers))
    }

    /// Whether the body contains `needle`.
    pub fn body_contains(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&self.body).contains(needle)
    }
}

/// One transport under test: everything the checks cannot write once.
#[allow(async_fn_in_trait)]
pub trait Fixture: Sized {
    /// The transport's instance of the suite's events and handlers.
    type Events: EventSet;

    /// Connects to the broker: `None` (after a notice) when it is
    /// unreachable, a panic when `HEYTOM_TEST_REQUIRE_SERVICES=1`.
    async fn setup() -> Option<Self>;

    /// What this transport supports.
    fn features(&self) -> Features;

    /// An `AppBuilder` with this transport configured, topology unique to
    /// this fixture. Several apps built from one fixture talk to each other.
    fn builder(&self) -> AppBuilder;

    /// Builds and starts an app, after clearing what earlier runs may have
    /// left in topology whose names are fixed at compile time.
    async fn start(&self, builder: AppBuilder) -> RunningApp;

    /// Publishes raw headers and body where events `E` travel, with the
    /// transport's own client, as a foreign producer would.
    async fn publish_raw<E: Event>(&self, headers: Headers, body: Vec<u8>);

    /// Waits for `want` messages matching `matches` in the dead-letter
    /// destination of `handler`'s subscription to `E`, and returns them.
    /// With `want == 0` it returns at once what matches now.
    async fn dead_letters<E: Event>(
        &self,
        handler: &str,
        want: usize,
        matches: impl Fn(&RawMessage) -> bool,
    ) -> Vec<RawMessage>;
}

/// The shape of every suite event: `{ run, key, n }`.
pub trait Msg: Event + Clone + std::fmt::Debug {
    /// A new event of run `run`.
    fn new(run: &str, key: &str, n: u32) -> Self;
    /// The run nonce.
    fn run(&self) -> &str;
    /// The partition key (where the event declares one) or any label.
    fn key(&self) -> &str;
    /// A sequence number.
    fn n(&self) -> u32;
}

/// One transport's event types, one per check, and the module its
/// `#[handler]`s live in.
pub trait EventSet {
    /// `module_path!()` of the transport module.
    const MODULE: &'static str;
    type RoundTrip: Msg;
    type Batch: Msg;
    type FanOut: Msg;
    type Job: Msg;
    type Flaky: Msg;
    type Doomed: Msg;
    type Strict: Msg;
    type Posting: Msg;
    type Slow: Msg;
    type Placed: Msg;
    type Shipped: Msg;
    type Stored: Msg;
    type Urgent: Msg;
    type Stubborn: Msg;
    type Explodes: Msg;
    type Lenient: Msg;
    type Yielding: Msg;
    type Stuck: Msg;
}

/// The handlers of one check: `discover_in` the check's sub-module.
pub fn handlers_of<F: Fixture>(check: &str) -> String {
    format!("{}::{check}", <F::Events as EventSet>::MODULE)
}

/// Retries quickly, so that retry and dead-letter checks are quick.
pub fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(max_attempts)
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(50))
}

/// Which app instance a handler runs in (competing consumers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who(pub &'static str);

/// Whether the `stubborn` handler fails (first app) or succeeds (second).
#[derive(Debug, Clone, Copy)]
pub struct Failing(pub bool);

/// Whether the `stuck` handler never returns (first app) or succeeds (second).
#[derive(Debug, Clone, Copy)]
pub struct Hang(pub bool);

/// One handler invocation, as a handler recorded it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// A label the handler chose (its name, or a step of it).
    pub label: &'static str,
    /// The event's key.
    pub key: String,
    /// The event's `n`.
    pub n: u32,
    /// The handler's context.
    pub ctx: Context,
    /// The app instance, when the handler takes `State<Who>`.
    pub who: Option<Who>,
}

/// A handler type (`EventHandler`) that records under a label, for
/// subscriptions registered with `HandlerEntry` (an explicit group, say).
pub struct Recorder {
    /// The probe it records to.
    pub probe: Probe,
    /// The label it records under.
    pub label: &'static str,
}

impl<E: Msg> EventHandler<E> for Recorder {
    async fn handle(&self, event: E, ctx: Context) -> Result<(), HandlerError> {
        if self.probe.mine(&event) {
            self.probe.record(self.label, &event, &ctx, None);
        }
        Ok(())
    }
}

/// Shared state of a check: its run nonce and what handlers saw.
#[derive(Clone)]
pub struct Probe {
    inner: Arc<ProbeInner>,
}

struct ProbeInner {
    run: String,
    seen: Mutex<Vec<Seen>>,
    changed: Notify,
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl Probe {
    /// A probe with a fresh run nonce.
    pub fn new() -> Self {
        Probe {
            inner: Arc::new(ProbeInner {
                run: uuid::Uuid::now_v7().simple().to_string(),
                seen: Mutex::new(Vec::new()),
                changed: Notify::new(),
            }),
        }
    }

    /// The run nonce.
    pub fn run(&self) -> &str {
        &self.inner.run
    }

    /// An event of this run.
    pub fn event<E: Msg>(&self, key: &str, n: u32) -> E {
        E::new(self.run(), key, n)
    }

    /// Whether an event belongs to this run (others are left over from
    /// earlier runs in topology with fixed names: handlers ack and ignore them).
    pub fn mine<E: Msg>(&self, event: &E) -> bool {
        event.run() == self.run()
    }

    /// Records a handler invocation.
    pub fn record<E: Msg>(&self, label: &'static str, event: &E, ctx: &Context, who: Option<Who>) {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen {
                label,
                key: event.key().to_owned(),
                n: event.n(),
                ctx: ctx.clone(),
                who,
            });
        self.inner.changed.notify_waiters();
    }

    /// Everything recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Everything recorded under `label`.
    pub fn seen_as(&self, label: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.label == label)
            .collect()
    }

    /// Waits until `cond` holds for what was recorded; fails after [`WAIT`].
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&[Seen]) -> bool) {
        if !self.holds_within(WAIT, cond).await {
            panic!(
                "timed out waiting for {what}; recorded: {:?}",
                self.seen()
                    .iter()
                    .map(|s| (s.label, &s.key, s.n))
                    .collect::<Vec<_>>()
            );
        }
    }

    /// Whether `cond` holds for what was recorded within `timeout`.
    pub async fn holds_within(&self, timeout: Duration, cond: impl Fn(&[Seen]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if cond(&self.seen()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// Waits until `n` invocations were recorded under `label`.
    pub async fn wait_for_count(&self, label: &str, n: usize) {
        self.wait_for(&format!("{n} x {label}"), |seen| {
            seen.iter().filter(|s| s.label == label).count() >= n
        })
        .await
    }
}

/// Declares the suite's events: each `$name;` with the attributes given
/// (transport attribute, `#[event(name = ...)]`) and the `{ run, key, n }` shape.
macro_rules! suite_events {
    ($( $(#[$attr:meta])* $name:ident; )*) => {
        $(
            #[derive(
                heytom_mq::Event, serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq,
            )]
            $(#[$attr])*
            pub struct $name {
                pub run: String,
                pub key: String,
                pub n: u32,
            }

            impl $crate::harness::Msg for $name {
                fn new(run: &str, key: &str, n: u32) -> Self {
                    $name { run: run.to_owned(), key: key.to_owned(), n }
                }
                fn run(&self) -> &str {
                    &self.run
                }
                fn key(&self) -> &str {
                    &self.key
                }
                fn n(&self) -> u32 {
                    self.n
                }
            }
        )*
    };
}

/// The suite's `#[handler]` functions, one sub-module per check, on the
/// events `suite_events!` declared in the invoking module.
macro_rules! suite_handlers {
    () => {
        /// This transport's events, for the generic checks.
        pub struct Events;

        impl $crate::harness::EventSet for Events {
            const MODULE: &'static str = module_path!();
            type RoundTrip = RoundTrip;
            type Batch = Batch;
            type FanOut = FanOut;
            type Job = Job;
            type Flaky = Flaky;
            type Doomed = Doomed;
            type Strict = Strict;
            type Posting = Posting;
            type Slow = Slow;
            type Placed = Placed;
            type Shipped = Shipped;
            type Stored = Stored;
            type Urgent = Urgent;
            type Stubborn = Stubborn;
            type Explodes = Explodes;
            type Lenient = Lenient;
            type Yielding = Yielding;
            type Stuck = Stuck;
        }

        pub mod round_trip {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler]
            async fn echo(event: RoundTrip, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    probe.record("echo", &event, &ctx, None);
                }
            }
        }

        pub mod batch {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler]
            async fn batch_sink(event: Batch, ctx: Context, State(probe): State<Probe>) -> bool {
                if probe.mine(&event) {
                    probe.record("batch_sink", &event, &ctx, None);
                }
                true
            }
        }

        pub mod fan_out {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler]
            async fn fan_a(event: FanOut, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    probe.record("fan_a", &event, &ctx, None);
                }
            }

            #[handler]
            async fn fan_b(event: FanOut, State(probe): State<Probe>, ctx: Context) {
                if probe.mine(&event) {
                    probe.record("fan_b", &event, &ctx, None);
                }
            }
        }

        pub mod competing {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::{Probe, Who};

            #[handler]
            async fn worker(
                event: Job,
                ctx: Context,
                State(probe): State<Probe>,
                State(who): State<Who>,
            ) {
                if probe.mine(&event) {
                    // Some work, so that one instance cannot drain everything alone.
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    probe.record("worker", &event, &ctx, Some(who));
                }
            }
        }

        pub mod retry {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler]
            async fn flaky(
                event: Flaky,
                ctx: Context,
                State(probe): State<Probe>,
            ) -> Result<(), HandlerError> {
                if !probe.mine(&event) {
                    return Ok(());
                }
                probe.record("flaky", &event, &ctx, None);
                if ctx.attempt() < 3 {
                    return Err(format!("transient failure on attempt {}", ctx.attempt()).into());
                }
                Ok(())
            }
        }

        pub mod dead_letter {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler(max_attempts = 3)]
            async fn doomed(
                event: Doomed,
                ctx: Context,
                State(probe): State<Probe>,
            ) -> Result<(), HandlerError> {
                if !probe.mine(&event) {
                    return Ok(());
                }
                probe.record("doomed", &event, &ctx, None);
                Err(format!("cannot process #{}", event.n).into())
            }
        }

        pub mod malformed {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler]
            async fn strict(event: Strict, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    probe.record("strict", &event, &ctx, None);
                }
            }
        }

        /// Concurrent handler: per-key order comes from the transport.
        pub mod ordering_keyed {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler(concurrency = 8)]
            async fn post(event: Posting, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    // Uneven work, so that out-of-order handling would show.
                    tokio::time::sleep(std::time::Duration::from_micros(
                        u64::from(event.n % 7) * 300,
                    ))
                    .await;
                    probe.record("post", &event, &ctx, None);
                }
            }
        }

        /// One delivery at a time: order is the queue's order.
        pub mod ordering_serial {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler(concurrency = 1)]
            async fn post(event: Posting, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    tokio::time::sleep(std::time::Duration::from_micros(
                        u64::from(event.n % 7) * 300,
                    ))
                    .await;
                    probe.record("post", &event, &ctx, None);
                }
            }
        }

        pub mod graceful_shutdown {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler]
            async fn slow(event: Slow, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    probe.record("slow:started", &event, &ctx, None);
                    // Long enough for shutdown to begin while this runs.
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    probe.record("slow:finished", &event, &ctx, None);
                }
            }
        }

        pub mod follow_up {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::{Msg, Probe};

            #[handler]
            async fn ship(
                event: Placed,
                ctx: Context,
                State(probe): State<Probe>,
            ) -> Result<(), HandlerError> {
                if probe.mine(&event) {
                    probe.record("ship", &event, &ctx, None);
                    ctx.publish(&Shipped::new(&event.run, &event.key, event.n))
                        .await?;
                }
                Ok(())
            }

            #[handler]
            async fn delivered(event: Shipped, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    probe.record("delivered", &event, &ctx, None);
                }
            }
        }

        pub mod restart {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler]
            async fn durable_sink(event: Stored, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    probe.record("durable_sink", &event, &ctx, None);
                }
            }
        }

        pub mod requeue {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::{Failing, Probe};

            #[handler]
            async fn stubborn(
                event: Stubborn,
                ctx: Context,
                State(probe): State<Probe>,
                State(failing): State<Failing>,
            ) -> Result<(), HandlerError> {
                if !probe.mine(&event) {
                    return Ok(());
                }
                if failing.0 {
                    probe.record("stubborn:failing", &event, &ctx, None);
                    return Err("not yet".into());
                }
                probe.record("stubborn:ok", &event, &ctx, None);
                Ok(())
            }
        }

        pub mod panicking {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            /// #1 fails with an `anyhow` error, #2 panics, others succeed.
            #[handler]
            async fn explodes(
                event: Explodes,
                ctx: Context,
                State(probe): State<Probe>,
            ) -> anyhow::Result<()> {
                if !probe.mine(&event) {
                    return Ok(());
                }
                probe.record("explodes", &event, &ctx, None);
                match event.n {
                    1 => anyhow::bail!("cannot process #1"),
                    2 => panic!("handler bug"),
                    _ => Ok(()),
                }
            }
        }

        pub mod unknown_skip {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            // One at a time: the unknown message, published first, is
            // settled before the known one reaches the handler, so the
            // first app's shutdown (once the known one is seen) cannot
            // hand it back to the app that dead-letters unknown types.
            #[handler(concurrency = 1)]
            async fn lenient(event: Lenient, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    probe.record("lenient", &event, &ctx, None);
                }
            }
        }

        pub mod unknown_hand_back {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler]
            async fn yielding(event: Yielding, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    probe.record("yielding", &event, &ctx, None);
                }
            }
        }

        pub mod stuck_handler {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::{Hang, Probe};

            #[handler]
            async fn stuck(
                event: Stuck,
                ctx: Context,
                State(probe): State<Probe>,
                State(hang): State<Hang>,
            ) {
                if !probe.mine(&event) {
                    return;
                }
                if hang.0 {
                    probe.record("stuck:hanging", &event, &ctx, None);
                    std::future::pending::<()>().await;
                }
                probe.record("stuck:done", &event, &ctx, None);
            }
        }

        pub mod priority {
            use super::*;
            use heytom_mq::prelude::*;
            use $crate::harness::Probe;

            #[handler(concurrency = 1)]
            async fn triage(event: Urgent, ctx: Context, State(probe): State<Probe>) {
                if probe.mine(&event) {
                    probe.record("triage", &event, &ctx, None);
                }
            }
        }
    };
}

/// One `#[tokio::test]` per check, run on fixture `$fixture`: every check
/// every transport must pass, then the checks of features it declares
/// (listed after `;`; a check panics if its feature is not in `features()`).
macro_rules! suite_tests {
    ($fixture:ty $(; $($optional:ident),* $(,)?)?) => {
        suite_tests!(@tests $fixture;
            round_trip_with_envelope,
            send_batch_delivers_each_exactly_once,
            fan_out_to_two_handlers,
            competing_consumers_share_the_work,
            retry_then_success,
            dead_letter_after_max_attempts,
            panicking_handler_is_retried_then_dead_lettered,
            malformed_payload_is_dead_lettered_and_consuming_goes_on,
            ordering_per_partition_key,
            graceful_shutdown_finishes_in_flight_handler,
            follow_up_events_carry_correlation_and_causation,
            $($($optional,)*)?
        );
    };
    (@tests $fixture:ty; $($check:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(fixture) = <$fixture as $crate::harness::Fixture>::setup().await else {
                    return;
                };
                $crate::checks::$check(&fixture).await;
            }
        )*
    };
}
