//! The suite on a transport of the user's own, added through the public
//! API with its own identity (`TransportKind::Custom`), not a built-in
//! kind: a bus that delegates to an in-memory broker. Events without a
//! transport attribute travel on it because it is the app's only transport.

use std::sync::Arc;

use async_trait::async_trait;
use heytom_mq::{
    App, AppBuilder, Event, HandlerEntry, Headers, InMemoryTransport, Outgoing, Route, RunningApp,
    Subscription, SubscriptionHandle, Transport, TransportKind,
};

use crate::harness::{Features, Fixture, RawMessage};
use crate::memory::Memory;

suite_events! {
    #[event(name = "conformance.custom.RoundTrip")] RoundTrip;
    #[event(name = "conformance.custom.Batch")] Batch;
    #[event(name = "conformance.custom.FanOut")] FanOut;
    #[event(name = "conformance.custom.Job")] Job;
    #[event(name = "conformance.custom.Flaky")] Flaky;
    #[event(name = "conformance.custom.Doomed")] Doomed;
    #[event(name = "conformance.custom.Strict")] Strict;
    #[event(name = "conformance.custom.Posting")] Posting;
    #[event(name = "conformance.custom.Slow")] Slow;
    #[event(name = "conformance.custom.Placed")] Placed;
    #[event(name = "conformance.custom.Shipped")] Shipped;
    #[event(name = "conformance.custom.Stored")] Stored;
    #[event(name = "conformance.custom.Urgent")] Urgent;
    #[event(name = "conformance.custom.Stubborn")] Stubborn;
    #[event(name = "conformance.custom.Explodes")] Explodes;
    #[event(name = "conformance.custom.Lenient")] Lenient;
    #[event(name = "conformance.custom.Yielding")] Yielding;
    #[event(name = "conformance.custom.Stuck")] Stuck;
}

suite_handlers!();

/// The custom transport's identity.
const BUS: TransportKind = TransportKind::Custom("conformance-bus");

/// A transport of the user's own: every act delegated to an in-memory
/// transport, under its own identity.
struct Bus(InMemoryTransport);

#[async_trait]
impl Transport for Bus {
    fn kind(&self) -> TransportKind {
        BUS
    }
    fn group_for(&self, handler: &HandlerEntry) -> String {
        self.0.group_for(handler)
    }
    fn destination_of(&self, route: &'static Route, event_name: &'static str) -> String {
        self.0.destination_of(route, event_name)
    }
    async fn declare(
        &self,
        route: &'static Route,
        event_name: &'static str,
    ) -> heytom_mq::Result<()> {
        self.0.declare(route, event_name).await
    }
    async fn publish(&self, message: &Outgoing) -> heytom_mq::Result<()> {
        self.0.publish(message).await
    }
    async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<heytom_mq::Result<()>> {
        self.0.publish_batch(messages).await
    }
    async fn subscribe(&self, sub: Subscription) -> heytom_mq::Result<Box<dyn SubscriptionHandle>> {
        self.0.subscribe(sub).await
    }
    async fn close(&self) -> heytom_mq::Result<()> {
        self.0.close().await
    }
}

/// One broker behind the bus per test, read and written through the
/// in-memory fixture's helpers: apps built from one fixture share it.
pub struct Custom(Memory);

impl Fixture for Custom {
    type Events = Events;

    async fn setup() -> Option<Self> {
        Memory::setup().await.map(Custom)
    }

    fn features(&self) -> Features {
        Features {
            // No partition keys: the events carry no `#[kafka(partition_key)]`.
            per_key_ordering: false,
            // Groups live as long as the broker: a restarted app resumes.
            persistent: true,
            priority_header: None,
        }
    }

    fn builder(&self) -> AppBuilder {
        App::builder().transport(Arc::new(Bus(InMemoryTransport::new(
            self.0.broker().clone(),
        ))))
    }

    async fn start(&self, builder: AppBuilder) -> RunningApp {
        let running = builder
            .start()
            .await
            .expect("app on the custom transport starts");
        // Its own identity, not a built-in kind borrowed.
        assert!(
            format!("{:?}", running.producer()).contains("conformance-bus"),
            "{:?}",
            running.producer()
        );
        running
    }

    async fn publish_raw<E: Event>(&self, headers: Headers, body: Vec<u8>) {
        self.0.publish_raw_on_broker::<E>(headers, body).await
    }

    async fn dead_letters<E: Event>(
        &self,
        handler: &str,
        want: usize,
        matches: impl Fn(&RawMessage) -> bool,
    ) -> Vec<RawMessage> {
        self.0
            .dead_letters_on_broker::<E>(handler, want, matches)
            .await
    }
}

suite_tests!(
    Custom;
    restart_resumes_where_it_left_off,
    shutdown_mid_retry_hands_the_message_back,
    unknown_event_is_skipped_when_asked,
    unknown_event_is_handed_back_when_asked,
    a_stuck_handler_is_abandoned_at_the_shutdown_deadline,
);
