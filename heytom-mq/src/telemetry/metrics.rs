//! Metrics through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! With the cargo feature `metrics`, heytom-mq records the metrics named in
//! [`metric_names`] on whatever recorder the application installed
//! (`metrics-exporter-prometheus`, ...). Install it before the app is
//! built; without one the facade records nothing. Without the feature
//! every helper here is empty and inlined away: no clock is read and no
//! label is built on the message path.
//!
//! The helpers take the label values the hooks have at hand; the names and
//! label keys are fixed here, once.

use crate::event::TransportKind;

/// The metric names heytom-mq records (feature `metrics`), with their labels.
///
/// ```
/// use heytom_mq::metric_names;
/// assert_eq!(metric_names::MESSAGES_PUBLISHED_TOTAL, "heytom_messages_published_total");
/// ```
pub mod metric_names {
    /// Counter {event, transport, outcome = ok | error}: messages handed to a
    /// transport (directly or by the outbox relay) and how the broker answered.
    pub const MESSAGES_PUBLISHED_TOTAL: &str = "heytom_messages_published_total";
    /// Counter {event, handler, outcome = ack | retry | dead_letter}: one per
    /// handler attempt; a failure with attempts left is `retry`, the last one
    /// `dead_letter`.
    pub const MESSAGES_CONSUMED_TOTAL: &str = "heytom_messages_consumed_total";
    /// Histogram {event, handler}: seconds one handler attempt took.
    pub const HANDLER_DURATION_SECONDS: &str = "heytom_handler_duration_seconds";
    /// Histogram {transport}: seconds from a publish call to the broker's
    /// confirm (one observation per call; a batch is one call).
    pub const PUBLISH_DURATION_SECONDS: &str = "heytom_publish_duration_seconds";
    /// Gauge {status = pending | sent | failed}: rows in the local message
    /// table, refreshed by the outbox scanner after each scan.
    pub const OUTBOX_ROWS: &str = "heytom_outbox_rows";
    /// Gauge: age in seconds of the oldest Pending row (0 when none),
    /// refreshed by the outbox scanner.
    pub const OUTBOX_OLDEST_PENDING_SECONDS: &str = "heytom_outbox_oldest_pending_seconds";
    /// Histogram: seconds from a row's creation (in the business
    /// transaction) to the broker's confirm of its message.
    pub const OUTBOX_COMMIT_TO_SENT_SECONDS: &str = "heytom_outbox_commit_to_sent_seconds";
    /// Gauge {topic, partition}: messages between a Kafka consumer group's
    /// committed offset and the partition's high watermark, from
    /// librdkafka's statistics (every [`KAFKA_STATISTICS_INTERVAL_MS`]
    /// unless `statistics.interval.ms` is set in the consumer properties).
    ///
    /// [`KAFKA_STATISTICS_INTERVAL_MS`]: super::KAFKA_STATISTICS_INTERVAL_MS
    pub const KAFKA_CONSUMER_LAG: &str = "heytom_kafka_consumer_lag";
}

/// librdkafka's `statistics.interval.ms` for consumers when the feature
/// `metrics` is on and the consumer properties do not set it.
pub const KAFKA_STATISTICS_INTERVAL_MS: u32 = 5_000;

/// What became of one handler attempt, for
/// [`metric_names::MESSAGES_CONSUMED_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consumed {
    Ack,
    Retry,
    DeadLetter,
}

#[cfg(feature = "metrics")]
impl Consumed {
    fn as_str(self) -> &'static str {
        match self {
            Consumed::Ack => "ack",
            Consumed::Retry => "retry",
            Consumed::DeadLetter => "dead_letter",
        }
    }
}

/// A stopwatch that reads the clock only when metrics are compiled in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timer {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Timer {
    #[inline]
    pub(crate) fn start() -> Self {
        Timer {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    #[cfg(feature = "metrics")]
    fn seconds(self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// `ok` and `failed` messages of `event` were published on `transport`;
/// the call took `timer`.
#[inline]
pub(crate) fn published(
    event: &str,
    transport: TransportKind,
    ok: usize,
    failed: usize,
    timer: Timer,
) {
    #[cfg(feature = "metrics")]
    {
        use metric_names::*;
        let t = transport.as_str();
        if ok > 0 {
            metrics::counter!(MESSAGES_PUBLISHED_TOTAL, "event" => event.to_owned(), "transport" => t, "outcome" => "ok")
                .increment(ok as u64);
        }
        if failed > 0 {
            metrics::counter!(MESSAGES_PUBLISHED_TOTAL, "event" => event.to_owned(), "transport" => t, "outcome" => "error")
                .increment(failed as u64);
        }
        metrics::histogram!(PUBLISH_DURATION_SECONDS, "transport" => t).record(timer.seconds());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (event, transport, ok, failed, timer);
}

/// Publish results of a mixed batch (the relay's): counted per event and
/// outcome, one duration observation for the call.
#[inline]
pub(crate) fn published_each<'a>(
    transport: TransportKind,
    results: impl Iterator<Item = (&'a str, bool)>,
    timer: Timer,
) {
    #[cfg(feature = "metrics")]
    {
        use metric_names::*;
        let t = transport.as_str();
        let mut counts: Vec<(&str, bool, u64)> = Vec::new();
        for (event, ok) in results {
            match counts.iter_mut().find(|(e, o, _)| *e == event && *o == ok) {
                Some((_, _, n)) => *n += 1,
                None => counts.push((event, ok, 1)),
            }
        }
        for (event, ok, n) in counts {
            let outcome = if ok { "ok" } else { "error" };
            metrics::counter!(MESSAGES_PUBLISHED_TOTAL, "event" => event.to_owned(), "transport" => t, "outcome" => outcome)
                .increment(n);
        }
        metrics::histogram!(PUBLISH_DURATION_SECONDS, "transport" => t).record(timer.seconds());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (transport, results, timer);
}

/// One attempt of `handler` on an `event` ended as `outcome` after `timer`.
#[inline]
pub(crate) fn consumed(event: &'static str, handler: &str, outcome: Consumed, timer: Timer) {
    #[cfg(feature = "metrics")]
    {
        use metric_names::*;
        metrics::counter!(MESSAGES_CONSUMED_TOTAL, "event" => event, "handler" => handler.to_owned(), "outcome" => outcome.as_str())
            .increment(1);
        metrics::histogram!(HANDLER_DURATION_SECONDS, "event" => event, "handler" => handler.to_owned())
            .record(timer.seconds());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (event, handler, outcome, timer);
}

/// The local message table's rows per status and the age of the oldest
/// Pending row, as the scanner counted them.
#[inline]
#[cfg(feature = "_outbox")]
pub(crate) fn outbox_rows(pending: u64, sent: u64, failed: u64, oldest_pending_seconds: f64) {
    #[cfg(feature = "metrics")]
    {
        use metric_names::*;
        metrics::gauge!(OUTBOX_ROWS, "status" => "pending").set(pending as f64);
        metrics::gauge!(OUTBOX_ROWS, "status" => "sent").set(sent as f64);
        metrics::gauge!(OUTBOX_ROWS, "status" => "failed").set(failed as f64);
        metrics::gauge!(OUTBOX_OLDEST_PENDING_SECONDS).set(oldest_pending_seconds.max(0.0));
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (pending, sent, failed, oldest_pending_seconds);
}

/// Whether the outbox scanner should count rows for the gauges.
#[inline]
#[cfg(feature = "_outbox")]
pub(crate) const fn outbox_gauges_enabled() -> bool {
    cfg!(feature = "metrics")
}

/// A row created at `created_at` was confirmed by the broker now.
#[inline]
#[cfg(feature = "_outbox")]
pub(crate) fn outbox_sent(created_at: chrono::DateTime<chrono::Utc>) {
    #[cfg(feature = "metrics")]
    {
        let secs = (chrono::Utc::now() - created_at)
            .to_std()
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::histogram!(metric_names::OUTBOX_COMMIT_TO_SENT_SECONDS).record(secs);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = created_at;
}

/// Whether Kafka consumers should ask librdkafka for statistics.
#[inline]
#[cfg(feature = "kafka")]
pub(crate) const fn kafka_lag_enabled() -> bool {
    cfg!(feature = "metrics")
}

/// A Kafka consumer's lag on one partition (negative: unknown, not recorded).
#[inline]
#[cfg(feature = "kafka")]
pub(crate) fn kafka_lag(topic: &str, partition: i32, lag: i64) {
    #[cfg(feature = "metrics")]
    if lag >= 0 {
        metrics::gauge!(metric_names::KAFKA_CONSUMER_LAG, "topic" => topic.to_owned(), "partition" => partition.to_string())
            .set(lag as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (topic, partition, lag);
}
