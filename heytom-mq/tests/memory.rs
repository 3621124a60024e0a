//! The in-memory transport and the App runtime: fan-out, competing
//! consumers, retry, dead-letter, decode failures, ordering and graceful
//! shutdown. Each test module registers its own `#[handler]`s and builds its
//! app with `discover_in(module_path!())` so tests don't see each other's.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::{Headers, InMemoryConsumer, InMemoryProducer, RunningApp};
use serde::{Deserialize, Serialize};

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(attempts)
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
}

/// Polls until `cond` holds, failing the test after 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn items(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

mod fan_out {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[kafka(topic = "fan-out")]
    pub struct Tick {
        pub n: u32,
    }

    #[handler]
    async fn first(event: Tick, State(log): State<Log>) {
        log.push(format!("first:{}", event.n));
    }

    #[handler]
    async fn second(event: Tick, State(log): State<Log>) -> bool {
        log.push(format!("second:{}", event.n));
        true
    }

    #[tokio::test]
    async fn every_handler_gets_every_event() {
        let log = Log::default();
        let app = App::builder()
            .discover_in(module_path!())
            .state(log.clone())
            .start()
            .await
            .unwrap();
        let ids = app
            .producer()
            .send_batch(&(0..10).map(|n| Tick { n }).collect::<Vec<_>>())
            .await
            .unwrap();
        assert_eq!(ids.len(), 10);
        eventually("20 deliveries", || log.len() == 20).await;
        app.shutdown().await.unwrap();
        let items = log.items();
        for n in 0..10 {
            assert!(items.contains(&format!("first:{n}")));
            assert!(items.contains(&format!("second:{n}")));
        }
    }
}

mod competing {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Job {
        pub n: u32,
    }

    #[handler]
    async fn worker(event: Job, State(log): State<Log>, State(who): State<&'static str>) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        log.push(format!("{who}:{}", event.n));
    }

    #[tokio::test]
    async fn two_instances_of_one_handler_share_the_events() {
        let broker = InMemoryBroker::new();
        let log = Log::default();
        let start = |who: &'static str| {
            App::builder()
                .in_memory_broker(broker.clone())
                .discover_in(module_path!())
                .state(log.clone())
                .state(who)
                .start()
        };
        let a = start("a").await.unwrap();
        let b = start("b").await.unwrap();
        let jobs: Vec<Job> = (0..200).map(|n| Job { n }).collect();
        a.producer().send_batch(&jobs).await.unwrap();
        eventually("200 deliveries", || log.len() >= 200).await;
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
        let items = log.items();
        assert_eq!(items.len(), 200, "each job exactly once");
        let mut ns: Vec<u32> = items
            .iter()
            .map(|s| s.split(':').nth(1).unwrap().parse().unwrap())
            .collect();
        ns.sort_unstable();
        assert_eq!(ns, (0..200).collect::<Vec<_>>());
        assert!(
            items.iter().any(|s| s.starts_with("a:")),
            "instance a got none"
        );
        assert!(
            items.iter().any(|s| s.starts_with("b:")),
            "instance b got none"
        );
    }
}

mod retry_then_success {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[rabbitmq(routing_key = "flaky")]
    pub struct Flaky {
        pub id: u32,
    }

    #[handler]
    async fn flaky(
        _event: Flaky,
        ctx: Context,
        State(log): State<Log>,
    ) -> Result<(), HandlerError> {
        log.push(format!("attempt {}", ctx.attempt()));
        if ctx.attempt() < 3 {
            return Err(format!("transient failure on attempt {}", ctx.attempt()).into());
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_handler_is_retried_until_it_succeeds() {
        let log = Log::default();
        let app = App::builder()
            .discover_in(module_path!())
            .retry_policy(fast_retry(5))
            .state(log.clone())
            .start()
            .await
            .unwrap();
        app.producer().send(&Flaky { id: 1 }).await.unwrap();
        eventually("third attempt", || log.len() == 3).await;
        let broker = app.in_memory_broker().unwrap().clone();
        app.shutdown().await.unwrap();
        assert_eq!(log.items(), ["attempt 1", "attempt 2", "attempt 3"]);
        assert!(broker.dead_letters().is_empty());
    }
}

mod dead_letter {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Poison {
        pub id: u32,
    }

    #[handler(max_attempts = 4)]
    async fn always_fails(
        _event: Poison,
        State(calls): State<Arc<AtomicU32>>,
    ) -> anyhow::Result<()> {
        calls.fetch_add(1, Ordering::SeqCst);
        anyhow::bail!("cannot process poison")
    }

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Explodes {
        pub id: u32,
    }

    #[handler]
    async fn panics(_event: Explodes) {
        panic!("handler bug");
    }

    #[tokio::test]
    async fn exhausted_retries_end_in_the_dead_letter_destination() {
        let calls = Arc::new(AtomicU32::new(0));
        let app = App::builder()
            .discover_in(module_path!())
            .retry_policy(fast_retry(2))
            .state(calls.clone())
            .start()
            .await
            .unwrap();
        let id = app.producer().send(&Poison { id: 7 }).await.unwrap();
        app.producer().send(&Explodes { id: 8 }).await.unwrap();
        let broker = app.in_memory_broker().unwrap().clone();
        let dead = tokio::time::timeout(Duration::from_secs(10), broker.wait_for_dead_letters(2))
            .await
            .expect("two dead letters");
        app.shutdown().await.unwrap();

        // The handler's own max_attempts (4) wins over the app policy (2).
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let poison = dead.iter().find(|d| d.topic == "Poison").unwrap();
        assert_eq!(poison.dead_letter.attempts, 4);
        assert_eq!(poison.dead_letter.reason, "cannot process poison");
        assert_eq!(poison.dead_letter.handler.as_deref(), Some("always_fails"));
        assert_eq!(poison.headers["heytom-event-id"], id.to_string());
        assert_eq!(poison.headers["heytom-dead-letter-attempts"], "4");
        let body: Poison = serde_json::from_slice(&poison.body).unwrap();
        assert_eq!(body.id, 7);

        let exploded = dead.iter().find(|d| d.topic == "Explodes").unwrap();
        assert_eq!(exploded.dead_letter.attempts, 2);
        assert!(exploded
            .dead_letter
            .reason
            .contains("handler panicked: handler bug"));
    }
}

mod bad_input {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Strict {
        pub id: u32,
    }

    #[handler]
    async fn strict(_event: Strict, State(calls): State<Arc<AtomicU32>>) {
        calls.fetch_add(1, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn undecodable_and_unknown_messages_are_dead_lettered_without_reaching_a_handler() {
        let calls = Arc::new(AtomicU32::new(0));
        let app = App::builder()
            .discover_in(module_path!())
            .state(calls.clone())
            .start()
            .await
            .unwrap();
        let broker = app.in_memory_broker().unwrap().clone();
        let mut headers = Headers::new();
        headers.insert("heytom-event-name".into(), "Strict".into());
        assert_eq!(
            broker.publish_raw("Strict", headers.clone(), b"{not json".to_vec(), None),
            1
        );
        broker.publish_raw(
            "Strict",
            headers.clone(),
            br#"{"id":"a string"}"#.to_vec(),
            None,
        );
        headers.insert("heytom-event-name".into(), "SomethingElse".into());
        broker.publish_raw("Strict", headers, br#"{"id":1}"#.to_vec(), None);
        let mut bad_id = Headers::new();
        bad_id.insert("heytom-event-id".into(), "not-a-uuid".into());
        broker.publish_raw("Strict", bad_id, br#"{"id":1}"#.to_vec(), None);
        // The consumer keeps running: a good message still gets through.
        app.producer().send(&Strict { id: 1 }).await.unwrap();

        let dead = tokio::time::timeout(Duration::from_secs(10), broker.wait_for_dead_letters(4))
            .await
            .expect("four dead letters");
        eventually("the good message", || calls.load(Ordering::SeqCst) == 1).await;
        app.shutdown().await.unwrap();

        // Lanes run in parallel, so the dead letters may arrive in any order.
        let reasons: Vec<&str> = dead.iter().map(|d| d.dead_letter.reason.as_str()).collect();
        let has = |pat: &str| reasons.iter().filter(|r| r.contains(pat)).count();
        assert_eq!(has("payload does not decode"), 2, "{reasons:?}");
        assert_eq!(has("key must be a string"), 1, "{reasons:?}");
        assert_eq!(has("invalid type"), 1, "{reasons:?}");
        assert_eq!(
            has("unknown message type `SomethingElse`"),
            1,
            "{reasons:?}"
        );
        assert_eq!(has("heytom-event-id"), 1, "{reasons:?}");
        assert!(dead.iter().all(|d| d.dead_letter.attempts == 0));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

mod ordering {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[kafka(topic = "ordered", partition_key = account)]
    pub struct Posting {
        pub account: String,
        pub seq: u32,
    }

    #[handler(concurrency = 8)]
    async fn post(event: Posting, State(log): State<Log>) {
        // Uneven work so that out-of-order processing would show.
        tokio::time::sleep(Duration::from_micros(u64::from(event.seq % 7) * 300)).await;
        log.push(format!("{}:{}", event.account, event.seq));
    }

    #[tokio::test]
    async fn events_with_one_partition_key_are_handled_in_order() {
        let log = Log::default();
        let app = App::builder()
            .discover_in(module_path!())
            .state(log.clone())
            .start()
            .await
            .unwrap();
        let mut events = Vec::new();
        for seq in 0..50 {
            for account in ["alice", "bob", "carol", "dave"] {
                events.push(Posting {
                    account: account.into(),
                    seq,
                });
            }
        }
        app.producer().send_batch(&events).await.unwrap();
        eventually("200 postings", || log.len() == 200).await;
        app.shutdown().await.unwrap();
        for account in ["alice", "bob", "carol", "dave"] {
            let seqs: Vec<u32> = log
                .items()
                .iter()
                .filter_map(|s| {
                    s.strip_prefix(&format!("{account}:"))
                        .map(|n| n.parse().unwrap())
                })
                .collect();
            assert_eq!(seqs, (0..50).collect::<Vec<_>>(), "order of {account}");
        }
    }
}

mod graceful_shutdown {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Slow {
        pub id: u32,
    }

    #[handler]
    async fn slow(_event: Slow, State(log): State<Log>) {
        log.push("started");
        tokio::time::sleep(Duration::from_millis(300)).await;
        log.push("finished");
    }

    #[tokio::test]
    async fn shutdown_waits_for_in_flight_handlers() {
        let log = Log::default();
        let app: RunningApp = App::builder()
            .discover_in(module_path!())
            .state(log.clone())
            .start()
            .await
            .unwrap();
        app.producer().send(&Slow { id: 1 }).await.unwrap();
        eventually("handler start", || log.len() == 1).await;
        app.shutdown().await.unwrap();
        assert_eq!(
            log.items(),
            ["started", "finished"],
            "handler was cut off mid-event"
        );
    }
}

mod shutdown_hands_back_retries {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Stubborn {
        pub id: u32,
    }

    #[handler]
    async fn stubborn(_event: Stubborn, State(log): State<Log>) -> bool {
        log.push("attempt");
        false
    }

    #[tokio::test]
    async fn a_message_waiting_for_its_retry_is_handed_back_not_dropped() {
        let broker = InMemoryBroker::new();
        let log = Log::default();
        let app = App::builder()
            .in_memory_broker(broker.clone())
            .discover_in(module_path!())
            .retry_policy(
                RetryPolicy::default()
                    .max_attempts(5)
                    .initial_backoff(Duration::from_secs(60)),
            )
            .state(log.clone())
            .start()
            .await
            .unwrap();
        app.producer().send(&Stubborn { id: 1 }).await.unwrap();
        eventually("first attempt", || log.len() == 1).await;
        tokio::time::timeout(Duration::from_secs(5), app.shutdown())
            .await
            .expect("shutdown does not wait out the backoff")
            .unwrap();
        assert!(broker.dead_letters().is_empty());
        assert_eq!(
            broker.pending("Stubborn", "stubborn"),
            1,
            "message is back in its queue"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handed_back_message_is_not_taken_again_during_shutdown() {
        // Shutdown signals the handlers before it stops the workers; the
        // message handed back in between must not run through the handler
        // again. A race, so a few rounds.
        for round in 0..10 {
            let broker = InMemoryBroker::new();
            let log = Log::default();
            let app = App::builder()
                .in_memory_broker(broker.clone())
                .discover_in(module_path!())
                .retry_policy(
                    RetryPolicy::default()
                        .max_attempts(5)
                        .initial_backoff(Duration::from_secs(60)),
                )
                .state(log.clone())
                .start()
                .await
                .unwrap();
            app.producer().send(&Stubborn { id: 1 }).await.unwrap();
            eventually("first attempt", || log.len() == 1).await;
            app.shutdown().await.unwrap();
            assert_eq!(
                log.len(),
                1,
                "round {round}: handler ran again during shutdown"
            );
            assert_eq!(broker.pending("Stubborn", "stubborn"), 1);
        }
    }
}

mod startup_checks {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[kafka(topic = "needs-kafka")]
    pub struct NeedsKafka {
        pub id: u32,
    }

    #[handler]
    async fn needs_kafka(_event: NeedsKafka) {}

    pub mod one {
        #[heytom_mq::handler(name = "same_name")]
        pub async fn dup(_event: super::NeedsKafka) {}
    }
    pub mod two {
        #[heytom_mq::handler(name = "same_name")]
        pub async fn dup(_event: super::NeedsKafka) {}
    }

    #[derive(Clone)]
    struct NotRegistered;

    #[handler]
    async fn wants_state(_event: NeedsKafka, State(_s): State<NotRegistered>) {}

    #[cfg(feature = "rabbitmq")]
    #[tokio::test]
    async fn an_event_without_its_transport_is_a_startup_error_naming_it() {
        let err = App::builder()
            .rabbitmq(RabbitMqOptions::new("amqp://guest:guest@127.0.0.1:1/%2f"))
            .discover_filter(|r| r.name == "needs_kafka")
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, heytom_mq::Error::TransportNotConfigured(_)));
        assert_eq!(
            err.to_string(),
            "no transport configured for event `NeedsKafka` (needs Kafka)"
        );
    }

    #[tokio::test]
    async fn two_handlers_with_one_name_are_a_startup_error_naming_both() {
        let err = App::builder()
            .discover_filter(|r| r.name == "same_name")
            .build()
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("duplicate handler name `same_name`"), "{msg}");
        assert!(msg.contains("startup_checks::one::dup"), "{msg}");
        assert!(msg.contains("startup_checks::two::dup"), "{msg}");
    }

    #[tokio::test]
    async fn a_missing_state_is_a_startup_error() {
        let err = App::builder()
            .discover_filter(|r| r.name == "wants_state")
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("needs State<"), "{err}");
        assert!(err.to_string().contains("NotRegistered"), "{err}");
    }
}

mod context_and_follow_ups {
    use super::*;

    type Seen = Arc<Mutex<Vec<(u32, Headers)>>>;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[event(name = "orders.placed.v1")]
    pub struct Placed {
        pub order: u32,
    }

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Shipped {
        pub order: u32,
    }

    #[handler]
    async fn ship(event: Placed, ctx: Context) -> Result<(), HandlerError> {
        assert_eq!(ctx.event_name(), "orders.placed.v1");
        assert_eq!(ctx.attempt(), 1);
        ctx.publish(&Shipped { order: event.order }).await?;
        Ok(())
    }

    #[handler]
    async fn record(event: Shipped, State(seen): State<Seen>, ctx: Context) {
        seen.lock()
            .unwrap()
            .push((event.order, ctx.headers().clone()));
    }

    #[tokio::test]
    async fn follow_up_events_carry_correlation_and_causation() {
        let seen: Seen = Arc::default();
        let app = App::builder()
            .discover_in(module_path!())
            .state(seen.clone())
            .start()
            .await
            .unwrap();
        let mut headers = Headers::new();
        headers.insert(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        headers.insert("tenant".into(), "acme".into());
        let id = app
            .producer()
            .send_with_headers(&Placed { order: 42 }, headers)
            .await
            .unwrap();
        eventually("follow-up", || !seen.lock().unwrap().is_empty()).await;
        app.shutdown().await.unwrap();
        let (order, h) = seen.lock().unwrap()[0].clone();
        assert_eq!(order, 42);
        assert_eq!(h["correlation-id"], id.to_string());
        assert_eq!(h["causation-id"], id.to_string());
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert!(
            !h.contains_key("tenant"),
            "user headers are not copied to follow-ups"
        );
    }
}

mod handler_types {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Greeting {
        pub text: String,
    }

    struct GreetingHandler {
        log: Log,
    }

    impl EventHandler<Greeting> for GreetingHandler {
        async fn handle(&self, event: Greeting, ctx: Context) -> Result<(), HandlerError> {
            self.log.push(format!("{}#{}", event.text, ctx.attempt()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn explicit_handler_types_are_registered_and_called() {
        let log = Log::default();
        let app = App::builder()
            .discover(false)
            .handler::<Greeting, _>(GreetingHandler { log: log.clone() })
            .start()
            .await
            .unwrap();
        app.producer()
            .send(&Greeting { text: "hi".into() })
            .await
            .unwrap();
        eventually("greeting", || log.len() == 1).await;
        app.shutdown().await.unwrap();
        assert_eq!(log.items(), ["hi#1"]);
    }

    #[tokio::test]
    async fn manual_producer_and_consumer() {
        let broker = InMemoryBroker::new();
        let log = Log::default();
        let consumer = InMemoryConsumer::new(&broker).with_retry(fast_retry(2));
        let l = log.clone();
        // Subscribing before start is fine: the subscription begins at start.
        consumer
            .subscribe(move |e: Greeting| {
                let l = l.clone();
                async move {
                    l.push(format!("closure:{}", e.text));
                    true
                }
            })
            .await
            .unwrap();
        consumer.start().await.unwrap();
        assert!(matches!(
            consumer.subscribe(|_: Greeting| async {}).await,
            Err(heytom_mq::Error::AlreadySubscribed(_))
        ));
        let producer = InMemoryProducer::new(&broker);
        producer
            .send(&Greeting { text: "one".into() })
            .await
            .unwrap();
        eventually("closure", || log.len() == 1).await;

        consumer.unsubscribe::<Greeting>().await.unwrap();
        consumer
            .subscribe_handler::<Greeting, _>(GreetingHandler { log: log.clone() })
            .await
            .unwrap();
        producer
            .send(&Greeting { text: "two".into() })
            .await
            .unwrap();
        eventually("handler", || log.len() == 2).await;
        consumer.stop().await.unwrap();
        assert_eq!(log.items(), ["closure:one", "two#1"]);
    }
}

#[test]
fn reserved_headers_are_written_on_the_wire() {
    #[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Wire {
        a: u8,
    }
    let env = heytom_mq::Envelope::new(&Wire { a: 1 }).unwrap();
    let wire = env.wire_headers();
    assert_eq!(
        wire.get("heytom-event-name").map(String::as_str),
        Some("Wire")
    );
    assert_eq!(wire["heytom-event-id"], env.id.to_string());
    assert_eq!(env.id.get_version_num(), 7);
    let back = heytom_mq::Envelope::from_wire(wire, env.payload.clone()).unwrap();
    assert_eq!(back.id, env.id);
    assert_eq!(back.decode::<Wire>().unwrap(), Wire { a: 1 });
}
