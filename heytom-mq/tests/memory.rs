//! What is specific to the in-memory transport and the App runtime: the
//! hand-back race at shutdown, startup checks, explicit handler types, the
//! manual producer and consumer (its bounded stop and unknown-event
//! policy), and the envelope's wire headers. Fan-out,
//! competing consumers, retry, dead-letter, decode failures, ordering,
//! graceful shutdown and follow-up events are checked on every transport
//! (this one included) by the conformance suite (`tests/conformance/`).
//! Each test module registers its own `#[handler]`s and builds its app with
//! `discover_in(module_path!())` so tests don't see each other's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::{InMemoryConsumer, InMemoryProducer};
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

mod manual_consumer_limits {
    use super::*;
    use heytom_mq::{headers, Error, Headers, UnknownEventPolicy};

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Chore {
        pub n: u32,
    }

    const TIMEOUT: Duration = Duration::from_secs(1);

    /// A consumer whose handler never returns.
    async fn stuck_consumer(broker: &InMemoryBroker, log: &Log) -> InMemoryConsumer {
        let consumer = InMemoryConsumer::new(broker).with_stop_timeout(TIMEOUT);
        consumer.start().await.unwrap();
        let l = log.clone();
        consumer
            .subscribe(move |e: Chore| {
                let l = l.clone();
                async move {
                    l.push(format!("stuck:{}", e.n));
                    std::future::pending::<()>().await
                }
            })
            .await
            .unwrap();
        consumer
    }

    // On tokio's paused clock: TIMEOUT is the configured stop deadline, checked
    // on virtual time, so the test asserts the bound, not a speed.
    #[tokio::test(start_paused = true)]
    async fn stop_and_unsubscribe_abandon_a_stuck_handler_and_hand_its_message_back() {
        let broker = InMemoryBroker::new();
        let log = Log::default();
        let producer = InMemoryProducer::new(&broker);

        let consumer = stuck_consumer(&broker, &log).await;
        producer.send(&Chore { n: 1 }).await.unwrap();
        eventually("the handler to start", || log.len() == 1).await;
        let started = tokio::time::Instant::now();
        let err = consumer.stop().await.unwrap_err();
        assert!(matches!(err, Error::Shutdown), "{err:?}");
        assert!(started.elapsed() <= TIMEOUT, "{:?}", started.elapsed());
        assert_eq!(
            broker.pending("Chore", "Chore.subscriber"),
            1,
            "handed back"
        );

        // The next consumer gets it; unsubscribing is bounded the same way.
        let consumer = stuck_consumer(&broker, &log).await;
        eventually("the message again", || log.len() == 2).await;
        let started = tokio::time::Instant::now();
        assert!(matches!(
            consumer.unsubscribe::<Chore>().await,
            Err(Error::Shutdown)
        ));
        assert!(started.elapsed() <= TIMEOUT, "{:?}", started.elapsed());
        assert_eq!(
            broker.pending("Chore", "Chore.subscriber"),
            1,
            "handed back"
        );
        assert_eq!(log.items(), ["stuck:1", "stuck:1"]);
        assert!(broker.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn a_manual_consumer_takes_an_unknown_event_policy() {
        let broker = InMemoryBroker::new();
        let log = Log::default();
        let consumer =
            InMemoryConsumer::new(&broker).with_unknown_event_policy(UnknownEventPolicy::Skip);
        consumer.start().await.unwrap();
        let l = log.clone();
        consumer
            .subscribe(move |e: Chore| {
                let l = l.clone();
                async move { l.push(format!("chore:{}", e.n)) }
            })
            .await
            .unwrap();
        let mut h = Headers::new();
        h.insert(headers::EVENT_NAME.into(), "ChoreV2".into());
        broker.publish_raw("Chore", h, br#"{"n":1}"#.to_vec(), None);
        InMemoryProducer::new(&broker)
            .send(&Chore { n: 2 })
            .await
            .unwrap();
        eventually("the known chore", || log.len() == 1).await;
        consumer.stop().await.unwrap();
        assert_eq!(log.items(), ["chore:2"]);
        assert!(broker.dead_letters().is_empty(), "skipped");
        assert_eq!(
            broker.pending("Chore", "Chore.subscriber"),
            0,
            "acknowledged"
        );
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
