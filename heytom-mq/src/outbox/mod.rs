//! The local message table (transactional outbox). (Being built: see issue 5.)

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::producer::Producer;

/// Where the local message table lives.
#[derive(Debug, Clone)]
pub struct Outbox {
    table_name: String,
}

impl Outbox {
    /// An outbox configured from a database URL (connects lazily).
    pub fn from_url(url: &str) -> Result<Self> {
        Err(Error::config(format!(
            "outbox from URL not implemented yet ({})",
            crate::app::redact_url(url)
        )))
    }

    /// Sets the table name (checked by `AppBuilder::build`).
    pub fn table_name(mut self, name: impl Into<String>) -> Self {
        self.table_name = name.into();
        self
    }
}

/// Retry scanner settings.
#[derive(Debug, Clone)]
pub struct LocalMessageRetryOptions {
    /// Scan at all.
    pub enabled: bool,
    /// Time between scans.
    pub scan_interval: Duration,
    /// Rows per scan.
    pub batch_size: u32,
    /// Attempts before a row stays Failed.
    pub max_retry_count: u32,
    /// Table name.
    pub table_name: String,
}

impl Default for LocalMessageRetryOptions {
    fn default() -> Self {
        LocalMessageRetryOptions {
            enabled: true,
            scan_interval: Duration::from_secs(30),
            batch_size: 100,
            max_retry_count: 5,
            table_name: "LocalMessages".to_owned(),
        }
    }
}

/// Resolved outbox configuration.
#[derive(Debug)]
pub struct OutboxConfig {
    outbox: Outbox,
    retry: LocalMessageRetryOptions,
}

pub(crate) fn resolve_config(
    outbox: Option<Outbox>,
    retry: Option<LocalMessageRetryOptions>,
) -> Result<Option<OutboxConfig>> {
    Ok(outbox.map(|outbox| OutboxConfig {
        outbox,
        retry: retry.unwrap_or_default(),
    }))
}

/// The running outbox: repository + relay.
#[derive(Debug)]
pub struct OutboxRuntime {
    #[allow(dead_code)]
    config: OutboxConfig,
    #[allow(dead_code)]
    producer: Producer,
}

impl OutboxRuntime {
    pub(crate) async fn build(config: OutboxConfig, producer: Producer) -> Result<Arc<Self>> {
        Ok(Arc::new(OutboxRuntime { config, producer }))
    }

    pub(crate) fn start(self: &Arc<Self>) {}

    pub(crate) async fn stop(&self) {}
}

/// Message status in the local message table.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Written, not yet sent.
    Pending = 0,
    /// Sent and confirmed.
    Sent = 1,
    /// Sending failed.
    Failed = 2,
}

/// A row of the local message table.
#[derive(Debug, Clone)]
pub struct LocalMessage;

/// Storage of local messages.
pub trait LocalMessageRepository {}

/// A transaction that enqueues events.
#[derive(Debug)]
pub struct OutboxTransaction;
