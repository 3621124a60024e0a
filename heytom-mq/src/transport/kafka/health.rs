//! The Kafka transport's connection state, from librdkafka's callbacks.
//!
//! librdkafka reconnects by itself and reports no "connected" event, so the
//! state is pieced together: a client error saying the brokers cannot be
//! reached (all brokers down, transport failure, name resolution,
//! authentication) marks the transport down with that error; the admin
//! client's statistics (every [`STATS_INTERVAL_MS`], with a broker list
//! refresh every [`METADATA_REFRESH_MS`] so that an idle client reconnects)
//! showing a broker `UP` mark it connected again.

use std::sync::Arc;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Statistics;

use super::{TracingContext, TransportInner};
use crate::transport::health::LinkState;

/// How often the admin client reports its brokers' states.
pub(crate) const STATS_INTERVAL_MS: &str = "5000";

/// How often the admin client refreshes the broker list (which reconnects it).
pub(crate) const METADATA_REFRESH_MS: &str = "10000";

impl TransportInner {
    /// The context of a client of this transport: its errors and
    /// statistics update the transport's connection state.
    pub(super) fn context(&self) -> TracingContext {
        TracingContext {
            link: self.link.clone(),
        }
    }
}

/// The admin client's settings: statistics on, broker list refreshed often.
pub(super) fn admin_config(mut config: ClientConfig) -> ClientConfig {
    config.set("statistics.interval.ms", STATS_INTERVAL_MS);
    config.set("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS);
    config
}

/// Whether an error means the brokers cannot be reached.
fn is_unreachable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SSL
    )
}

/// A client error: marks the transport down when it says the brokers
/// cannot be reached.
pub(super) fn client_error(link: &Arc<LinkState>, error: &KafkaError, reason: &str) {
    if error.rdkafka_error_code().is_some_and(is_unreachable) {
        link.failed(Some(format!("{error}: {reason}")));
    }
}

/// Statistics: a broker `UP` means the transport reaches the cluster.
pub(super) fn client_stats(link: &Arc<LinkState>, statistics: &Statistics) {
    if statistics.brokers.values().any(|b| b.state == "UP") {
        link.ok();
    }
}
