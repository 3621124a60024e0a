//! [`RabbitMqOptions`]: connection settings and defaults.

use std::str::FromStr;
use std::time::Duration;

use lapin::uri::AMQPUri;

use crate::error::{check, Error, Result};

/// The exchange of events whose `#[rabbitmq]` names none, and of events with no attribute.
pub const DEFAULT_EXCHANGE: &str = "heytom.exchange";

/// Connection settings for RabbitMQ.
///
/// ```
/// use std::time::Duration;
/// use heytom_mq::RabbitMqOptions;
///
/// let options = RabbitMqOptions::new("amqp://guest:guest@localhost:5672/%2f")
///     .exchange("orders.exchange")
///     .prefetch(100)
///     .concurrency(16)
///     .connection_name("billing-service")
///     .publish_timeout(Duration::from_secs(5));
/// // the password never shows
/// assert!(!format!("{options:?}").contains("guest@"));
/// ```
///
/// TLS: use an `amqps://` URL; the server certificate is checked against
/// the system's root certificates.
#[derive(Clone)]
pub struct RabbitMqOptions {
    pub(crate) url: String,
    pub(crate) exchange: String,
    pub(crate) prefetch: u16,
    pub(crate) concurrency: usize,
    pub(crate) connection_name: String,
    pub(crate) publisher_confirms: bool,
    pub(crate) mandatory: bool,
    pub(crate) publish_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_initial: Duration,
    pub(crate) reconnect_max: Duration,
}

impl std::fmt::Debug for RabbitMqOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqOptions")
            .field("url", &crate::redact::redact_url(&self.url))
            .field("exchange", &self.exchange)
            .field("prefetch", &self.prefetch)
            .field("concurrency", &self.concurrency)
            .field("connection_name", &self.connection_name)
            .field("publisher_confirms", &self.publisher_confirms)
            .field("mandatory", &self.mandatory)
            .field("publish_timeout", &self.publish_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "reconnect_backoff",
                &(self.reconnect_initial, self.reconnect_max),
            )
            .finish()
    }
}

impl RabbitMqOptions {
    /// Options for a broker URL (`amqp://user:pass@host:5672/vhost`, or
    /// `amqps://` for TLS), with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        RabbitMqOptions {
            url: url.into(),
            exchange: DEFAULT_EXCHANGE.to_owned(),
            prefetch: 64,
            concurrency: 8,
            connection_name: "heytom-mq".to_owned(),
            publisher_confirms: true,
            mandatory: true,
            publish_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }

    /// The exchange for events whose attribute names none, and for events
    /// with no attribute (default `heytom.exchange`).
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// Unacknowledged deliveries the broker sends ahead to each
    /// subscription (`basic.qos`, default 64, at least 1).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Deliveries handled at once per subscription when the handler does
    /// not say (default 8; from 1 to [`MAX_CONCURRENCY`](Self::MAX_CONCURRENCY)).
    /// Parallelism is also bounded by [`prefetch`](Self::prefetch).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// The connection name shown in the management UI (default `heytom-mq`).
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// Waits for the broker's confirm of every publish (default on). Off,
    /// a publish returns once the frame is written, and nothing tells a
    /// lost message apart; an app with an outbox then refuses to build
    /// unless [`Outbox::allow_unconfirmed_transport`](crate::Outbox::allow_unconfirmed_transport)
    /// is set.
    pub fn publisher_confirms(mut self, on: bool) -> Self {
        self.publisher_confirms = on;
        self
    }

    /// Publishes with the `mandatory` flag (default on): a message no queue
    /// is bound for is returned by the broker and the publish fails. Needs
    /// [`publisher_confirms`](Self::publisher_confirms); without them the
    /// flag is not set.
    pub fn mandatory(mut self, on: bool) -> Self {
        self.mandatory = on;
        self
    }

    /// The longest a publish waits, reconnecting included, before it fails
    /// (default 15 s; from 1 ms to 1 day).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// The longest one connection attempt may take (default 10 s; from 1 ms
    /// to 1 day).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The wait between reconnection attempts: from `initial`, doubling up
    /// to `max` (defaults 100 ms and 5 s; `initial` from 1 ms, `max` from
    /// `initial` to 1 day).
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial = initial;
        self.reconnect_max = max;
        self
    }

    /// The largest [`concurrency`](Self::concurrency) accepted.
    pub const MAX_CONCURRENCY: usize = 100_000;

    /// Checks every setting; the error (an
    /// [`Error::Configuration`](crate::Error::Configuration)) names the
    /// setting and its allowed range and never shows the password. Run by
    /// `AppBuilder::build`, [`RabbitMqProducer::connect`](crate::RabbitMqProducer::connect)
    /// and [`RabbitMqConsumer::connect`](crate::RabbitMqConsumer::connect)
    /// before anything connects.
    pub fn validate(&self) -> Result<()> {
        self.parse_uri()?;
        check::int(
            "RabbitMqOptions::prefetch",
            self.prefetch,
            1,
            i128::from(u16::MAX),
        )?;
        check::int(
            "RabbitMqOptions::concurrency",
            self.concurrency as u64,
            1,
            Self::MAX_CONCURRENCY as i128,
        )?;
        check::duration(
            "RabbitMqOptions::publish_timeout",
            self.publish_timeout,
            check::MILLISECOND,
            check::DAY,
        )?;
        check::duration(
            "RabbitMqOptions::connect_timeout",
            self.connect_timeout,
            check::MILLISECOND,
            check::DAY,
        )?;
        check::duration(
            "RabbitMqOptions::reconnect_backoff initial",
            self.reconnect_initial,
            check::MILLISECOND,
            check::DAY,
        )?;
        check::duration(
            "RabbitMqOptions::reconnect_backoff max (at least the initial wait)",
            self.reconnect_max,
            self.reconnect_initial,
            check::DAY,
        )?;
        Ok(())
    }

    /// Why these options cannot confirm delivery, if they cannot.
    pub(crate) fn unconfirmed_reason(&self) -> Option<String> {
        (!self.publisher_confirms).then(|| {
            "RabbitMQ publisher confirms are off (RabbitMqOptions::publisher_confirms(false)): a publish returns once the frame is written, whether or not the broker stored the message".to_owned()
        })
    }

    /// The default exchange's name.
    pub fn default_exchange(&self) -> &str {
        &self.exchange
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        crate::redact::redact_url(&self.url)
    }

    /// Parses the URL, with an error that does not repeat the password.
    pub(crate) fn parse_uri(&self) -> Result<AMQPUri> {
        let mut uri = AMQPUri::from_str(&self.url).map_err(|e| {
            let shown = if self.url.contains("://") {
                self.redacted_url()
            } else {
                "<not a URL>".to_owned()
            };
            // The parser may quote the URL or a part of it (the password
            // included): mask the whole URL, then every secret part.
            let secrets = crate::redact::url_secrets(&self.url);
            let detail = crate::redact::scrub(
                &e.replace(&self.url, &shown),
                secrets.iter().map(String::as_str),
            );
            Error::config(format!("invalid RabbitMQ URL `{shown}`: {detail}"))
        })?;
        // amq-protocol-uri only keeps domain names and falls back to
        // `localhost` for an IP address: keep the address that was given.
        if let Some(ip) = ip_host(&self.url) {
            uri.authority.host = ip;
        }
        Ok(uri)
    }
}

/// The host of a URL when it is an IP address (IPv6 in brackets).
fn ip_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        let addr = v6.split(']').next()?;
        return addr
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|_| format!("[{addr}]"));
    }
    let host = host_port.split(':').next()?;
    host.parse::<std::net::Ipv4Addr>()
        .ok()
        .map(|_| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_hide_the_password() {
        let o = RabbitMqOptions::new("amqp://user:s3cret@localhost:5672/%2f");
        assert!(!format!("{o:?}").contains("s3cret"));
        let bad = RabbitMqOptions::new("foo:s3cret");
        let err = bad.parse_uri().unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        let bad = RabbitMqOptions::new("http://user:s3cret@localhost");
        let err = bad.parse_uri().unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn amqps_urls_parse() {
        let uri = RabbitMqOptions::new("amqps://u:p@broker.example:5671/prod")
            .parse_uri()
            .unwrap();
        assert_eq!(uri.scheme, lapin::uri::AMQPScheme::AMQPS);
        assert_eq!(uri.authority.port, 5671);
        assert_eq!(uri.vhost, "prod");
    }

    #[test]
    fn ip_hosts_are_kept() {
        let uri = RabbitMqOptions::new("amqp://guest:guest@10.1.2.3:5673/%2f")
            .parse_uri()
            .unwrap();
        assert_eq!(uri.authority.host, "10.1.2.3");
        assert_eq!(uri.authority.port, 5673);
        let uri = RabbitMqOptions::new("amqp://[::1]:5672")
            .parse_uri()
            .unwrap();
        assert_eq!(uri.authority.host, "[::1]");
        let uri = RabbitMqOptions::new("amqp://rabbit.local")
            .parse_uri()
            .unwrap();
        assert_eq!(uri.authority.host, "rabbit.local");
    }

    #[test]
    fn defaults() {
        let o = RabbitMqOptions::new("amqp://localhost");
        assert_eq!(o.default_exchange(), DEFAULT_EXCHANGE);
        assert!(o.publisher_confirms && o.mandatory);
        assert!(o.validate().is_ok());
        let e = o.prefetch(0).validate().unwrap_err();
        assert!(e.to_string().contains("RabbitMqOptions::prefetch"), "{e}");
    }
}
