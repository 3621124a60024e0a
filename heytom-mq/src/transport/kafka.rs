//! Kafka transport on rdkafka. (Being built: see issue 4.)

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::transport::Transport;

/// Connection settings for Kafka.
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    pub(crate) bootstrap_servers: String,
}

impl KafkaOptions {
    /// Options for a bootstrap server list.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaOptions {
            bootstrap_servers: bootstrap_servers.into(),
        }
    }
}

pub(crate) async fn connect_transport(options: KafkaOptions) -> Result<Arc<dyn Transport>> {
    Err(Error::config(format!(
        "Kafka transport not implemented yet ({options:?})"
    )))
}

crate::producer::manual_producer!(
    /// A producer on Kafka.
    KafkaProducer
);

crate::consumer::manual_consumer!(
    /// A consumer on Kafka.
    KafkaConsumer
);
