//! The checks, written once; `suite_tests!` runs each on every transport.

use std::collections::{BTreeMap, HashSet};

use heytom_mq::headers;
use heytom_mq::{Event, EventId, Headers};

use heytom_mq::{HandlerEntry, RetryPolicy, UnknownEventPolicy};

use crate::harness::{
    fast_retry, handlers_of, EventSet, Failing, Fixture, Hang, Msg, Probe, Recorder, Who,
};

type Ev<F> = <F as Fixture>::Events;

/// An event reaches its handler with the envelope intact: id, name,
/// occurred-at, correlation id (defaulted and given) and user headers.
pub async fn round_trip_with_envelope<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::RoundTrip;
    let probe = Probe::new();
    let app = fx
        .start(
            fx.builder()
                .discover_in(handlers_of::<F>("round_trip"))
                .state(probe.clone()),
        )
        .await;
    let producer = app.producer();

    let before = chrono::Utc::now();
    let first = producer
        .send(&probe.event::<E<F>>("a", 1))
        .await
        .expect("send");
    let mut h = Headers::new();
    h.insert(
        headers::CORRELATION_ID.into(),
        format!("conv-{}", probe.run()),
    );
    h.insert("tenant".into(), "acme".into());
    let second = producer
        .send_with_headers(&probe.event::<E<F>>("b", 2), h)
        .await
        .expect("send_with_headers");
    probe.wait_for_count("echo", 2).await;
    app.shutdown().await.expect("shutdown");
    let after = chrono::Utc::now();

    let seen = probe.seen_as("echo");
    assert_eq!(seen.len(), 2, "each event once: {seen:?}");
    let one = seen.iter().find(|s| s.n == 1).expect("first event");
    let two = seen.iter().find(|s| s.n == 2).expect("second event");
    assert_eq!(one.ctx.event_id(), first);
    assert_eq!(two.ctx.event_id(), second);
    assert_ne!(first, second);
    assert_eq!(first.get_version_num(), 7, "event ids are UUID v7");
    for s in [one, two] {
        assert_eq!(s.ctx.event_name(), E::<F>::NAME);
        assert_eq!(s.ctx.attempt(), 1);
        // occurred_at is the producer's clock; allow for sub-second rounding.
        let at = s.ctx.occurred_at();
        assert!(
            at >= before - chrono::Duration::seconds(1) && at <= after,
            "occurred_at {at} outside [{before}, {after}]"
        );
    }
    assert_eq!(
        one.ctx.correlation_id(),
        Some(first.to_string().as_str()),
        "an event without a correlation id starts its own conversation"
    );
    assert_eq!(
        two.ctx.correlation_id(),
        Some(format!("conv-{}", probe.run()).as_str())
    );
    assert_eq!(two.ctx.header("tenant"), Some("acme"));
    assert_eq!(one.ctx.header("tenant"), None);
}

/// `send_batch` of 200 events: every one delivered, none twice.
pub async fn send_batch_delivers_each_exactly_once<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Batch;
    let probe = Probe::new();
    let app = fx
        .start(
            fx.builder()
                .discover_in(handlers_of::<F>("batch"))
                .state(probe.clone()),
        )
        .await;
    let events: Vec<E<F>> = (0..200).map(|n| probe.event("k", n)).collect();
    let ids = app
        .producer()
        .send_batch(&events)
        .await
        .expect("send_batch");
    assert_eq!(ids.len(), 200);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        200,
        "distinct ids"
    );
    probe.wait_for_count("batch_sink", 200).await;
    app.shutdown().await.expect("shutdown");

    let seen = probe.seen_as("batch_sink");
    assert_eq!(seen.len(), 200, "no event delivered twice");
    let got: HashSet<EventId> = seen.iter().map(|s| s.ctx.event_id()).collect();
    assert_eq!(got, ids.iter().copied().collect::<HashSet<_>>());
    let mut ns: Vec<u32> = seen.iter().map(|s| s.n).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..200).collect::<Vec<_>>());
}

/// Two `#[handler]`s of one event, and a third subscriber registered as a
/// `HandlerEntry` in a consumer group of its own, each get every event.
pub async fn fan_out_to_two_handlers<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::FanOut;
    let probe = Probe::new();
    let own_group = HandlerEntry::from_type::<E<F>, _>(
        "fan_c",
        Recorder {
            probe: probe.clone(),
            label: "fan_c",
        },
    )
    .group(format!("conformance.fan_c.{}", probe.run()));
    let app = fx
        .start(
            fx.builder()
                .discover_in(handlers_of::<F>("fan_out"))
                .handler_entry(own_group)
                .state(probe.clone()),
        )
        .await;
    let events: Vec<E<F>> = (0..10).map(|n| probe.event("k", n)).collect();
    let ids = app
        .producer()
        .send_batch(&events)
        .await
        .expect("send_batch");
    for label in ["fan_a", "fan_b", "fan_c"] {
        probe.wait_for_count(label, 10).await;
    }
    app.shutdown().await.expect("shutdown");
    let want: HashSet<EventId> = ids.into_iter().collect();
    for label in ["fan_a", "fan_b", "fan_c"] {
        let seen = probe.seen_as(label);
        assert_eq!(seen.len(), 10, "{label} got each event once");
        let got: HashSet<EventId> = seen.iter().map(|s| s.ctx.event_id()).collect();
        assert_eq!(got, want, "{label}");
    }
}

/// Two apps running the same handler compete: each event is handled once,
/// by one of them, and both take a share. Events go out in rounds until
/// both have handled some (a consumer group may take a while to hand the
/// second app its partitions), then no event may have been handled twice.
pub async fn competing_consumers_share_the_work<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Job;
    const ROUND: u32 = 20;
    const MAX_ROUNDS: u32 = 200;
    let probe = Probe::new();
    let start = |who: &'static str| {
        fx.start(
            fx.builder()
                .discover_in(handlers_of::<F>("competing"))
                .state(probe.clone())
                .state(Who(who)),
        )
    };
    let a = start("a").await;
    let b = start("b").await;
    let both_busy = |seen: &[crate::harness::Seen]| {
        ["a", "b"].map(|w| seen.iter().any(|s| s.who == Some(Who(w)))) == [true, true]
    };
    let mut sent = 0;
    for round in 0.. {
        let events: Vec<E<F>> = (sent..sent + ROUND).map(|n| probe.event("k", n)).collect();
        a.producer().send_batch(&events).await.expect("send_batch");
        sent += ROUND;
        probe.wait_for_count("worker", sent as usize).await;
        if both_busy(&probe.seen_as("worker")) {
            break;
        }
        assert!(
            round < MAX_ROUNDS,
            "after {sent} events one instance still got none"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A last round once both are running.
    let events: Vec<E<F>> = (sent..sent + 200).map(|n| probe.event("k", n)).collect();
    b.producer().send_batch(&events).await.expect("send_batch");
    sent += 200;
    probe.wait_for_count("worker", sent as usize).await;
    a.shutdown().await.expect("shutdown a");
    b.shutdown().await.expect("shutdown b");

    let seen = probe.seen_as("worker");
    let mut ns: Vec<u32> = seen.iter().map(|s| s.n).collect();
    ns.sort_unstable();
    assert_eq!(
        ns,
        (0..sent).collect::<Vec<_>>(),
        "each event exactly once across both apps"
    );
}

/// A failing handler is retried, `ctx.attempt()` counting up, until it succeeds.
pub async fn retry_then_success<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Flaky;
    let probe = Probe::new();
    let start = || {
        fx.start(
            fx.builder()
                .discover_in(handlers_of::<F>("retry"))
                .retry_policy(fast_retry(5))
                .state(probe.clone()),
        )
    };
    let app = start().await;
    let id = app
        .producer()
        .send(&probe.event::<E<F>>("k", 1))
        .await
        .expect("send");
    probe.wait_for_count("flaky", 3).await;
    app.shutdown().await.expect("shutdown");
    let seen = probe.seen_as("flaky");
    let attempts: Vec<u32> = seen.iter().map(|s| s.ctx.attempt()).collect();
    assert_eq!(attempts, [1, 2, 3], "retried until success, then not again");
    assert!(seen.iter().all(|s| s.ctx.event_id() == id));
    let dead = fx
        .dead_letters::<E<F>>("flaky", 0, |m| m.body_contains(probe.run()))
        .await;
    assert!(dead.is_empty(), "not dead-lettered: {dead:?}");

    if fx.features().persistent {
        // Acknowledged once it succeeded: the next consumer does not get it
        // again. A redelivery would be there as the consumer starts, ahead
        // of the event sent next on the same queue (partition).
        let app = start().await;
        app.producer()
            .send(&probe.event::<E<F>>("k", 2))
            .await
            .expect("send");
        probe
            .wait_for("the next event to succeed", |seen| {
                seen.iter().any(|s| s.n == 2 && s.ctx.attempt() == 3)
            })
            .await;
        app.shutdown().await.expect("shutdown");
        let first: Vec<u32> = probe
            .seen_as("flaky")
            .iter()
            .filter(|s| s.n == 1)
            .map(|s| s.ctx.attempt())
            .collect();
        assert_eq!(first, [1, 2, 3], "delivered again after it succeeded");
    }
}

/// Past its `max_attempts` the message goes to the dead-letter destination
/// with the reason, the attempts and the handler as headers.
pub async fn dead_letter_after_max_attempts<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Doomed;
    let probe = Probe::new();
    let app = fx
        .start(
            fx.builder()
                .discover_in(handlers_of::<F>("dead_letter"))
                // The handler's own max_attempts (3) wins over the app's.
                .retry_policy(fast_retry(10))
                .state(probe.clone()),
        )
        .await;
    let id = app
        .producer()
        .send(&probe.event::<E<F>>("k", 7))
        .await
        .expect("send");
    let dead = fx
        .dead_letters::<E<F>>("doomed", 1, |m| m.body_contains(probe.run()))
        .await;
    app.shutdown().await.expect("shutdown");

    let attempts: Vec<u32> = probe
        .seen_as("doomed")
        .iter()
        .map(|s| s.ctx.attempt())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    let m = &dead[0];
    assert_eq!(m.header(headers::DEAD_LETTER_REASON), "cannot process #7");
    assert_eq!(m.header(headers::DEAD_LETTER_ATTEMPTS), "3");
    assert_eq!(m.header(headers::DEAD_LETTER_HANDLER), "doomed");
    assert_eq!(m.header(headers::EVENT_ID), id.to_string());
    assert_eq!(m.header(headers::EVENT_NAME), E::<F>::NAME);
    let body: E<F> = serde_json::from_slice(&m.body).expect("original body");
    assert_eq!(body.n(), 7);
}

/// A handler that panics is retried like one that fails, then
/// dead-lettered with the panic message as the reason, and the consumer
/// goes on; an `anyhow` error is a failure like any other.
pub async fn panicking_handler_is_retried_then_dead_lettered<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Explodes;
    let probe = Probe::new();
    let app = fx
        .start(
            fx.builder()
                .discover_in(handlers_of::<F>("panicking"))
                .retry_policy(fast_retry(2))
                .state(probe.clone()),
        )
        .await;
    let producer = app.producer();
    let failed = producer
        .send(&probe.event::<E<F>>("k", 1))
        .await
        .expect("send");
    let panicked = producer
        .send(&probe.event::<E<F>>("k", 2))
        .await
        .expect("send");
    let fine = producer
        .send(&probe.event::<E<F>>("k", 3))
        .await
        .expect("send");
    let dead = fx
        .dead_letters::<E<F>>("explodes", 2, |m| m.body_contains(probe.run()))
        .await;
    probe
        .wait_for("the event after the panic", |seen| {
            seen.iter().any(|s| s.n == 3)
        })
        .await;
    app.shutdown().await.expect("shutdown");

    assert_eq!(dead.len(), 2, "{dead:?}");
    let dead_letter_of = |id: EventId| {
        dead.iter()
            .find(|m| m.header(headers::EVENT_ID) == id.to_string())
            .unwrap_or_else(|| panic!("no dead letter of {id}: {dead:?}"))
    };
    let m = dead_letter_of(failed);
    assert_eq!(m.header(headers::DEAD_LETTER_REASON), "cannot process #1");
    assert_eq!(m.header(headers::DEAD_LETTER_ATTEMPTS), "2");
    assert_eq!(m.header(headers::DEAD_LETTER_HANDLER), "explodes");
    let m = dead_letter_of(panicked);
    assert_eq!(
        m.header(headers::DEAD_LETTER_REASON),
        "handler panicked: handler bug"
    );
    assert_eq!(m.header(headers::DEAD_LETTER_ATTEMPTS), "2");
    assert_eq!(m.header(headers::DEAD_LETTER_HANDLER), "explodes");
    let body: E<F> = serde_json::from_slice(&m.body).expect("original body");
    assert_eq!(body.n(), 2);

    let seen = probe.seen_as("explodes");
    let attempts = |n: u32| -> Vec<u32> {
        seen.iter()
            .filter(|s| s.n == n)
            .map(|s| s.ctx.attempt())
            .collect()
    };
    // The app's policy (2 attempts): the handler sets none.
    assert_eq!(attempts(1), [1, 2]);
    assert_eq!(attempts(2), [1, 2]);
    assert_eq!(attempts(3), [1]);
    let after = seen.iter().find(|s| s.n == 3).expect("the event after");
    assert_eq!(after.ctx.event_id(), fine);
}

/// Bytes that are not the event (not JSON, JSON of another shape), a type
/// the subscription does not handle and an envelope with a broken event id
/// are dead-lettered without reaching the handler (attempts 0), each with
/// its own reason, and the consumer goes on with the next message.
pub async fn malformed_payload_is_dead_lettered_and_consuming_goes_on<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Strict;
    let probe = Probe::new();
    let app = fx
        .start(
            fx.builder()
                .discover_in(handlers_of::<F>("malformed"))
                .retry_policy(fast_retry(3))
                .state(probe.clone()),
        )
        .await;
    let run = probe.run();
    let mut h = Headers::new();
    h.insert(headers::EVENT_NAME.into(), E::<F>::NAME.into());
    // Not JSON; then JSON of the wrong shape.
    fx.publish_raw::<E<F>>(h.clone(), format!("{{not json {run}").into_bytes())
        .await;
    fx.publish_raw::<E<F>>(
        h,
        format!(r#"{{"run":"{run}","key":"k","n":"seven"}}"#).into_bytes(),
    )
    .await;
    // A well-formed message of a type this subscription does not handle.
    let mut other = Headers::new();
    other.insert(headers::EVENT_NAME.into(), "conformance.Unknown".into());
    fx.publish_raw::<E<F>>(
        other,
        format!(r#"{{"run":"{run}","key":"unknown","n":9}}"#).into_bytes(),
    )
    .await;
    // An event id that is not a UUID, and no event name (the
    // subscription's event is assumed).
    let mut bad_id = Headers::new();
    bad_id.insert(headers::EVENT_ID.into(), "not-a-uuid".into());
    fx.publish_raw::<E<F>>(
        bad_id,
        format!(r#"{{"run":"{run}","key":"bad-id","n":10}}"#).into_bytes(),
    )
    .await;
    let id = app
        .producer()
        .send(&probe.event::<E<F>>("k", 8))
        .await
        .expect("send");

    let dead = fx
        .dead_letters::<E<F>>("strict", 4, |m| m.body_contains(run))
        .await;
    probe.wait_for_count("strict", 1).await;
    app.shutdown().await.expect("shutdown");

    assert_eq!(dead.len(), 4, "{dead:?}");
    let reason_of = |body: &str| {
        dead.iter()
            .find(|m| m.body_contains(body))
            .unwrap_or_else(|| panic!("no dead letter with `{body}`: {dead:?}"))
            .header(headers::DEAD_LETTER_REASON)
    };
    // The decoder's own words are kept.
    let reason = reason_of("not json");
    assert!(
        reason.contains("payload does not decode") && reason.contains("key must be a string"),
        "{reason}"
    );
    let reason = reason_of("seven");
    assert!(
        reason.contains("payload does not decode") && reason.contains("invalid type"),
        "{reason}"
    );
    let reason = reason_of("unknown");
    assert!(
        reason.contains("unknown message type `conformance.Unknown`"),
        "{reason}"
    );
    let reason = reason_of("bad-id");
    assert!(
        reason.contains("malformed envelope")
            && reason.contains("heytom-event-id")
            && reason.contains("not-a-uuid"),
        "{reason}"
    );
    // Each reason names its own fault only.
    let reasons: Vec<&str> = dead
        .iter()
        .map(|m| m.header(headers::DEAD_LETTER_REASON))
        .collect();
    let has = |pat: &str| reasons.iter().filter(|r| r.contains(pat)).count();
    assert_eq!(has("does not decode"), 2, "{reasons:?}");
    assert_eq!(has("unknown message type"), 1, "{reasons:?}");
    assert_eq!(has("heytom-event-id"), 1, "{reasons:?}");
    for m in &dead {
        assert_eq!(m.header(headers::DEAD_LETTER_ATTEMPTS), "0");
    }
    let seen = probe.seen_as("strict");
    assert_eq!(seen.len(), 1, "only the good message reached the handler");
    assert_eq!((seen[0].n, seen[0].ctx.event_id()), (8, id));
}

/// Events with one partition key are handled in the order they were sent.
/// Transports without per-key ordering run the check on one consumer with
/// concurrency 1 (the queue's order).
pub async fn ordering_per_partition_key<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Posting;
    let probe = Probe::new();
    let handlers = if fx.features().per_key_ordering {
        "ordering_keyed"
    } else {
        "ordering_serial"
    };
    let app = fx
        .start(
            fx.builder()
                .discover_in(handlers_of::<F>(handlers))
                .state(probe.clone()),
        )
        .await;
    let keys = ["alice", "bob", "carol", "dave"];
    let mut events: Vec<E<F>> = Vec::new();
    for n in 0..50 {
        for key in keys {
            events.push(probe.event(key, n));
        }
    }
    app.producer()
        .send_batch(&events)
        .await
        .expect("send_batch");
    probe.wait_for_count("post", 200).await;
    app.shutdown().await.expect("shutdown");
    let seen = probe.seen_as("post");
    assert_eq!(seen.len(), 200);
    let mut per_key: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for s in &seen {
        per_key.entry(s.key.as_str()).or_default().push(s.n);
    }
    for key in keys {
        assert_eq!(
            per_key.get(key).cloned().unwrap_or_default(),
            (0..50).collect::<Vec<_>>(),
            "order of {key}"
        );
    }
}

/// Shutdown lets a handler that is running finish.
pub async fn graceful_shutdown_finishes_in_flight_handler<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Slow;
    let probe = Probe::new();
    let app = fx
        .start(
            fx.builder()
                .discover_in(handlers_of::<F>("graceful_shutdown"))
                .state(probe.clone()),
        )
        .await;
    app.producer()
        .send(&probe.event::<E<F>>("k", 1))
        .await
        .expect("send");
    probe.wait_for_count("slow:started", 1).await;
    app.shutdown().await.expect("shutdown");
    let labels: Vec<&str> = probe.seen().iter().map(|s| s.label).collect();
    assert_eq!(
        labels,
        ["slow:started", "slow:finished"],
        "the handler was cut off"
    );
}

/// An event published by a handler through `ctx.publish` carries the
/// conversation's correlation id and its cause's id.
pub async fn follow_up_events_carry_correlation_and_causation<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Placed;
    let probe = Probe::new();
    let app = fx
        .start(
            fx.builder()
                .discover_in(handlers_of::<F>("follow_up"))
                .state(probe.clone()),
        )
        .await;
    let producer = app.producer();
    let plain = producer
        .send(&probe.event::<E<F>>("k", 1))
        .await
        .expect("send");
    let mut h = Headers::new();
    h.insert(
        headers::CORRELATION_ID.into(),
        format!("conv-{}", probe.run()),
    );
    h.insert(
        headers::TRACEPARENT.into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    h.insert("tenant".into(), "acme".into());
    let traced = producer
        .send_with_headers(&probe.event::<E<F>>("k", 2), h)
        .await
        .expect("send_with_headers");
    probe.wait_for_count("delivered", 2).await;
    app.shutdown().await.expect("shutdown");

    let delivered = probe.seen_as("delivered");
    assert_eq!(delivered.len(), 2);
    let one = delivered.iter().find(|s| s.n == 1).expect("follow-up of 1");
    let two = delivered.iter().find(|s| s.n == 2).expect("follow-up of 2");
    let plain_s = plain.to_string();
    let traced_s = traced.to_string();
    assert_eq!(one.ctx.correlation_id(), Some(plain_s.as_str()));
    assert_eq!(
        one.ctx.header(headers::CAUSATION_ID),
        Some(plain_s.as_str())
    );
    assert_eq!(
        two.ctx.correlation_id(),
        Some(format!("conv-{}", probe.run()).as_str())
    );
    assert_eq!(
        two.ctx.header(headers::CAUSATION_ID),
        Some(traced_s.as_str())
    );
    assert_eq!(
        two.ctx.header(headers::TRACEPARENT),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(two.ctx.header("tenant"), None, "user headers stay behind");
    for s in [one, two] {
        assert_ne!(s.ctx.event_id(), plain);
        assert_ne!(s.ctx.event_id(), traced);
        assert_eq!(s.ctx.event_name(), <Ev<F> as EventSet>::Shipped::NAME);
    }
}

/// (persistent) Events published while the consumer is down are delivered
/// when it starts again; acknowledged ones are not delivered again.
pub async fn restart_resumes_where_it_left_off<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Stored;
    assert!(
        fx.features().persistent,
        "restart check run on a transport that is not persistent"
    );
    let probe = Probe::new();
    let consumer = || {
        fx.start(
            fx.builder()
                .discover_in(handlers_of::<F>("restart"))
                .state(probe.clone()),
        )
    };
    let app = consumer().await;
    app.producer()
        .send(&probe.event::<E<F>>("k", 1))
        .await
        .expect("send");
    probe.wait_for_count("durable_sink", 1).await;
    app.shutdown().await.expect("shutdown");

    // A producer-only app publishes while nobody consumes.
    let producer_app = fx.start(fx.builder().discover(false)).await;
    let events: Vec<E<F>> = (2..5).map(|n| probe.event("k", n)).collect();
    producer_app
        .producer()
        .send_batch(&events)
        .await
        .expect("send_batch");
    producer_app.shutdown().await.expect("shutdown producer");

    let app = consumer().await;
    probe.wait_for_count("durable_sink", 4).await;
    app.shutdown().await.expect("shutdown");
    let mut ns: Vec<u32> = probe.seen_as("durable_sink").iter().map(|s| s.n).collect();
    ns.sort_unstable();
    assert_eq!(ns, [1, 2, 3, 4], "each event once across the restart");
}

/// (persistent) Shutting down while a message waits for its retry hands
/// it back instead of dead-lettering or dropping it: the next app gets it
/// as a fresh delivery.
pub async fn shutdown_mid_retry_hands_the_message_back<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Stubborn;
    assert!(
        fx.features().persistent,
        "requeue check run on a transport that is not persistent"
    );
    let probe = Probe::new();
    let app = |failing: bool| {
        fx.start(
            fx.builder()
                .discover_in(handlers_of::<F>("requeue"))
                // The retry is a minute away: shutdown comes first.
                .retry_policy(
                    RetryPolicy::default()
                        .max_attempts(5)
                        .initial_backoff(std::time::Duration::from_secs(60)),
                )
                .state(probe.clone())
                .state(Failing(failing)),
        )
    };
    let first = app(true).await;
    let id = first
        .producer()
        .send(&probe.event::<E<F>>("k", 1))
        .await
        .expect("send");
    probe.wait_for_count("stubborn:failing", 1).await;
    // Waiting out the backoff would exceed the shutdown timeout (an error).
    first.shutdown().await.expect("shutdown mid-retry");
    let dead = fx
        .dead_letters::<E<F>>("stubborn", 0, |m| m.body_contains(probe.run()))
        .await;
    assert!(dead.is_empty(), "not dead-lettered: {dead:?}");

    let second = app(false).await;
    probe.wait_for_count("stubborn:ok", 1).await;
    second.shutdown().await.expect("shutdown");
    let failing = probe.seen_as("stubborn:failing");
    let ok = probe.seen_as("stubborn:ok");
    assert_eq!(failing.len(), 1, "no retry ran before shutdown");
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].ctx.event_id(), id, "the same message came back");
}

/// (priority) Waiting messages are delivered highest priority first.
pub async fn priority_is_honoured<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Urgent;
    let priority_header = fx
        .features()
        .priority_header
        .expect("priority check run on a transport without priorities");
    let probe = Probe::new();
    let consumer = || {
        fx.start(
            fx.builder()
                .discover_in(handlers_of::<F>("priority"))
                .state(probe.clone()),
        )
    };
    // Start once so the queue exists, then publish while nobody consumes.
    consumer().await.shutdown().await.expect("shutdown");
    let producer_app = fx.start(fx.builder().discover(false)).await;
    for p in [3u32, 9, 1, 7, 5, 0, 8, 2, 6, 4] {
        let mut h = Headers::new();
        h.insert(priority_header.into(), p.to_string());
        producer_app
            .producer()
            .send_with_headers(&probe.event::<E<F>>("k", p), h)
            .await
            .expect("send_with_headers");
    }
    producer_app.shutdown().await.expect("shutdown producer");
    let app = consumer().await;
    probe.wait_for_count("triage", 10).await;
    app.shutdown().await.expect("shutdown");
    let order: Vec<u32> = probe.seen_as("triage").iter().map(|s| s.n).collect();
    assert_eq!(order, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
}

/// Publishes, where `E` travels, a well-formed message of a type no
/// handler here knows (a newer version's event during a rolling deploy).
async fn publish_unknown<F: Fixture, E: Event>(fx: &F, probe: &Probe) {
    let mut h = Headers::new();
    h.insert(headers::EVENT_NAME.into(), "conformance.Unknown".into());
    let body = format!(r#"{{"run":"{}","key":"unknown","n":99}}"#, probe.run());
    fx.publish_raw::<E>(h, body.into_bytes()).await;
}

/// (persistent) Under `UnknownEventPolicy::Skip` a message of a type the
/// subscription does not handle is acknowledged unhandled: not
/// dead-lettered, not delivered again (an app that dead-letters unknown
/// types comes next and gets nothing), and consuming goes on.
pub async fn unknown_event_is_skipped_when_asked<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Lenient;
    assert!(
        fx.features().persistent,
        "unknown-event check run on a transport that is not persistent"
    );
    let probe = Probe::new();
    let app = |policy| {
        fx.start(
            fx.builder()
                .discover_in(handlers_of::<F>("unknown_skip"))
                .unknown_event_policy(policy)
                .state(probe.clone()),
        )
    };
    let first = app(UnknownEventPolicy::Skip).await;
    publish_unknown::<F, E<F>>(fx, &probe).await;
    first
        .producer()
        .send(&probe.event::<E<F>>("k", 1))
        .await
        .expect("send");
    probe.wait_for_count("lenient", 1).await;
    first.shutdown().await.expect("shutdown");

    let second = app(UnknownEventPolicy::DeadLetter).await;
    second
        .producer()
        .send(&probe.event::<E<F>>("k", 2))
        .await
        .expect("send");
    probe.wait_for_count("lenient", 2).await;
    second.shutdown().await.expect("shutdown");
    let dead = fx
        .dead_letters::<E<F>>("lenient", 0, |m| {
            m.body_contains(probe.run()) && m.body_contains("unknown")
        })
        .await;
    assert!(dead.is_empty(), "skipped, not dead-lettered: {dead:?}");
    let ns: Vec<u32> = probe.seen_as("lenient").iter().map(|s| s.n).collect();
    assert_eq!(ns, [1, 2], "the unknown message never reached the handler");
}

/// (persistent) Under `UnknownEventPolicy::HandBack` a message of a type
/// the subscription does not handle is neither handled nor dead-lettered
/// nor acknowledged: it stays for a consumer that knows the type. The app
/// that comes next dead-letters unknown types, and so dead-letters it.
///
/// Messages handed back stay where they are, for every later consumer too,
/// so a transport that keeps what earlier runs sent (a Kafka topic) starts
/// this check's group at the latest offset.
pub async fn unknown_event_is_handed_back_when_asked<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Yielding;
    assert!(
        fx.features().persistent,
        "unknown-event check run on a transport that is not persistent"
    );
    let probe = Probe::new();
    let app = |policy| {
        fx.start(
            fx.builder()
                .discover_in(handlers_of::<F>("unknown_hand_back"))
                .unknown_event_policy(policy)
                .state(probe.clone()),
        )
    };
    let first = app(UnknownEventPolicy::HandBack).await;
    // Until the consumer reads: a new Kafka group starting at the latest
    // offset skips what is sent before it is assigned its partitions.
    for n in 1.. {
        first
            .producer()
            .send(&probe.event::<E<F>>("k", n))
            .await
            .expect("send");
        let reading = probe
            .holds_within(std::time::Duration::from_secs(3), |seen| {
                seen.iter().any(|s| s.label == "yielding")
            })
            .await;
        if reading {
            break;
        }
        assert!(n < 20, "the consumer never read");
    }
    publish_unknown::<F, E<F>>(fx, &probe).await;
    // Long enough for it to be handed back at least once.
    tokio::time::sleep(UnknownEventPolicy::HAND_BACK_PAUSE * 2).await;
    first.shutdown().await.expect("shutdown");
    let unknown =
        |m: &crate::harness::RawMessage| m.body_contains(probe.run()) && m.body_contains("unknown");
    let dead = fx.dead_letters::<E<F>>("yielding", 0, unknown).await;
    assert!(dead.is_empty(), "handed back, not dead-lettered: {dead:?}");

    let second = app(UnknownEventPolicy::DeadLetter).await;
    let dead = fx.dead_letters::<E<F>>("yielding", 1, unknown).await;
    second.shutdown().await.expect("shutdown");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0].header(headers::DEAD_LETTER_REASON);
    assert!(
        reason.contains("unknown message type `conformance.Unknown`"),
        "{reason}"
    );
    assert!(
        probe.seen_as("yielding").iter().all(|s| s.key == "k"),
        "the unknown message never reached the handler"
    );
}

/// (persistent) A handler that never returns does not hold up shutdown:
/// `shutdown` returns `Error::Shutdown` within its timeout, the handler is
/// abandoned and its message, never acknowledged, goes to the next app.
pub async fn a_stuck_handler_is_abandoned_at_the_shutdown_deadline<F: Fixture>(fx: &F) {
    type E<F> = <Ev<F> as EventSet>::Stuck;
    assert!(
        fx.features().persistent,
        "abandon check run on a transport that is not persistent"
    );
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    let probe = Probe::new();
    let app = |hang: bool| {
        fx.start(
            fx.builder()
                .discover_in(handlers_of::<F>("stuck_handler"))
                .shutdown_timeout(TIMEOUT)
                .state(probe.clone())
                .state(Hang(hang)),
        )
    };
    let first = app(true).await;
    let id = first
        .producer()
        .send(&probe.event::<E<F>>("k", 1))
        .await
        .expect("send");
    probe.wait_for_count("stuck:hanging", 1).await;
    let started = tokio::time::Instant::now();
    let stopped = first.shutdown().await;
    let took = started.elapsed();
    assert!(
        matches!(stopped, Err(heytom_mq::Error::Shutdown)),
        "{stopped:?}"
    );
    // Its timeout, and a little for the scheduler.
    assert!(
        took <= TIMEOUT + std::time::Duration::from_millis(300),
        "shutdown took {took:?}"
    );

    let second = app(false).await;
    probe.wait_for_count("stuck:done", 1).await;
    second.shutdown().await.expect("shutdown");
    let done = probe.seen_as("stuck:done");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].ctx.event_id(), id, "the same message came back");
    let dead = fx
        .dead_letters::<E<F>>("stuck", 0, |m| m.body_contains(probe.run()))
        .await;
    assert!(dead.is_empty(), "not dead-lettered: {dead:?}");
}
