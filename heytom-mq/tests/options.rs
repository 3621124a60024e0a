//! No setting makes heytom-mq panic: every public option type takes any
//! value, and an out-of-range one is an `Error::Configuration` from
//! `build()` / `start()` / the manual producers' and consumers'
//! `new()` / `connect()` / `start()`, naming the setting and its range.
//! For accepted values the arithmetic done with them at run time (backoff,
//! lease deadline, retention cut-off, timeouts) does not overflow.
//!
//! Property tests (`proptest`) run every option type over arbitrary values;
//! the fixed tests reproduce the values reported in the issue (a negative,
//! NaN or infinite multiplier, `Duration::MAX` lease, backoff and
//! retention) and run an app with the largest accepted outbox settings on
//! each database, checking that no task of the crate panics.
//!
//! Databases: `HEYTOM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), `HEYTOM_TEST_MYSQL_URL`
//! (default `mysql://root@127.0.0.1:3306/test`), SQLite files in the temp
//! dir. Unreachable servers skip with a notice, or fail when
//! `HEYTOM_TEST_REQUIRE_SERVICES=1`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::{
    Error, HandlerEntry, InMemoryConsumer, KafkaRoute, LocalMessageRetryOptions, RabbitMqRoute,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- helpers

/// Panics raised anywhere but in this file's own assertions (a relay task,
/// a partition lane, chrono or tokio arithmetic called by the crate),
/// counted by a panic hook: a panic in a spawned task never reaches the
/// test otherwise.
fn crate_panics() -> usize {
    static COUNT: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    let count = COUNT.get_or_init(|| {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file()).unwrap_or("");
            if !file.ends_with("tests/options.rs") {
                c.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
        count
    });
    count.load(Ordering::SeqCst)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

fn require_services() -> bool {
    std::env::var("HEYTOM_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn unavailable(what: &str, err: impl std::fmt::Display) {
    if require_services() {
        panic!("{what} unreachable and HEYTOM_TEST_REQUIRE_SERVICES=1: {err}");
    }
    eprintln!("NOTICE: {what} unreachable ({err}); skipping this test");
}

fn unique() -> String {
    let s = uuid::Uuid::now_v7().simple().to_string();
    s[s.len() - 12..].to_owned()
}

/// `Ok`, or a configuration error whose message contains `names`; any
/// other error fails the test.
#[track_caller]
fn ok_or_config<T>(r: heytom_mq::Result<T>, names: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(Error::Configuration(m)) => {
            assert!(
                m.contains(names),
                "configuration error without `{names}`: {m}"
            );
            None
        }
        Err(other) => panic!("expected Ok or Error::Configuration, got {other:?}"),
    }
}

#[track_caller]
fn config_error<T: std::fmt::Debug>(r: heytom_mq::Result<T>, names: &[&str]) -> String {
    match r {
        Err(Error::Configuration(m)) => {
            for n in names {
                assert!(m.contains(n), "`{n}` missing from: {m}");
            }
            m
        }
        other => panic!("expected Error::Configuration naming {names:?}, got {other:?}"),
    }
}

/// A SQLite outbox on a fresh in-memory database.
async fn memory_outbox() -> Outbox {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    Outbox::sqlite(pool)
}

/// What the relay computes from the outbox settings, with chrono and tokio
/// time: none of it may overflow for accepted values.
fn outbox_deadlines(
    lease: Duration,
    backoff: Duration,
    max_backoff: Duration,
    retention: Option<Duration>,
    scan: Duration,
) {
    let now = chrono::Utc::now();
    let delta = |d: Duration| chrono::TimeDelta::from_std(d).expect("fits a chrono TimeDelta");
    now.checked_add_signed(delta(lease))
        .expect("lease deadline");
    for failures in 0..70u32 {
        let wait = backoff
            .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(max_backoff)
            .min(max_backoff);
        now.checked_add_signed(delta(wait)).expect("retry deadline");
    }
    if let Some(age) = retention {
        now.checked_sub_signed(delta(age))
            .expect("retention cut-off");
    }
    let _ = tokio::time::Instant::now() + lease + scan + max_backoff;
    let _ = std::time::Instant::now() + lease + scan + max_backoff;
}

// ---------------------------------------------------------------- strategies

/// Any duration, with the edges and the neighbourhood of the bounds
/// (1 ms, 1 day, 100 years) more likely than uniform sampling makes them.
fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_secs(24 * 3600)),
        Just(Duration::from_secs(24 * 3600) + Duration::from_nanos(1)),
        (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..4 * 24 * 3600 * 1000).prop_map(Duration::from_millis),
        (0u64..200 * 365 * 24 * 3600).prop_map(Duration::from_secs),
    ]
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-1.0),
        Just(0.0),
        Just(1.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        prop::num::f64::ANY,
        -10.0..200.0f64,
    ]
}

fn any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        any::<u32>(),
        0u32..20_000
    ]
}

fn any_usize() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(usize::MAX),
        any::<usize>(),
        0usize..2_000_000
    ]
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn retry_policy_any_values(
        attempts in any_u32(),
        initial in any_duration(),
        max in any_duration(),
        multiplier in any_f64(),
    ) {
        let p = RetryPolicy::default()
            .max_attempts(attempts)
            .initial_backoff(initial)
            .max_backoff(max)
            .multiplier(multiplier);
        let accepted = ok_or_config(p.validate(), "RetryPolicy::").is_some();
        // The backoff never panics, even for refused settings (second defence).
        for attempt in [0, 1, 2, 3, 10, 63, 64, 65, 1000, u32::MAX] {
            let wait = p.backoff(attempt);
            prop_assert!(wait <= max);
            if accepted {
                let _ = tokio::time::Instant::now() + wait;
                chrono::Utc::now()
                    .checked_add_signed(chrono::TimeDelta::from_std(wait).unwrap())
                    .unwrap();
            }
        }
        // The same through the app and through a manual consumer.
        let built = runtime().block_on(
            App::builder().in_memory().discover(false).retry_policy(p).build(),
        );
        prop_assert_eq!(ok_or_config(built, "AppBuilder::retry_policy: RetryPolicy::").is_some(), accepted);
        let consumer = InMemoryConsumer::new(&InMemoryBroker::new()).with_retry(p);
        let started = runtime().block_on(consumer.start());
        prop_assert_eq!(ok_or_config(started, "RetryPolicy::").is_some(), accepted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn outbox_options_any_values(
        lease in any_duration(),
        backoff in any_duration(),
        max_backoff in any_duration(),
        retention in prop::option::of(any_duration()),
        enabled in any::<bool>(),
        scan in any_duration(),
        batch in any_u32(),
        max_retry in any_u32(),
    ) {
        let before = crate_panics();
        runtime().block_on(async {
            let mut outbox = memory_outbox()
                .await
                .dispatch_lease(lease)
                .retry_backoff(backoff)
                .max_retry_backoff(max_backoff);
            if let Some(age) = retention {
                outbox = outbox.retention(age);
            }
            let retry = LocalMessageRetryOptions {
                enabled,
                scan_interval: scan,
                batch_size: batch,
                max_retry_count: max_retry,
                ..Default::default()
            };
            let alone = retry.validate();
            let built = App::builder()
                .in_memory()
                .discover(false)
                .outbox(outbox)
                .local_message_retry(retry)
                .build()
                .await;
            let Some(app) = ok_or_config(built, "") else {
                return;
            };
            assert!(alone.is_ok(), "build accepted what validate refuses: {alone:?}");
            // A disabled scanner's interval is neither checked nor used.
            let scan = if enabled { scan } else { Duration::ZERO };
            outbox_deadlines(lease, backoff, max_backoff, retention, scan);
            // Run the relay and the scanner with these settings for a moment.
            let running = app.start().await.expect("start");
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = running.shutdown().await;
        });
        prop_assert_eq!(crate_panics(), before, "a task of the crate panicked");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn kafka_options_any_values(
        partitions in prop_oneof![Just(-1i32), Just(0), Just(1), any::<i32>()],
        replication in prop_oneof![Just(-1i16), Just(0), Just(1), any::<i16>()],
        max_in_flight in any_usize(),
        commit in any_duration(),
        operation in any_duration(),
        drain in any_duration(),
    ) {
        let options = KafkaOptions::new("127.0.0.1:1")
            .topic_defaults(partitions, replication)
            .max_in_flight(max_in_flight)
            .commit_interval(commit)
            .operation_timeout(operation)
            .drain_timeout(drain);
        let accepted = ok_or_config(options.validate(), "KafkaOptions::").is_some();
        if accepted {
            let _ = std::time::Instant::now() + drain + commit + operation;
            prop_assert!(operation.as_millis() <= i32::MAX as u128);
        }
        let _guard = runtime().enter();
        prop_assert_eq!(ok_or_config(KafkaProducer::new(options.clone()), "KafkaOptions::").is_some(), accepted);
        prop_assert_eq!(ok_or_config(KafkaConsumer::new(options), "KafkaOptions::").is_some(), accepted);
    }

    #[test]
    fn rabbitmq_options_any_values(
        prefetch in prop_oneof![Just(0u16), Just(1), any::<u16>()],
        concurrency in any_usize(),
        publish in any_duration(),
        connect in any_duration(),
        initial in any_duration(),
        max in any_duration(),
    ) {
        let options = RabbitMqOptions::new("amqp://guest:guest@127.0.0.1:1/%2f")
            .prefetch(prefetch)
            .concurrency(concurrency)
            .publish_timeout(publish)
            .connect_timeout(connect)
            .reconnect_backoff(initial, max);
        match options.validate() {
            Ok(()) => {
                // What the transport computes from them.
                let _ = tokio::time::Instant::now() + publish + connect;
                prop_assert!(max.checked_mul(2).is_some());
                prop_assert!(initial <= max);
                let _ = tokio::sync::Semaphore::new(concurrency);
                let _ = tokio::sync::Semaphore::new(usize::from(prefetch));
            }
            Err(Error::Configuration(m)) => {
                prop_assert!(m.contains("RabbitMqOptions::"), "{}", m);
                // Refused before connecting: no broker is needed to see it.
                let r = runtime().block_on(RabbitMqProducer::connect(options.clone()));
                prop_assert!(matches!(r, Err(Error::Configuration(_))), "{:?}", r.err());
                let r = runtime().block_on(RabbitMqConsumer::connect(options));
                prop_assert!(matches!(r, Err(Error::Configuration(_))), "{:?}", r.err());
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn routes_any_values(
        partitions in prop::option::of(any::<i32>()),
        replication in prop::option::of(any::<i16>()),
        retention in prop::option::of(any::<u64>()),
        session in prop::option::of(any_u32()),
        poll in prop::option::of(any_u32()),
        idempotence in prop::option::of(any::<bool>()),
        acks in prop::option::of(prop_oneof![Just(heytom_mq::Acks::None), Just(heytom_mq::Acks::Leader), Just(heytom_mq::Acks::All)]),
        priority in prop::option::of(any::<u8>()),
        ttl in prop::option::of(any::<u32>()),
        max_length in prop::option::of(any::<u32>()),
    ) {
        let mut k = KafkaRoute::new("orders");
        if let Some(v) = partitions { k = k.num_partitions(v) }
        if let Some(v) = replication { k = k.replication_factor(v) }
        if let Some(v) = retention { k = k.retention_ms(v) }
        if let Some(v) = session { k = k.session_timeout_ms(v) }
        if let Some(v) = poll { k = k.max_poll_records(v) }
        if let Some(v) = idempotence { k = k.enable_idempotence(v) }
        if let Some(v) = acks { k = k.acks(v) }
        ok_or_config(Route::Kafka(k).validate("E"), "event `E`: #[kafka(");
        let mut r = RabbitMqRoute::new("orders.created");
        if let Some(v) = priority { r = r.max_priority(v) }
        if let Some(v) = ttl { r = r.message_ttl(v) }
        if let Some(v) = max_length { r = r.max_length(v) }
        ok_or_config(Route::RabbitMq(r).validate("E"), "event `E`: #[rabbitmq(");
    }

    #[test]
    fn handler_concurrency_any_value(n in any_usize(), timeout in any_duration()) {
        let entry = HandlerEntry::from_closure("ping.handler", |_: Ping| async { true }).concurrency(n);
        let built = runtime().block_on(
            App::builder()
                .in_memory()
                .discover(false)
                .shutdown_timeout(timeout)
                .handler_entry(entry)
                .build(),
        );
        ok_or_config(built, "");
    }
}

/// A duration within `lo..=hi`, the bounds themselves included often.
fn duration_in(lo: Duration, hi: Duration) -> impl Strategy<Value = Duration> {
    let (a, b) = (lo.as_nanos() as u64, hi.as_nanos() as u64);
    prop_oneof![
        Just(lo),
        Just(hi),
        (a..=b).prop_map(Duration::from_nanos),
        // Whole milliseconds, as people write them.
        (a / 1_000_000..=b / 1_000_000)
            .prop_map(Duration::from_millis)
            .prop_filter("in range", move |d| *d >= lo && *d <= hi),
    ]
}

const DAY: Duration = Duration::from_secs(24 * 3600);
const MS: Duration = Duration::from_millis(1);

// The documented ranges are accepted, and what the run-time code computes
// from values in them does not overflow.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn retry_policy_documented_ranges_are_accepted(
        attempts in prop_oneof![Just(1u32), Just(u32::MAX), 1u32..],
        initial in duration_in(Duration::ZERO, DAY),
        max in duration_in(Duration::ZERO, DAY),
        multiplier in prop_oneof![Just(1.0f64), Just(100.0), 1.0f64..=100.0],
    ) {
        let p = RetryPolicy::default()
            .max_attempts(attempts)
            .initial_backoff(initial)
            .max_backoff(max)
            .multiplier(multiplier);
        prop_assert!(p.validate().is_ok(), "{:?}", p.validate());
        for attempt in [0, 1, 2, 3, 10, 63, 64, 65, 1000, u32::MAX] {
            let wait = p.backoff(attempt);
            prop_assert!(wait <= max);
            let _ = tokio::time::Instant::now() + wait;
            chrono::Utc::now()
                .checked_add_signed(chrono::TimeDelta::from_std(wait).unwrap())
                .unwrap();
        }
        let built = runtime().block_on(
            App::builder().in_memory().discover(false).retry_policy(p).build(),
        );
        prop_assert!(built.is_ok());
    }

    #[test]
    fn kafka_documented_ranges_are_accepted(
        partitions in prop_oneof![Just(-1i32), 1i32..],
        replication in prop_oneof![Just(-1i16), 1i16..],
        max_in_flight in 1usize..=KafkaOptions::MAX_IN_FLIGHT,
        commit in duration_in(MS, DAY),
        operation in duration_in(MS, DAY),
        drain in duration_in(Duration::ZERO, DAY),
    ) {
        let options = KafkaOptions::new("127.0.0.1:1")
            .topic_defaults(partitions, replication)
            .max_in_flight(max_in_flight)
            .commit_interval(commit)
            .operation_timeout(operation)
            .drain_timeout(drain);
        prop_assert!(options.validate().is_ok(), "{:?}", options.validate());
        let _ = std::time::Instant::now() + drain + commit + operation;
        prop_assert!(operation.as_millis() <= i32::MAX as u128);
    }

    #[test]
    fn rabbitmq_documented_ranges_are_accepted(
        prefetch in 1u16..,
        concurrency in 1usize..=RabbitMqOptions::MAX_CONCURRENCY,
        publish in duration_in(MS, DAY),
        connect in duration_in(MS, DAY),
        (initial, max) in duration_in(MS, DAY).prop_flat_map(|i| (Just(i), duration_in(i, DAY))),
    ) {
        let options = RabbitMqOptions::new("amqps://svc:pw@broker.example:5671/prod")
            .prefetch(prefetch)
            .concurrency(concurrency)
            .publish_timeout(publish)
            .connect_timeout(connect)
            .reconnect_backoff(initial, max);
        prop_assert!(options.validate().is_ok(), "{:?}", options.validate());
        let _ = tokio::time::Instant::now() + publish + connect;
        prop_assert!(max.checked_mul(2).is_some());
        let _ = tokio::sync::Semaphore::new(concurrency);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn outbox_documented_ranges_are_accepted_and_run(
        lease in duration_in(Duration::from_millis(100), DAY),
        backoff in duration_in(Duration::ZERO, DAY),
        max_backoff in duration_in(Duration::ZERO, DAY),
        retention in prop::option::of(duration_in(Duration::ZERO, Duration::from_secs(100 * 365 * 24 * 3600))),
        scan in duration_in(MS, DAY),
        batch in prop_oneof![Just(1u32), Just(LocalMessageRetryOptions::MAX_BATCH_SIZE), 1u32..=LocalMessageRetryOptions::MAX_BATCH_SIZE],
        max_retry in prop_oneof![Just(1u32), Just(i32::MAX as u32), 1u32..=i32::MAX as u32],
    ) {
        let before = crate_panics();
        outbox_deadlines(lease, backoff, max_backoff, retention, scan);
        runtime().block_on(async {
            let mut outbox = memory_outbox()
                .await
                .dispatch_lease(lease)
                .retry_backoff(backoff)
                .max_retry_backoff(max_backoff);
            if let Some(age) = retention {
                outbox = outbox.retention(age);
            }
            let retry = LocalMessageRetryOptions {
                scan_interval: scan,
                batch_size: batch,
                max_retry_count: max_retry,
                ..Default::default()
            };
            let running = App::builder()
                .in_memory()
                .discover(false)
                .outbox(outbox)
                .local_message_retry(retry)
                .start()
                .await
                .expect("documented values are accepted");
            // Let the relay and the scanner run a moment with these settings.
            tokio::time::sleep(Duration::from_millis(20)).await;
            running.shutdown().await.expect("shutdown");
        });
        prop_assert_eq!(crate_panics(), before, "a task of the crate panicked");
    }
}

// ---------------------------------------------------------------- events

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Ping;

impl Event for Ping {
    const NAME: &'static str = "OptionsTestPing";
    fn route() -> &'static Route {
        static R: Route = Route::Default;
        &R
    }
    fn partition_key(&self) -> Option<String> {
        None
    }
}

/// A hand-built route with a value `#[kafka]` would refuse at compile time.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct BadRoute;

impl Event for BadRoute {
    const NAME: &'static str = "OptionsTestBadRoute";
    fn route() -> &'static Route {
        static R: Route = Route::Kafka(KafkaRoute::new("options-bad-route").num_partitions(0));
        &R
    }
    fn partition_key(&self) -> Option<String> {
        None
    }
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Sent {
    n: u64,
}

impl Event for Sent {
    const NAME: &'static str = "OptionsTestSent";
    fn route() -> &'static Route {
        static R: Route = Route::Default;
        &R
    }
    fn partition_key(&self) -> Option<String> {
        None
    }
}

heytom_mq::__private::inventory::submit! {
    heytom_mq::__private::EventRegistration { name: Sent::NAME, route: Sent::route }
}

// ---------------------------------------------------------------- the reported values

#[tokio::test]
async fn reported_multipliers_are_refused_by_build_and_start() {
    for m in [-2.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.5] {
        let policy = RetryPolicy::default().multiplier(m);
        let built = App::builder()
            .in_memory()
            .discover(false)
            .retry_policy(policy)
            .build()
            .await;
        config_error(built, &["RetryPolicy::multiplier", "between 1 and 100"]);
        let started = App::builder()
            .in_memory()
            .discover(false)
            .retry_policy(policy)
            .start()
            .await;
        config_error(started, &["RetryPolicy::multiplier"]);
        // A handler's own policy too, named.
        let entry =
            HandlerEntry::from_closure("ping.handler", |_: Ping| async { true }).retry(policy);
        let built = App::builder()
            .in_memory()
            .discover(false)
            .handler_entry(entry)
            .build()
            .await;
        config_error(
            built,
            &["handler `ping.handler`", "RetryPolicy::multiplier"],
        );
        // And a manual consumer's, at start and at subscribe.
        let consumer = InMemoryConsumer::new(&InMemoryBroker::new()).with_retry(policy);
        config_error(
            consumer.subscribe(|_: Ping| async { true }).await,
            &["RetryPolicy::multiplier"],
        );
        config_error(consumer.start().await, &["RetryPolicy::multiplier"]);
    }
    let zero = RetryPolicy::default().max_attempts(0);
    config_error(
        App::builder()
            .in_memory()
            .discover(false)
            .retry_policy(zero)
            .build()
            .await,
        &["RetryPolicy::max_attempts", "found 0"],
    );
}

#[tokio::test]
async fn reported_outbox_durations_are_refused_by_build_and_start() {
    type Set = fn(Outbox) -> Outbox;
    let cases: [(&str, Set); 5] = [
        ("Outbox::dispatch_lease", |o| {
            o.dispatch_lease(Duration::MAX)
        }),
        ("Outbox::dispatch_lease", |o| {
            o.dispatch_lease(Duration::ZERO)
        }),
        ("Outbox::retry_backoff", |o| o.retry_backoff(Duration::MAX)),
        ("Outbox::max_retry_backoff", |o| {
            o.max_retry_backoff(Duration::MAX)
        }),
        ("Outbox::retention", |o| o.retention(Duration::MAX)),
    ];
    for (name, set) in cases {
        let built = App::builder()
            .in_memory()
            .discover(false)
            .outbox(set(memory_outbox().await))
            .build()
            .await;
        let m = config_error(built, &[name, "must be between"]);
        eprintln!("{m}");
        let started = App::builder()
            .in_memory()
            .discover(false)
            .outbox(set(memory_outbox().await))
            .start()
            .await;
        config_error(started, &[name]);
    }
    let retry_cases = [
        (
            "LocalMessageRetryOptions::batch_size",
            LocalMessageRetryOptions {
                batch_size: 0,
                ..Default::default()
            },
        ),
        (
            "LocalMessageRetryOptions::batch_size",
            LocalMessageRetryOptions {
                batch_size: u32::MAX,
                ..Default::default()
            },
        ),
        (
            "LocalMessageRetryOptions::scan_interval",
            LocalMessageRetryOptions {
                scan_interval: Duration::ZERO,
                ..Default::default()
            },
        ),
        (
            "LocalMessageRetryOptions::scan_interval",
            LocalMessageRetryOptions {
                scan_interval: Duration::MAX,
                ..Default::default()
            },
        ),
        (
            "LocalMessageRetryOptions::max_retry_count",
            LocalMessageRetryOptions {
                max_retry_count: 0,
                ..Default::default()
            },
        ),
        (
            "LocalMessageRetryOptions::max_retry_count",
            LocalMessageRetryOptions {
                max_retry_count: u32::MAX,
                ..Default::default()
            },
        ),
    ];
    for (name, retry) in retry_cases {
        let built = App::builder()
            .in_memory()
            .discover(false)
            .outbox(memory_outbox().await)
            .local_message_retry(retry)
            .build()
            .await;
        config_error(built, &[name]);
    }
}

#[tokio::test]
async fn manual_producers_and_consumers_refuse_bad_settings_without_connecting() {
    // Nothing listens on port 1: an error other than Configuration would mean
    // the options were not checked first.
    let kafka = || KafkaOptions::new("127.0.0.1:1");
    config_error(
        KafkaProducer::new(kafka().max_in_flight(0)),
        &["KafkaOptions::max_in_flight", "found 0"],
    );
    config_error(
        KafkaConsumer::new(kafka().operation_timeout(Duration::MAX)),
        &["KafkaOptions::operation_timeout"],
    );
    config_error(
        KafkaConsumer::new(kafka().drain_timeout(Duration::MAX)),
        &["KafkaOptions::drain_timeout"],
    );
    config_error(
        KafkaConsumer::new(kafka().commit_interval(Duration::ZERO)),
        &["KafkaOptions::commit_interval"],
    );
    config_error(
        KafkaProducer::new(kafka().topic_defaults(0, 1)),
        &["num_partitions"],
    );
    config_error(
        KafkaProducer::new(kafka().dead_letter_suffix("")),
        &["dead_letter_suffix"],
    );
    config_error(
        KafkaProducer::new(kafka().property("linger.ms", "-5")),
        &["linger.ms", "-5"],
    );
    config_error(
        KafkaProducer::new(kafka().property("no.such.property", "x")),
        &["no.such.property"],
    );
    // The producer itself is made on the first send; settings librdkafka
    // only rejects when a client is made (idempotence allows at most 5
    // requests in flight) are still refused when the transport is made.
    config_error(
        KafkaProducer::new(
            kafka()
                .producer_property("enable.idempotence", "true")
                .producer_property("max.in.flight.requests.per.connection", "6"),
        ),
        &["invalid Kafka producer settings"],
    );
    let built = App::builder()
        .kafka(kafka().max_in_flight(usize::MAX))
        .build()
        .await;
    config_error(built, &["KafkaOptions::max_in_flight"]);

    let rabbit = || RabbitMqOptions::new("amqp://guest:guest@127.0.0.1:1/%2f");
    config_error(
        RabbitMqProducer::connect(rabbit().prefetch(0)).await,
        &["RabbitMqOptions::prefetch"],
    );
    config_error(
        RabbitMqConsumer::connect(rabbit().concurrency(0)).await,
        &["RabbitMqOptions::concurrency"],
    );
    config_error(
        RabbitMqConsumer::connect(rabbit().concurrency(usize::MAX)).await,
        &["RabbitMqOptions::concurrency"],
    );
    config_error(
        RabbitMqProducer::connect(rabbit().publish_timeout(Duration::MAX)).await,
        &["RabbitMqOptions::publish_timeout"],
    );
    config_error(
        RabbitMqProducer::connect(rabbit().connect_timeout(Duration::ZERO)).await,
        &["RabbitMqOptions::connect_timeout"],
    );
    config_error(
        RabbitMqProducer::connect(
            rabbit().reconnect_backoff(Duration::from_secs(5), Duration::from_secs(1)),
        )
        .await,
        &["reconnect_backoff max"],
    );
    config_error(
        RabbitMqProducer::connect(rabbit().reconnect_backoff(Duration::MAX, Duration::MAX)).await,
        &["reconnect_backoff"],
    );
    let built = App::builder().rabbitmq(rabbit().prefetch(0)).build().await;
    config_error(built, &["RabbitMqOptions::prefetch"]);
}

#[tokio::test]
async fn hand_built_routes_and_handler_settings_are_checked_by_build() {
    let entry = HandlerEntry::from_closure("bad.route.handler", |_: BadRoute| async { true });
    let built = App::builder()
        .in_memory()
        .discover(false)
        .handler_entry(entry)
        .build()
        .await;
    config_error(
        built,
        &[
            "event `OptionsTestBadRoute`",
            "#[kafka(num_partitions)]",
            "found 0",
        ],
    );

    let entry = HandlerEntry::from_closure("ping.handler", |_: Ping| async { true })
        .concurrency(usize::MAX);
    let built = App::builder()
        .in_memory()
        .discover(false)
        .handler_entry(entry)
        .build()
        .await;
    config_error(built, &["handler `ping.handler`: concurrency"]);

    let built = App::builder()
        .in_memory()
        .discover(false)
        .shutdown_timeout(Duration::MAX)
        .build()
        .await;
    config_error(built, &["AppBuilder::shutdown_timeout"]);
}

// ---------------------------------------------------------------- the largest accepted values, run

/// Starts an app over `outbox` with the largest accepted outbox settings
/// and a fast scanner, sends events through the outbox, waits for them and
/// for a few scans (retention included), then checks no task panicked.
/// Returns the table it made, for the caller to drop.
async fn run_with_largest_settings<DB: heytom_mq::OutboxDatabase>(
    pool: sqlx::Pool<DB>,
    outbox: Outbox,
) -> String {
    let before = crate_panics();
    let day = Duration::from_secs(24 * 3600);
    let outbox = outbox
        .table_name(format!("options_test_{}", unique()))
        .dispatch_lease(day)
        .retry_backoff(day)
        .max_retry_backoff(day)
        .retention(Duration::from_secs(100 * 365 * 24 * 3600));
    let retry = LocalMessageRetryOptions {
        scan_interval: Duration::from_millis(50),
        batch_size: LocalMessageRetryOptions::MAX_BATCH_SIZE,
        max_retry_count: i32::MAX as u32,
        ..Default::default()
    };
    let broker = InMemoryBroker::new();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let consumer = InMemoryConsumer::new(&broker);
    consumer.start().await.unwrap();
    let d = delivered.clone();
    consumer
        .subscribe(move |e: Sent| {
            let d = d.clone();
            async move {
                d.lock().unwrap().push(e.n);
                true
            }
        })
        .await
        .unwrap();
    let app = App::builder()
        .in_memory_broker(broker.clone())
        .discover(false)
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(u32::MAX)
                .initial_backoff(RetryPolicy::MAX_BACKOFF)
                .max_backoff(RetryPolicy::MAX_BACKOFF)
                .multiplier(RetryPolicy::MAX_MULTIPLIER),
        )
        .outbox(outbox.clone())
        .local_message_retry(retry)
        .start()
        .await
        .expect("the largest accepted settings start");
    let producer = app.producer();
    for n in 0..3u64 {
        let mut tx = producer.begin(&pool).await.unwrap();
        tx.publish(&Sent { n }).await.unwrap();
        tx.commit().await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while delivered.lock().unwrap().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events not delivered: {:?}",
            delivered.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A few scans, each running the retention delete.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.shutdown().await.unwrap();
    consumer.stop().await.unwrap();
    let mut got = delivered.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(crate_panics(), before, "a task of the crate panicked");
    outbox.get_table_name().to_owned()
}

fn drop_sql(table: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_accepted_settings_run_on_sqlite() {
    use std::str::FromStr;
    let path = std::env::temp_dir().join(format!("heytom-options-test-{}.db", unique()));
    let opts =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(5)
        .connect_with(opts)
        .await
        .unwrap();
    let _ = run_with_largest_settings(pool.clone(), Outbox::sqlite(pool.clone())).await;
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_accepted_settings_run_on_postgres() {
    let url = std::env::var("HEYTOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = match tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect(&url),
    )
    .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return unavailable("PostgreSQL", e),
        Err(e) => return unavailable("PostgreSQL", e),
    };
    let table = run_with_largest_settings(pool.clone(), Outbox::postgres(pool.clone())).await;
    let _ = sqlx::query(drop_sql(&table)).execute(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_accepted_settings_run_on_mysql() {
    let url = std::env::var("HEYTOM_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    let pool = match tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(5)
            .connect(&url),
    )
    .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return unavailable("MariaDB/MySQL", e),
        Err(e) => return unavailable("MariaDB/MySQL", e),
    };
    let table = run_with_largest_settings(pool.clone(), Outbox::mysql(pool.clone())).await;
    let _ = sqlx::query(drop_sql(&table)).execute(&pool).await;
}
