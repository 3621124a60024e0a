//! The checks `AppBuilder::build` runs before it connects anything: the
//! numbers of the app's own settings, and an outbox only over transports
//! that confirm delivery.

use std::time::Duration;

use crate::error::{check, Error, Result};
use crate::handler::HandlerEntry;
use crate::retry::RetryPolicy;
#[cfg(feature = "_outbox")]
use crate::{
    event::{Route, TransportKind},
    transport::TransportConfig,
};

/// The largest concurrency a handler may ask for.
const MAX_HANDLER_CONCURRENCY: usize = 100_000;

/// Checks the numbers of the app's own settings, the retry policies and the
/// handlers' routes and concurrency (the transports check their options
/// when they connect, the outbox in `resolve_config`).
pub(super) fn settings(
    retry: &RetryPolicy,
    shutdown_timeout: Duration,
    handlers: &[HandlerEntry],
) -> Result<()> {
    let prefixed = |prefix: String, e: Error| match e {
        Error::Configuration(m) => Error::Configuration(format!("{prefix}: {m}")),
        other => other,
    };
    retry
        .validate()
        .map_err(|e| prefixed("AppBuilder::retry_policy".to_owned(), e))?;
    check::duration(
        "AppBuilder::shutdown_timeout",
        shutdown_timeout,
        Duration::ZERO,
        check::DAY,
    )?;
    let mut routes_checked: Vec<&str> = Vec::new();
    for h in handlers {
        if let Some(policy) = &h.retry {
            policy
                .validate()
                .map_err(|e| prefixed(format!("handler `{}`", h.name), e))?;
        }
        if let Some(n) = h.concurrency {
            let setting = format!("handler `{}`: concurrency", h.name);
            check::int(&setting, n as u64, 1, MAX_HANDLER_CONCURRENCY as u64)?;
        }
        if !routes_checked.contains(&h.event_name) {
            routes_checked.push(h.event_name);
            h.route.validate(h.event_name)?;
        }
    }
    Ok(())
}

/// Refuses transports that cannot confirm delivery of the events the outbox
/// may send through them (every registered event, and every handled one).
#[cfg(feature = "_outbox")]
pub(super) fn confirmed_delivery(
    configs: &[Box<dyn TransportConfig>],
    kinds: &[TransportKind],
    handlers: &[HandlerEntry],
) -> Result<()> {
    let mut events: Vec<(&'static str, &'static Route)> = Vec::new();
    let registered = inventory::iter::<crate::event::EventRegistration>
        .into_iter()
        .map(|r| (r.name, (r.route)()));
    for (name, route) in registered.chain(handlers.iter().map(|h| (h.event_name, h.route))) {
        if !events.iter().any(|(n, _)| *n == name) {
            events.push((name, route));
        }
    }
    for config in configs {
        let kind = config.kind();
        let carried: Vec<(&'static str, &'static Route)> = events
            .iter()
            .copied()
            .filter(|(_, route)| {
                crate::producer::resolve_kind(kinds.iter().copied(), route) == Some(kind)
            })
            .collect();
        if let Some(reason) = config.unconfirmed_delivery(&carried) {
            return Err(Error::config(format!(
                "the outbox marks a row Sent once its transport confirms the message, but {reason}; \
                 a row could be marked Sent for a message the broker never stored. \
                 Turn the confirmation on, or accept the risk with Outbox::allow_unconfirmed_transport(true)"
            )));
        }
    }
    Ok(())
}
