//! RabbitMQ transport on lapin. (Being built: see issue 3.)

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::transport::Transport;

/// Connection settings for RabbitMQ.
#[derive(Clone)]
pub struct RabbitMqOptions {
    /// `amqp://` or `amqps://` URL.
    pub(crate) url: String,
}

impl std::fmt::Debug for RabbitMqOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqOptions")
            .field("url", &crate::app::redact_url(&self.url))
            .finish()
    }
}

impl RabbitMqOptions {
    /// Options for a broker URL.
    pub fn new(url: impl Into<String>) -> Self {
        RabbitMqOptions { url: url.into() }
    }
}

pub(crate) async fn connect_transport(options: RabbitMqOptions) -> Result<Arc<dyn Transport>> {
    Err(Error::config(format!(
        "RabbitMQ transport not implemented yet ({options:?})"
    )))
}

crate::producer::manual_producer!(
    /// A producer on RabbitMQ.
    RabbitMqProducer
);

crate::consumer::manual_consumer!(
    /// A consumer on RabbitMQ.
    RabbitMqConsumer
);
