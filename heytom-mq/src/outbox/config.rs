//! The outbox's configuration as `AppBuilder::build` resolves and checks it.

use std::time::Duration;

use super::repository::check_table_name;
use super::{LocalMessageRetryOptions, Outbox, DEFAULT_TABLE_NAME};
use crate::error::{check, Error, Result};

/// The longest [`Outbox::retention`] accepted: 100 years.
const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Resolved, checked outbox configuration.
#[derive(Debug)]
pub struct OutboxConfig {
    pub(crate) outbox: Outbox,
    pub(crate) retry: LocalMessageRetryOptions,
}

/// Checks the table name, reconciles the retry options' table name with the
/// outbox's and checks the numbers.
pub(crate) fn resolve_config(
    outbox: Option<Outbox>,
    retry: Option<LocalMessageRetryOptions>,
) -> Result<Option<OutboxConfig>> {
    let Some(outbox) = outbox else {
        if retry.is_some() {
            tracing::warn!("local_message_retry is set but no outbox is configured; ignoring it");
        }
        return Ok(None);
    };
    check_table_name(&outbox.table_name).map_err(Error::Configuration)?;
    let mut retry = retry.unwrap_or_default();
    if retry.table_name != outbox.table_name {
        if retry.table_name == DEFAULT_TABLE_NAME {
            retry.table_name = outbox.table_name.clone();
        } else {
            return Err(Error::config(format!(
                "LocalMessageRetryOptions::table_name is {:?} but the Outbox's table_name is {:?}; there is one table per app: set the same name on both or leave the retry options' at its default",
                retry.table_name, outbox.table_name
            )));
        }
    }
    retry.validate()?;
    // Bounded so that no deadline computed from them (`now + lease`, `now +
    // backoff`, `now - retention`, in chrono or tokio time) can overflow.
    let (zero, day) = (Duration::ZERO, check::DAY);
    check::duration(
        "Outbox::dispatch_lease",
        outbox.dispatch_lease,
        // Renewed every third of it: shorter leases cannot be kept.
        Duration::from_millis(100),
        day,
    )?;
    check::duration("Outbox::retry_backoff", outbox.retry_backoff, zero, day)?;
    check::duration(
        "Outbox::max_retry_backoff",
        outbox.max_retry_backoff,
        zero,
        day,
    )?;
    if let Some(age) = outbox.retention {
        check::duration("Outbox::retention", age, zero, MAX_RETENTION)?;
    }
    Ok(Some(OutboxConfig { outbox, retry }))
}
