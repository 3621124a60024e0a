//! The suite on the in-memory transport.

use heytom_mq::headers;
use heytom_mq::{App, AppBuilder, Event, Headers, InMemoryBroker, RunningApp};

use crate::harness::{Features, Fixture, RawMessage, WAIT};

suite_events! {
    #[event(name = "conformance.memory.RoundTrip")] RoundTrip;
    #[event(name = "conformance.memory.Batch")] Batch;
    #[event(name = "conformance.memory.FanOut")] FanOut;
    #[event(name = "conformance.memory.Job")] Job;
    // An event routed to RabbitMQ travels on the in-memory broker all the same.
    #[event(name = "conformance.memory.Flaky")]
    #[rabbitmq(routing_key = "conformance.memory.flaky")]
    Flaky;
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
    #[event(name = "conformance.memory.Explodes")] Explodes;
    #[event(name = "conformance.memory.Lenient")] Lenient;
    #[event(name = "conformance.memory.Yielding")] Yielding;
    #[event(name = "conformance.memory.Stuck")] Stuck;
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
        self.publish_raw_on_broker::<E>(headers, body).await
    }

    async fn dead_letters<E: Event>(
        &self,
        handler: &str,
        want: usize,
        matches: impl Fn(&RawMessage) -> bool,
    ) -> Vec<RawMessage> {
        self.dead_letters_on_broker::<E>(handler, want, matches)
            .await
    }
}

/// Raw publishing and dead-letter reading on the broker, shared with the
/// custom transport's fixture (its transport sits on an in-memory broker).
impl Memory {
    /// The broker the fixture's apps share.
    pub fn broker(&self) -> &InMemoryBroker {
        &self.broker
    }

    pub async fn publish_raw_on_broker<E: Event>(&self, headers: Headers, body: Vec<u8>) {
        let groups = self.broker.publish_raw(E::NAME, headers, body, None);
        assert!(groups > 0, "no subscription to `{}` yet", E::NAME);
    }

    pub async fn dead_letters_on_broker<E: Event>(
        &self,
        handler: &str,
        want: usize,
        matches: impl Fn(&RawMessage) -> bool,
    ) -> Vec<RawMessage> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let all = self.broker.dead_letters();
            let found: Vec<RawMessage> = all
                .iter()
                // The group of a handler without `group` is its name.
                .filter(|d| d.topic == E::NAME && d.group == handler)
                .map(|d| {
                    // The inspectable record says what the headers say.
                    let h = |name: &str| d.headers.get(name).map(String::as_str);
                    assert_eq!(
                        h(headers::DEAD_LETTER_REASON),
                        Some(d.dead_letter.reason.as_str())
                    );
                    assert_eq!(
                        h(headers::DEAD_LETTER_ATTEMPTS),
                        Some(d.dead_letter.attempts.to_string().as_str())
                    );
                    assert_eq!(
                        h(headers::DEAD_LETTER_HANDLER),
                        d.dead_letter.handler.as_deref()
                    );
                    // And where it came from.
                    assert_eq!(h(headers::DEAD_LETTER_TOPIC), Some(d.topic.as_str()));
                    assert_eq!(h(headers::DEAD_LETTER_GROUP), Some(d.group.as_str()));
                    RawMessage {
                        headers: d.headers.clone(),
                        body: d.body.clone(),
                    }
                })
                .filter(|m| matches(m))
                .collect();
            if found.len() >= want {
                return found;
            }
            // Until the next dead letter, whichever it is.
            if tokio::time::timeout_at(deadline, self.broker.wait_for_dead_letters(all.len() + 1))
                .await
                .is_err()
            {
                panic!(
                    "timed out waiting for {want} dead letters of `{}`; have {found:?}",
                    E::NAME
                );
            }
        }
    }
}

suite_tests!(
    Memory;
    restart_resumes_where_it_left_off,
    shutdown_mid_retry_hands_the_message_back,
    unknown_event_is_skipped_when_asked,
    unknown_event_is_handed_back_when_asked,
    a_stuck_handler_is_abandoned_at_the_shutdown_deadline,
);
