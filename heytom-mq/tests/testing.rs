//! The user test harness, `heytom_mq::testing::TestApp` (feature
//! `testing`): each method, retries on tokio's paused clock, malformed and
//! unknown messages, and the configuration errors. Each test module
//! registers its own `#[handler]`s and starts its app with
//! `discover_in(module_path!())` so tests don't see each other's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use heytom_mq::prelude::*;
use heytom_mq::testing::TestApp;
use serde::{Deserialize, Serialize};

/// A generous upper bound on virtual or real waits.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    fn items(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

mod publish_and_wait {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[kafka(topic = "testing-orders")]
    pub struct OrderPlaced {
        pub order_id: String,
    }

    #[handler]
    async fn record_order(event: OrderPlaced, State(log): State<Log>) {
        log.push(event.order_id);
    }

    #[tokio::test]
    async fn published_events_reach_the_discovered_handler_with_its_state() {
        let log = Log::default();
        let app = TestApp::builder()
            .discover_in(module_path!())
            .state(log.clone())
            .start()
            .await
            .expect("starts");
        let mut ids = Vec::new();
        for n in 1..=3 {
            let id = app
                .publish(&OrderPlaced {
                    order_id: format!("A-{n}"),
                })
                .await
                .expect("published");
            ids.push(id);
        }
        let handled = app
            .wait_handled::<OrderPlaced>(3, WAIT)
            .await
            .expect("three handled");
        assert_eq!(handled.len(), 3);
        assert!(handled.iter().all(|h| h.succeeded()), "{handled:?}");
        let mut handled_ids: Vec<_> = handled.iter().map(|h| h.event_id).collect();
        handled_ids.sort();
        ids.sort();
        assert_eq!(handled_ids, ids, "the ids publish returned");
        let mut orders = log.items();
        orders.sort();
        assert_eq!(orders, ["A-1", "A-2", "A-3"]);
        assert_eq!(app.handled::<OrderPlaced>().len(), 3);
        assert!(app.dead_letters().is_empty());
        // Sent in by the test: not something the app published.
        assert!(app.published::<OrderPlaced>().is_empty());
        app.shutdown().await.expect("shuts down");
    }

    #[tokio::test]
    async fn a_missing_state_fails_start_as_the_app_would() {
        let err = TestApp::builder()
            .discover_in(module_path!())
            .start()
            .await
            .expect_err("State<Log> is missing");
        assert!(
            matches!(err, heytom_mq::Error::MissingState { ref handler, .. } if handler == "record_order"),
            "{err}"
        );
    }
}

mod follow_ups {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[rabbitmq(routing_key = "testing.order.placed", exchange = "testing.exchange")]
    pub struct OrderPlaced {
        pub order_id: String,
        pub amount: f64,
    }

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct InvoiceSent {
        pub order_id: String,
    }

    #[handler]
    async fn bill(event: OrderPlaced, ctx: Context) -> Result<(), HandlerError> {
        ctx.publish(&InvoiceSent {
            order_id: event.order_id,
        })
        .await?;
        Ok(())
    }

    #[handler]
    async fn archive_invoice(event: InvoiceSent, State(log): State<Log>) {
        log.push(event.order_id);
    }

    #[tokio::test]
    async fn follow_ups_are_recorded_and_delivered_to_their_handlers() {
        let log = Log::default();
        let app = TestApp::builder()
            .discover_in(module_path!())
            .state(log.clone())
            .start()
            .await
            .expect("starts");
        let cause = app
            .publish(&OrderPlaced {
                order_id: "B-1".into(),
                amount: 3.5,
            })
            .await
            .expect("published");
        app.wait_handled::<OrderPlaced>(1, WAIT)
            .await
            .expect("billed");
        // The follow-up was published before `bill` returned.
        let invoices = app.published::<InvoiceSent>();
        assert_eq!(invoices.len(), 1);
        assert_eq!(invoices[0].order_id, "B-1");
        let envelopes = app.published_envelopes();
        assert_eq!(envelopes.len(), 1, "only the follow-up: {envelopes:?}");
        assert_eq!(
            envelopes[0]
                .headers
                .get(heytom_mq::headers::CAUSATION_ID)
                .map(String::as_str),
            Some(cause.to_string().as_str())
        );
        // And it went on to its own handler.
        app.wait_handled::<InvoiceSent>(1, WAIT)
            .await
            .expect("archived");
        assert_eq!(log.items(), ["B-1"]);
        // What goes through the app's producer is the app's too.
        app.producer()
            .send(&InvoiceSent {
                order_id: "B-2".into(),
            })
            .await
            .expect("sent");
        let invoices = app
            .wait_published::<InvoiceSent>(2, WAIT)
            .await
            .expect("two invoices");
        assert_eq!(invoices[1].order_id, "B-2");
        app.wait_handled::<InvoiceSent>(2, WAIT)
            .await
            .expect("archived");
        app.shutdown().await.expect("shuts down");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_more_than_was_published_times_out_with_what_it_saw() {
        let app = TestApp::builder()
            .discover_in(module_path!())
            .state(Log::default())
            .start()
            .await
            .expect("starts");
        let err = app
            .wait_published::<InvoiceSent>(1, Duration::from_secs(5))
            .await
            .expect_err("nothing was published");
        assert!(matches!(err, heytom_mq::Error::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains("0 published"), "{err}");
    }
}

mod paused_clock {
    use super::*;
    use tokio::time::Instant;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Payment {
        pub id: u32,
    }

    /// When each attempt ran, on tokio's clock.
    #[derive(Clone, Default)]
    struct Attempts(Arc<Mutex<Vec<(u32, Instant)>>>);

    #[handler(name = "charge")]
    async fn charge(
        _event: Payment,
        ctx: Context,
        State(attempts): State<Attempts>,
    ) -> Result<(), HandlerError> {
        attempts
            .0
            .lock()
            .unwrap()
            .push((ctx.attempt(), Instant::now()));
        Err("card declined".into())
    }

    // The backoff adds up to 10 + 20 + 40 + 60 = 130 minutes of tokio time.
    #[tokio::test(start_paused = true)]
    async fn five_failed_attempts_with_minutes_of_backoff_dead_letter_at_once() {
        let real_start = std::time::Instant::now();
        let attempts = Attempts::default();
        let app = TestApp::builder()
            .discover_in(module_path!())
            .state(attempts.clone())
            .retry_policy(
                RetryPolicy::default()
                    .max_attempts(5)
                    .initial_backoff(Duration::from_secs(600))
                    .max_backoff(Duration::from_secs(3600)),
            )
            .start()
            .await
            .expect("starts");
        let id = app.publish(&Payment { id: 7 }).await.expect("published");
        let handled = app
            .wait_handled::<Payment>(1, Duration::from_secs(4 * 3600))
            .await
            .expect("dead-lettered within the virtual hours");
        assert_eq!(handled[0].event_id, id);
        assert!(!handled[0].succeeded());
        assert_eq!(handled[0].dead_letters[0].attempts, 5);

        let runs = attempts.0.lock().unwrap().clone();
        assert_eq!(
            runs.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        // The attempts are the backoff apart, to the tick, on the paused clock.
        let gaps: Vec<u64> = runs
            .windows(2)
            .map(|w| (w[1].1 - w[0].1).as_secs())
            .collect();
        assert_eq!(gaps, [600, 1200, 2400, 3600]);

        let dead = app.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].dead_letter.attempts, 5);
        assert_eq!(dead[0].dead_letter.handler.as_deref(), Some("charge"));
        assert_eq!(dead[0].dead_letter.reason, "card declined");
        app.shutdown().await.expect("shuts down");
        // 130 minutes of backoff did not take 130 minutes: the clock was
        // tokio's paused one (a bound far above any loaded machine's time).
        assert!(
            real_start.elapsed() < Duration::from_secs(300),
            "took {:?} of real time",
            real_start.elapsed()
        );
    }

    // A handler still retrying is not handled: the wait times out and says so.
    #[tokio::test(start_paused = true)]
    async fn a_message_still_retrying_is_not_handled() {
        let app = TestApp::builder()
            .discover_in(module_path!())
            .state(Attempts::default())
            .retry_policy(
                RetryPolicy::default()
                    .max_attempts(3)
                    .initial_backoff(Duration::from_secs(600)),
            )
            .start()
            .await
            .expect("starts");
        app.publish(&Payment { id: 1 }).await.expect("published");
        let err = app
            .wait_handled::<Payment>(1, Duration::from_secs(60))
            .await
            .expect_err("the retry waits 10 minutes");
        let text = err.to_string();
        assert!(matches!(err, heytom_mq::Error::Timeout { .. }), "{text}");
        assert!(text.contains("0 handled"), "{text}");
        assert!(app.dead_letters().is_empty());
        // Long enough, it is.
        let handled = app
            .wait_handled::<Payment>(1, Duration::from_secs(3600))
            .await
            .expect("dead-lettered after its retries");
        assert_eq!(handled[0].dead_letters[0].attempts, 3);
    }
}

mod explicit_handlers {
    use super::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Shipment {
        pub parcel: String,
    }

    struct Courier(Log);

    impl EventHandler<Shipment> for Courier {
        async fn handle(&self, event: Shipment, _ctx: Context) -> Result<(), HandlerError> {
            self.0.push(format!("courier {}", event.parcel));
            Ok(())
        }
    }

    #[handler]
    async fn label(event: Shipment, State(log): State<Log>) {
        log.push(format!("label {}", event.parcel));
    }

    #[handler]
    async fn insure(event: Shipment, State(log): State<Log>) -> bool {
        log.push(format!("insure {}", event.parcel));
        false
    }

    #[tokio::test]
    async fn handlers_added_by_hand_run_without_discovery() {
        let log = Log::default();
        let app = TestApp::builder()
            .discover(false)
            .handler::<Shipment, _>(Courier(log.clone()))
            .start()
            .await
            .expect("starts");
        app.publish(&Shipment {
            parcel: "p1".into(),
        })
        .await
        .expect("published");
        app.wait_handled::<Shipment>(1, WAIT)
            .await
            .expect("handled");
        assert_eq!(log.items(), ["courier p1"]);
    }

    #[tokio::test]
    async fn only_handlers_picks_discovered_handlers_by_name() {
        let log = Log::default();
        let app = TestApp::builder()
            .discover_in(module_path!())
            .only_handlers(["label"])
            .handler::<Shipment, _>(Courier(log.clone()))
            .state(log.clone())
            .start()
            .await
            .expect("starts");
        app.publish(&Shipment {
            parcel: "p2".into(),
        })
        .await
        .expect("published");
        // Two subscriptions (label's group and Courier's): handled when both are done.
        let handled = app
            .wait_handled::<Shipment>(1, WAIT)
            .await
            .expect("handled");
        assert!(handled[0].succeeded());
        let mut items = log.items();
        items.sort();
        assert_eq!(items, ["courier p2", "label p2"], "insure is left out");
    }

    #[tokio::test]
    async fn a_message_is_handled_when_every_handler_is_done_with_it() {
        let log = Log::default();
        let app = TestApp::builder()
            .discover_in(module_path!())
            .state(log.clone())
            .retry_policy(RetryPolicy::none())
            .start()
            .await
            .expect("starts");
        app.publish(&Shipment {
            parcel: "p3".into(),
        })
        .await
        .expect("published");
        let handled = app
            .wait_handled::<Shipment>(1, WAIT)
            .await
            .expect("handled");
        assert_eq!(handled.len(), 1, "one message, two handlers");
        assert_eq!(handled[0].dead_letters.len(), 1, "{handled:?}");
        assert_eq!(
            handled[0].dead_letters[0].handler.as_deref(),
            Some("insure")
        );
        let mut items = log.items();
        items.sort();
        assert_eq!(items, ["insure p3", "label p3"]);
        // The dead letter is in place when the wait returns.
        assert_eq!(app.dead_letters().len(), 1);
    }

    #[tokio::test]
    async fn a_name_only_handlers_does_not_know_is_a_configuration_error() {
        let err = TestApp::builder()
            .discover_in(module_path!())
            .only_handlers(["label", "lable"])
            .state(Log::default())
            .start()
            .await
            .expect_err("no handler is called lable");
        let text = err.to_string();
        assert!(matches!(err, heytom_mq::Error::Configuration(_)), "{text}");
        assert!(text.contains("no handler named `lable`"), "{text}");
        assert!(text.contains("`label`"), "{text}");
    }
}

mod unknown_and_malformed {
    use super::*;
    use heytom_mq::{headers, Headers, UnknownEventPolicy};

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct Reading {
        pub celsius: f64,
    }

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    pub struct NobodyHandlesThis {
        pub n: u32,
    }

    #[handler]
    async fn store_reading(event: Reading, State(log): State<Log>) {
        log.push(event.celsius.to_string());
    }

    fn named(name: &str) -> Headers {
        Headers::from([(headers::EVENT_NAME.to_owned(), name.to_owned())])
    }

    #[tokio::test]
    async fn waiting_for_an_event_no_handler_handles_fails_at_once() {
        let app = TestApp::builder()
            .discover_in(module_path!())
            .state(Log::default())
            .start()
            .await
            .expect("starts");
        app.publish(&NobodyHandlesThis { n: 1 })
            .await
            .expect("published, to nobody");
        let err = app
            .wait_handled::<NobodyHandlesThis>(1, WAIT)
            .await
            .expect_err("no handler");
        let text = err.to_string();
        assert!(matches!(err, heytom_mq::Error::Configuration(_)), "{text}");
        assert!(text.contains("`NobodyHandlesThis`"), "{text}");
        assert!(
            text.contains("`Reading`"),
            "names what it does handle: {text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_body_and_an_unknown_type_are_dead_lettered_and_counted() {
        let log = Log::default();
        let app = TestApp::builder()
            .discover_in(module_path!())
            .state(log.clone())
            .start()
            .await
            .expect("starts");
        let garbled = app.publish_raw(
            "Reading",
            named("Reading"),
            b"{\"celsius\": \"warm\"}".to_vec(),
        );
        let stranger = app.publish_raw("Reading", named("Humidity"), b"{}".to_vec());
        let handled = app
            .wait_handled::<Reading>(2, WAIT)
            .await
            .expect("both settled");
        assert!(handled.iter().all(|h| !h.succeeded()), "{handled:?}");
        let by_id = |id| {
            handled
                .iter()
                .find(|h| h.event_id == id)
                .unwrap_or_else(|| panic!("{id} not handled: {handled:?}"))
        };
        let g = &by_id(garbled).dead_letters[0];
        assert!(g.reason.contains("does not decode"), "{g:?}");
        assert_eq!(g.attempts, 0, "a body that does not decode is not retried");
        let s = by_id(stranger);
        assert_eq!(s.event_name, "Humidity");
        assert!(
            s.dead_letters[0]
                .reason
                .contains("unknown message type `Humidity`"),
            "{s:?}"
        );
        assert_eq!(app.dead_letters().len(), 2);
        assert!(log.items().is_empty(), "the handler never ran");
        // A good one after them still goes through.
        app.publish(&Reading { celsius: 21.5 })
            .await
            .expect("published");
        let handled = app.wait_handled::<Reading>(3, WAIT).await.expect("handled");
        assert!(handled[2].succeeded());
        assert_eq!(log.items(), ["21.5"]);
    }

    #[tokio::test]
    async fn under_the_skip_policy_an_unknown_type_is_handled_without_a_dead_letter() {
        let app = TestApp::builder()
            .discover_in(module_path!())
            .state(Log::default())
            .unknown_event_policy(UnknownEventPolicy::Skip)
            .start()
            .await
            .expect("starts");
        app.publish_raw("Reading", named("Humidity"), b"{}".to_vec());
        let handled = app.wait_handled::<Reading>(1, WAIT).await.expect("skipped");
        assert!(handled[0].succeeded());
        assert!(app.dead_letters().is_empty());
    }
}

#[cfg(feature = "rabbitmq")]
mod from_builder {
    use super::*;
    use heytom_mq::{App, AppBuilder};

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[rabbitmq(routing_key = "testing.greeting", exchange = "testing.greetings")]
    pub struct Greeting {
        pub to: String,
    }

    #[derive(Clone)]
    struct Salutation(&'static str);

    #[handler]
    async fn greet(event: Greeting, State(s): State<Salutation>, State(log): State<Log>) {
        log.push(format!("{} {}", s.0, event.to));
    }

    /// A service's wiring: RabbitMQ on a port where nothing listens.
    fn service(log: Log) -> AppBuilder {
        App::builder()
            .rabbitmq(RabbitMqOptions::new("amqp://guest:guest@127.0.0.1:1"))
            .discover_in(module_path!())
            .state(Salutation("hello"))
            .state(log)
    }

    #[tokio::test]
    async fn an_apps_own_builder_runs_in_memory_with_its_state() {
        // The wiring itself cannot start: nothing listens there.
        let direct = tokio::time::timeout(WAIT, service(Log::default()).build()).await;
        assert!(!matches!(direct, Ok(Ok(_))), "built without RabbitMQ");
        let log = Log::default();
        let app = TestApp::from_builder(service(log.clone()))
            .start()
            .await
            .expect("starts without RabbitMQ");
        app.publish(&Greeting { to: "Ada".into() })
            .await
            .expect("published");
        app.wait_handled::<Greeting>(1, WAIT)
            .await
            .expect("handled");
        assert_eq!(log.items(), ["hello Ada"]);
    }
}

/// The test of `docs/testing.md`, as a user would copy it.
mod docs_example {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use heytom_mq::prelude::*;
    use heytom_mq::testing::TestApp;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[rabbitmq(routing_key = "order.placed", exchange = "order.exchange")]
    pub struct OrderPlaced {
        pub order_id: String,
        pub amount: f64,
    }

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[kafka(topic = "invoices")]
    pub struct InvoiceSent {
        pub order_id: String,
    }

    /// The billing ledger, shared with the handler as `State<Ledger>`.
    #[derive(Clone, Default)]
    pub struct Ledger(Arc<Mutex<Vec<String>>>);

    #[handler]
    async fn bill(
        event: OrderPlaced,
        ctx: Context,
        State(ledger): State<Ledger>,
    ) -> Result<(), HandlerError> {
        if event.amount < 0.0 {
            return Err(format!("negative amount {}", event.amount).into());
        }
        ledger.0.lock().unwrap().push(event.order_id.clone());
        ctx.publish(&InvoiceSent {
            order_id: event.order_id,
        })
        .await?;
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn billing_sends_an_invoice_and_refuses_negative_amounts() -> Result<(), heytom_mq::Error>
    {
        let ledger = Ledger::default();
        let app = TestApp::builder()
            .discover_in(module_path!()) // this module's #[handler]s
            .state(ledger.clone())
            .retry_policy(
                RetryPolicy::default()
                    .max_attempts(5)
                    .initial_backoff(Duration::from_secs(60)),
            )
            .start()
            .await?;

        app.publish(&OrderPlaced {
            order_id: "A-1".into(),
            amount: 20.0,
        })
        .await?;
        app.publish(&OrderPlaced {
            order_id: "A-2".into(),
            amount: -1.0,
        })
        .await?;
        // Five attempts a minute or more apart: at once, on the paused clock.
        let handled = app
            .wait_handled::<OrderPlaced>(2, Duration::from_secs(3600))
            .await?;
        assert_eq!(handled.iter().filter(|h| h.succeeded()).count(), 1);

        assert_eq!(*ledger.0.lock().unwrap(), ["A-1"]);
        assert_eq!(app.published::<InvoiceSent>()[0].order_id, "A-1");
        let dead = app.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].dead_letter.attempts, 5);
        assert!(dead[0].dead_letter.reason.contains("negative amount"));
        app.shutdown().await
    }
}
