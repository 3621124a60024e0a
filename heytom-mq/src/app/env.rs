//! [`App::from_env`]: an app configured from environment variables.

use super::{App, AppBuilder};
#[cfg(not(feature = "_outbox"))]
use crate::error::Error;
#[cfg(not(feature = "_outbox"))]
use crate::redact::redact_url;

impl App {
    /// A builder configured from `HEYTOM_RABBITMQ_URL`,
    /// `HEYTOM_KAFKA_BOOTSTRAP_SERVERS` and `HEYTOM_DATABASE_URL`; with none
    /// set it uses the in-memory broker.
    pub fn from_env() -> AppBuilder {
        let mut b = AppBuilder::default();
        for from_env in crate::transport::FROM_ENV {
            if let Some(config) = from_env() {
                b.transports.push(config);
            }
        }
        if let Some(url) = env_var("HEYTOM_DATABASE_URL") {
            #[cfg(feature = "_outbox")]
            {
                b = match crate::outbox::Outbox::from_url(&url) {
                    Ok(o) => b.outbox(o),
                    Err(e) => b.defer_error(e),
                };
            }
            #[cfg(not(feature = "_outbox"))]
            {
                b = b.defer_error(Error::config(format!(
                    "HEYTOM_DATABASE_URL is set ({}) but heytom-mq was built without a database feature",
                    redact_url(&url)
                )));
            }
        }
        b
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
