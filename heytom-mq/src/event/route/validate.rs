//! Run-time checks of hand-built routes. `#[kafka]` and `#[rabbitmq]` check
//! their keys at compile time; a route built with the const setters is
//! checked by `AppBuilder::build` with these.

use super::{Acks, KafkaRoute, RabbitMqRoute, Route};

impl Route {
    /// Checks the route's settings (see [`KafkaRoute::validate`] and
    /// [`RabbitMqRoute::validate`]); the error names the event.
    pub fn validate(&self, event_name: &str) -> crate::Result<()> {
        let checked = match self {
            Route::Kafka(k) => k.validate(),
            Route::RabbitMq(r) => r.validate(),
            Route::Default => Ok(()),
        };
        checked.map_err(|e| match e {
            crate::Error::Configuration(m) => {
                crate::Error::Configuration(format!("event `{event_name}`: {m}"))
            }
            other => other,
        })
    }
}

impl KafkaRoute {
    /// The longest `session_timeout_ms` librdkafka accepts.
    pub const MAX_SESSION_TIMEOUT_MS: u32 = 3_600_000;

    /// Checks the settings the way `#[kafka(...)]` does at compile time,
    /// plus librdkafka's ranges: a legal topic name, `num_partitions` and
    /// `replication_factor` at least 1 (or -1, the broker's default),
    /// `retention_ms` within a signed 64-bit number, `session_timeout_ms`
    /// from 1 to 3 600 000, `max_poll_records` from 1 to
    /// [`KafkaOptions::MAX_IN_FLIGHT`](crate::KafkaOptions::MAX_IN_FLIGHT)
    /// (when the `kafka` feature is on; 1 000 000), and no idempotence
    /// without `acks = all`.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::check;
        let t = self.topic;
        let bad_char = t
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
        if t.is_empty() || t == "." || t == ".." || t.len() > 249 || bad_char.is_some() {
            return Err(crate::Error::config(format!(
                "#[kafka(topic)] `{t}` is not a valid Kafka topic name: 1 to 249 ASCII letters, digits, `.`, `_` or `-`"
            )));
        }
        if let Some(g) = self.group_id {
            check::not_empty("#[kafka(group_id)]", g)?;
        }
        if let Some(n) = self.num_partitions.filter(|n| *n != -1) {
            check::int(
                "#[kafka(num_partitions)] (or -1 for the broker's default)",
                n,
                1,
                i128::from(i32::MAX),
            )?;
        }
        if let Some(n) = self.replication_factor.filter(|n| *n != -1) {
            check::int(
                "#[kafka(replication_factor)] (or -1 for the broker's default)",
                n,
                1,
                i128::from(i16::MAX),
            )?;
        }
        if let Some(ms) = self.retention_ms {
            check::int("#[kafka(retention_ms)]", ms, 0, i128::from(i64::MAX))?;
        }
        if let Some(ms) = self.session_timeout_ms {
            check::int(
                "#[kafka(session_timeout_ms)]",
                ms,
                1,
                i128::from(Self::MAX_SESSION_TIMEOUT_MS),
            )?;
        }
        if let Some(n) = self.max_poll_records {
            check::int("#[kafka(max_poll_records)]", n, 1, 1_000_000)?;
        }
        if self.enable_idempotence == Some(true) && self.acks.is_some_and(|a| a != Acks::All) {
            return Err(crate::Error::config(
                "#[kafka(enable_idempotence = true)] requires acks = \"all\" (Kafka refuses idempotent producing with fewer acknowledgements)",
            ));
        }
        Ok(())
    }
}

impl RabbitMqRoute {
    /// Checks the settings the way `#[rabbitmq(...)]` does at compile
    /// time: a routing key, `max_priority` from 1 to 255, and names that
    /// are not empty when given.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::check;
        check::not_empty("#[rabbitmq(routing_key)]", self.routing_key)?;
        if let Some(p) = self.max_priority {
            check::int("#[rabbitmq(max_priority)]", p, 1, 255)?;
        }
        for (key, value) in [
            ("#[rabbitmq(queue_name)]", self.queue_name),
            (
                "#[rabbitmq(dead_letter_exchange)]",
                self.dead_letter_exchange,
            ),
        ] {
            if let Some(v) = value {
                check::not_empty(key, v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_routes_are_checked() {
        assert!(KafkaRoute::new("orders").validate().is_ok());
        assert!(KafkaRoute::new("orders")
            .num_partitions(-1)
            .validate()
            .is_ok());
        for bad in [
            KafkaRoute::new(""),
            KafkaRoute::new("a b"),
            KafkaRoute::new("t").num_partitions(0),
            KafkaRoute::new("t").replication_factor(0),
            KafkaRoute::new("t").session_timeout_ms(0),
            KafkaRoute::new("t").session_timeout_ms(u32::MAX),
            KafkaRoute::new("t").max_poll_records(0),
            KafkaRoute::new("t").retention_ms(u64::MAX),
            KafkaRoute::new("t")
                .enable_idempotence(true)
                .acks(Acks::None),
            KafkaRoute::new("t").group_id(""),
        ] {
            let e = Route::Kafka(bad.clone()).validate("E").unwrap_err();
            assert!(
                matches!(&e, crate::Error::Configuration(m) if m.starts_with("event `E`: #[kafka(")),
                "{bad:?}: {e}"
            );
        }
        assert!(RabbitMqRoute::new("k").max_priority(10).validate().is_ok());
        assert!(RabbitMqRoute::new("k").max_priority(0).validate().is_err());
        assert!(RabbitMqRoute::new("").validate().is_err());
        assert!(RabbitMqRoute::new("k").queue_name("").validate().is_err());
    }
}
