//! `#[handler]` at run time: every handler below is found through
//! `inventory`, carries its options and state requirements, and its generated
//! shim decodes the payload, extracts the arguments and calls the function.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use heytom_mq::__private::HandlerFailure;
use heytom_mq::prelude::*;
use heytom_mq::{registered_handlers, HandlerRegistration};
use heytom_mq::{Envelope, HandlerEntry, StateMap};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kafka(topic = "handler-orders", partition_key = order_id)]
pub struct OrderCreated {
    pub order_id: String,
    pub amount: f64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "Ping.v1")]
pub struct Ping {
    pub n: u32,
}

/// State shared with the handlers; each test uses its own values.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<String>>>);

#[derive(Clone)]
pub struct Counter(Arc<AtomicU32>);

// One handler per return type.

#[handler]
async fn returns_unit(event: Ping, State(seen): State<Seen>) {
    seen.0.lock().unwrap().push(format!("unit {}", event.n));
}

#[handler]
async fn returns_bool(event: Ping) -> bool {
    event.n < 3
}

#[handler]
async fn returns_handler_error(event: Ping) -> Result<(), HandlerError> {
    if event.n == 13 {
        return Err("unlucky".into());
    }
    Ok(())
}

#[handler]
async fn returns_anyhow(event: Ping) -> anyhow::Result<()> {
    anyhow::ensure!(event.n < 100, "too big: {}", event.n);
    Ok(())
}

#[handler]
async fn returns_io_error(_event: Ping) -> Result<(), std::io::Error> {
    Err(std::io::Error::other("disk on fire"))
}

// Extractors in any order, patterns, options, visibility and docs.

/// Records what it saw.
#[handler(
    name = "billing",
    group = "billing-group",
    max_attempts = 7,
    concurrency = 4
)]
pub async fn bill(
    OrderCreated { order_id, amount }: OrderCreated,
    ctx: Context,
    State(seen): State<Seen>,
    State(counter): State<Counter>,
) -> Result<(), HandlerError> {
    counter.0.fetch_add(1, Ordering::SeqCst);
    seen.0.lock().unwrap().push(format!(
        "{order_id} {amount} {} attempt {}",
        ctx.event_name(),
        ctx.attempt()
    ));
    Ok(())
}

#[handler]
async fn state_before_context(
    _event: OrderCreated,
    State(_counter): State<Counter>,
    _ctx: Context,
) {
}

fn reg(name: &str) -> &'static HandlerRegistration {
    registered_handlers()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("handler `{name}` is not registered"))
}

fn state(seen: &Seen, counter: &Counter) -> StateMap {
    let mut s = StateMap::new();
    s.insert(seen.clone());
    s.insert(counter.clone());
    s
}

async fn call<E: Event>(name: &str, event: &E, state: &StateMap) -> Result<(), HandlerFailure> {
    let envelope = Envelope::new(event).expect("serializes");
    let ctx = Context::new(&envelope, name, None);
    (reg(name).call)(&envelope, ctx, state).await
}

#[test]
fn every_handler_is_registered_with_its_metadata() {
    for name in [
        "returns_unit",
        "returns_bool",
        "returns_handler_error",
        "returns_anyhow",
        "returns_io_error",
        "billing",
        "state_before_context",
    ] {
        let r = reg(name);
        assert!(
            r.function.starts_with(module_path!()),
            "{name}: {}",
            r.function
        );
    }
    let ping = reg("returns_bool");
    assert_eq!(ping.event_name, "Ping.v1");
    assert_eq!((ping.route)(), &Route::Default);
    assert_eq!(ping.function, concat!(module_path!(), "::returns_bool"));
    assert_eq!(
        (ping.group, ping.max_attempts, ping.concurrency),
        (None, None, None)
    );
    assert!(ping.requires.is_empty());

    let bill = reg("billing");
    assert_eq!(bill.function, concat!(module_path!(), "::bill"));
    assert_eq!(bill.event_name, "OrderCreated");
    assert_eq!((bill.route)(), OrderCreated::route());
    assert_eq!(bill.group, Some("billing-group"));
    assert_eq!(bill.max_attempts, Some(7));
    assert_eq!(bill.concurrency, Some(4));
    // One entry per extractor; only the `State<T>` ones require something.
    assert_eq!(bill.requires.len(), 3);
    let entry = HandlerEntry::from_registration(bill);
    let required: Vec<_> = entry.requires().iter().map(|r| r.type_name).collect();
    assert_eq!(
        required,
        // As written in the signature.
        ["Seen", "Counter"]
    );
    assert_eq!(entry.group_override(), Some("billing-group"));
    assert_eq!(entry.concurrency_override(), Some(4));
    assert!(entry.retry_override().is_some());

    let unit = HandlerEntry::from_registration(reg("returns_unit"));
    assert_eq!(unit.requires().len(), 1);
    assert_eq!(unit.requires()[0].type_id, std::any::TypeId::of::<Seen>());

    // The function name is not registered when `name` overrides it.
    assert!(registered_handlers().all(|h| h.name != "bill"));
}

#[tokio::test]
async fn the_shim_decodes_extracts_and_calls() {
    let seen = Seen::default();
    let counter = Counter(Arc::new(AtomicU32::new(0)));
    let state = state(&seen, &counter);
    let order = OrderCreated {
        order_id: "ord-1".into(),
        amount: 9.5,
    };
    call("billing", &order, &state)
        .await
        .expect("billing succeeds");
    call("state_before_context", &order, &state)
        .await
        .expect("order of extractors does not matter");
    call("returns_unit", &Ping { n: 3 }, &state)
        .await
        .expect("unit is success");
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        *seen.0.lock().unwrap(),
        ["ord-1 9.5 OrderCreated attempt 1", "unit 3"]
    );
}

#[tokio::test]
async fn return_values_become_outcomes() {
    let state = StateMap::new();
    assert!(call("returns_bool", &Ping { n: 2 }, &state).await.is_ok());
    let failed = call("returns_bool", &Ping { n: 3 }, &state).await;
    assert!(
        matches!(failed, Err(HandlerFailure::Failed(_))),
        "{failed:?}"
    );

    assert!(call("returns_handler_error", &Ping { n: 1 }, &state)
        .await
        .is_ok());
    match call("returns_handler_error", &Ping { n: 13 }, &state).await {
        Err(HandlerFailure::Failed(e)) => assert_eq!(e.to_string(), "unlucky"),
        other => panic!("expected a failure, got {other:?}"),
    }

    assert!(call("returns_anyhow", &Ping { n: 1 }, &state).await.is_ok());
    match call("returns_anyhow", &Ping { n: 100 }, &state).await {
        Err(HandlerFailure::Failed(e)) => assert_eq!(e.to_string(), "too big: 100"),
        other => panic!("expected a failure, got {other:?}"),
    }

    match call("returns_io_error", &Ping { n: 1 }, &state).await {
        Err(HandlerFailure::Failed(e)) => assert_eq!(e.to_string(), "disk on fire"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_a_decode_failure() {
    let seen = Seen::default();
    let counter = Counter(Arc::new(AtomicU32::new(0)));
    let state = state(&seen, &counter);
    let mut envelope = Envelope::new(&OrderCreated {
        order_id: "x".into(),
        amount: 1.0,
    })
    .expect("serializes");
    envelope.payload = br#"{"order_id": 5}"#.to_vec();
    let ctx = Context::new(&envelope, "billing", None);
    let result = (reg("billing").call)(&envelope, ctx, &state).await;
    match result {
        Err(HandlerFailure::Decode(msg)) => assert!(msg.contains("OrderCreated"), "{msg}"),
        other => panic!("expected a decode failure, got {other:?}"),
    }
    // The handler never ran.
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    assert!(seen.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn missing_state_fails_the_delivery_without_calling() {
    let result = call("returns_unit", &Ping { n: 1 }, &StateMap::new()).await;
    match result {
        Err(HandlerFailure::Failed(e)) => {
            assert!(e.to_string().contains("was not registered"), "{e}")
        }
        other => panic!("expected an extractor failure, got {other:?}"),
    }
}

/// The whole path: `App` discovers the `#[handler]`, checks its state, and a
/// published event reaches it through the in-memory broker.
mod end_to_end {
    use std::time::Duration;

    use heytom_mq::prelude::*;
    use serde::{Deserialize, Serialize};
    use tokio::sync::mpsc;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[event(name = "macros-tests.Greeting")]
    pub struct Greeting {
        pub text: String,
    }

    #[derive(Clone)]
    pub struct Inbox(mpsc::UnboundedSender<(String, u32)>);

    #[handler(name = "macros-tests.greet")]
    async fn greet(event: Greeting, ctx: Context, State(inbox): State<Inbox>) -> bool {
        inbox.0.send((event.text, ctx.attempt())).is_ok()
    }

    #[tokio::test]
    async fn app_discovers_and_runs_the_handler() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let running = App::builder()
            .in_memory()
            .discover_in(module_path!())
            .state(Inbox(tx))
            .start()
            .await
            .expect("app starts");
        running
            .producer()
            .send(&Greeting {
                text: "hello".into(),
            })
            .await
            .expect("published");
        // A generous bound so a lost delivery fails the test instead of hanging it.
        let got = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("delivered before the deadline");
        assert_eq!(got, Some(("hello".to_owned(), 1)));
        running.shutdown().await.expect("shuts down");
    }

    #[tokio::test]
    async fn missing_state_is_a_build_error_naming_the_type() {
        let err = App::builder()
            .in_memory()
            .discover_in(module_path!())
            .build()
            .await
            .expect_err("Inbox state is missing");
        // As written in the signature, not `handlers::end_to_end::Inbox`.
        assert!(err.to_string().contains("needs State<Inbox>, but"), "{err}");
    }
}
