//! The suite on the in-memory transport.

use heytom_mq::{App, AppBuilder, Event, Headers, InMemoryBroker, RunningApp};

use crate::harness::{Features, Fixture, RawMessage, WAIT};

suite_events! {
    #[event(name = "conformance.memory.RoundTrip")] RoundTrip;
    #[event(name = "conformance.memory.Batch")] Batch;
    #[event(name = "conformance.memory.FanOut")] FanOut;
    #[event(name = "conformance.memory.Job")] Job;
    #[event(name = "conformance.memory.Flaky")] Flaky;
    #[event(name = "conformance.memory.Doomed")] Doomed;
    #[event(name = "conformance.memory.Strict")] Strict;
    // The in-memory broker honours a Kafka partition key: one lane per key.
    #[event(name = "conformance.memory.Posting")]
    #[kafka(topic = "conformance-memory-posting", partition_key = key)]
    Posting;
    #[event(name = "conformance.memory.Slow")] Slow;
    #[event(name = "conformance.memory.Placed")] Placed;
    #[event(name = "conformance.memory.Shipped")] Shipped;
    #[event(name = "conformance.memory.Stored")] Stored;
    #[event(name = "conformance.memory.Urgent")] Urgent;
    #[event(name = "conformance.memory.Stubborn")] Stubborn;
}

suite_handlers!();

/// One in-process broker per test: apps built from one fixture share it.
pub struct Memory {
    broker: InMemoryBroker,
}

impl Fixture for Memory {
    type Events = Events;

    async fn setup() -> Option<Self> {
        Some(Memory {
            broker: InMemoryBroker::new(),
        })
    }

    fn features(&self) -> Features {
        Features {
            per_key_ordering: true,
            // Groups live as long as the broker: a restarted app resumes.
            persistent: true,
            priority_header: None,
        }
    }

    fn builder(&self) -> AppBuilder {
        App::builder().in_memory_broker(self.broker.clone())
    }

    async fn start(&self, builder: AppBuilder) -> RunningApp {
        builder.start().await.expect("in-memory app starts")
    }

    async fn publish_raw<E: Event>(&self, headers: Headers, body: Vec<u8>) {
        let groups = self.broker.publish_raw(E::NAME, headers, body, None);
        assert!(groups > 0, "no subscription to `{}` yet", E::NAME);
    }

    async fn dead_letters<E: Event>(
        &self,
        handler: &str,
        want: usize,
        matches: impl Fn(&RawMessage) -> bool,
    ) -> Vec<RawMessage> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found: Vec<RawMessage> = self
                .broker
                .dead_letters()
                .into_iter()
                // The group of a handler without `group` is its name.
                .filter(|d| d.topic == E::NAME && d.group == handler)
                .map(|d| RawMessage {
                    headers: d.headers,
                    body: d.body,
                })
                .filter(|m| matches(m))
                .collect();
            if found.len() >= want {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {want} dead letters of `{}`; have {found:?}",
                E::NAME
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

suite_tests!(
    Memory;
    restart_resumes_where_it_left_off,
    shutdown_mid_retry_hands_the_message_back,
);
