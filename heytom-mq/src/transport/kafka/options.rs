//! [`KafkaOptions`]: connection, security, group and topic defaults.

use std::fmt;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;
use rdkafka::ClientConfig;

use crate::error::{check, Error, Result};
use crate::event::{Acks, Route};

/// The consumer group used when neither the handler nor `#[kafka(group_id)]` names one.
pub const DEFAULT_GROUP_ID: &str = "heytom-mq";
/// The suffix of dead-letter topics: `<topic>.dlq`.
pub const DEFAULT_DEAD_LETTER_SUFFIX: &str = ".dlq";

/// Connection settings for Kafka.
///
/// Defaults that matter for safety (each can be changed per event with
/// `#[kafka(...)]` or here):
///
/// - producers wait for every in-sync replica (`acks=all`) and are
///   idempotent (`enable.idempotence=true`), unless the event's attribute
///   sets `acks` to 0 or 1 (then idempotence is off unless the attribute
///   sets `enable_idempotence = true`) or sets `enable_idempotence = false`;
///   a [`property`](Self::property) / [`producer_property`](Self::producer_property)
///   still overrides both;
/// - topics are created with the broker's default replication factor unless
///   the attribute gives `replication_factor` or [`topic_defaults`](Self::topic_defaults) does;
/// - consumers store an offset only after the message was handled (or its
///   dead letter was acknowledged) and start a new group at `earliest`;
/// - a stop waits [`drain_timeout`](Self::drain_timeout) (default 30 s) for
///   running handlers and then abandons them (their messages come again).
///
/// ```
/// use heytom_mq::KafkaOptions;
///
/// let options = KafkaOptions::new("127.0.0.1:9092")
///     .group_id("order-service")
///     .client_id("order-service-1")
///     .sasl_plain("svc", "s3cret")
///     .property("fetch.wait.max.ms", "10");
/// // secrets never show up in Debug output
/// assert!(!format!("{options:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct KafkaOptions {
    pub(crate) bootstrap_servers: String,
    pub(crate) group_id: String,
    pub(crate) client_id: Option<String>,
    pub(crate) security_protocol: Option<String>,
    pub(crate) sasl_mechanism: Option<String>,
    pub(crate) sasl_username: Option<String>,
    pub(crate) sasl_password: Option<String>,
    pub(crate) ssl_ca_location: Option<String>,
    pub(crate) ssl_certificate_location: Option<String>,
    pub(crate) ssl_key_location: Option<String>,
    pub(crate) ssl_key_password: Option<String>,
    pub(crate) properties: Vec<(String, String)>,
    pub(crate) producer_properties: Vec<(String, String)>,
    pub(crate) consumer_properties: Vec<(String, String)>,
    pub(crate) dead_letter: DeadLetterTopic,
    pub(crate) declare_topics: bool,
    pub(crate) default_num_partitions: i32,
    /// `None`: the broker's default replication factor.
    pub(crate) default_replication_factor: Option<i16>,
    pub(crate) max_in_flight: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) drain_timeout: Duration,
}

/// Where dead-lettered messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DeadLetterTopic {
    /// `<topic><suffix>`
    Suffix(String),
    /// One topic for every event.
    Fixed(String),
}

impl DeadLetterTopic {
    pub(crate) fn for_topic(&self, topic: &str) -> String {
        match self {
            DeadLetterTopic::Suffix(s) => format!("{topic}{s}"),
            DeadLetterTopic::Fixed(t) => t.clone(),
        }
    }
}

/// Whether a librdkafka property holds a secret that must not be printed
/// (`sasl.password`, `sasl.jaas.config`, `sasl.oauthbearer.client.secret`,
/// `ssl.key.password`, `ssl.key.pem`, ... : any name that looks secret).
pub(crate) fn is_secret_property(key: &str) -> bool {
    crate::redact::looks_secret(key)
}

/// The properties for Debug output: the value of a property whose name
/// looks secret, or that librdkafka does not know (a misspelled
/// `sasl.pasword` is still a password), is masked.
fn redacted_pairs(pairs: &[(String, String)]) -> Vec<(String, String)> {
    // Known to librdkafka: setting it is not "unknown" (an invalid value is
    // still a known name; topic-level names like `acks` count too).
    let known = |k: &str, v: &str| {
        !matches!(
            ClientConfig::new().set(k, v).create_native_config(),
            Err(KafkaError::ClientConfig(
                RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
                ..
            ))
        )
    };
    pairs
        .iter()
        .map(|(k, v)| {
            let v = if is_secret_property(k) || !known(k, v) {
                crate::redact::MASK.to_owned()
            } else {
                // A URL-valued property may carry a password of its own.
                crate::redact::redact_url(v)
            };
            (k.clone(), v)
        })
        .collect()
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("KafkaOptions")
            .field(
                "bootstrap_servers",
                &crate::redact::redact_url(&self.bootstrap_servers),
            )
            .field("group_id", &self.group_id)
            .field("client_id", &self.client_id)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &secret(&self.sasl_password))
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("ssl_key_password", &secret(&self.ssl_key_password))
            .field("properties", &redacted_pairs(&self.properties))
            .field(
                "producer_properties",
                &redacted_pairs(&self.producer_properties),
            )
            .field(
                "consumer_properties",
                &redacted_pairs(&self.consumer_properties),
            )
            .field("dead_letter", &self.dead_letter)
            .field("declare_topics", &self.declare_topics)
            .field("default_num_partitions", &self.default_num_partitions)
            .field(
                "default_replication_factor",
                &self.default_replication_factor,
            )
            .field("max_in_flight", &self.max_in_flight)
            .field("commit_interval", &self.commit_interval)
            .field("operation_timeout", &self.operation_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaOptions {
    /// Options for a bootstrap server list (`host:port[,host:port...]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaOptions {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: DEFAULT_GROUP_ID.to_owned(),
            client_id: None,
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            properties: Vec::new(),
            producer_properties: Vec::new(),
            consumer_properties: Vec::new(),
            dead_letter: DeadLetterTopic::Suffix(DEFAULT_DEAD_LETTER_SUFFIX.to_owned()),
            declare_topics: true,
            default_num_partitions: 1,
            default_replication_factor: None,
            max_in_flight: 2000,
            commit_interval: Duration::from_millis(1000),
            operation_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }

    /// The bootstrap servers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// The default consumer group (default `heytom-mq`), used by handlers
    /// whose event has no `group_id` and that name no group themselves.
    pub fn group_id(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = group_id.into();
        self
    }

    /// `client.id` of every client.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub fn security_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.security_protocol = Some(protocol.into());
        self
    }

    /// SASL credentials with a mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    /// Sets `security.protocol` to `sasl_ssl` unless one was set.
    pub fn sasl(
        mut self,
        mechanism: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.sasl_mechanism = Some(mechanism.into());
        self.sasl_username = Some(username.into());
        self.sasl_password = Some(password.into());
        if self.security_protocol.is_none() {
            self.security_protocol = Some("sasl_ssl".to_owned());
        }
        self
    }

    /// SASL/PLAIN credentials (see [`KafkaOptions::sasl`]).
    pub fn sasl_plain(self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.sasl("PLAIN", username, password)
    }

    /// `ssl.ca.location`: CA certificate file to verify the brokers with.
    pub fn ssl_ca_location(mut self, path: impl Into<String>) -> Self {
        self.ssl_ca_location = Some(path.into());
        self
    }

    /// `ssl.certificate.location` and `ssl.key.location` for client authentication.
    pub fn ssl_client_certificate(
        mut self,
        certificate: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        self.ssl_certificate_location = Some(certificate.into());
        self.ssl_key_location = Some(key.into());
        self
    }

    /// `ssl.key.password`.
    pub fn ssl_key_password(mut self, password: impl Into<String>) -> Self {
        self.ssl_key_password = Some(password.into());
        self
    }

    /// Any librdkafka property for every client (producers, consumers,
    /// admin), applied after heytom-mq's own settings so it wins.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// A librdkafka property for producers only (e.g. `linger.ms`).
    pub fn producer_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.producer_properties.push((key.into(), value.into()));
        self
    }

    /// A librdkafka property for consumers only (e.g. `fetch.wait.max.ms`).
    pub fn consumer_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.consumer_properties.push((key.into(), value.into()));
        self
    }

    /// Sends every dead-lettered message to this one topic instead of `<topic>.dlq`.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter = DeadLetterTopic::Fixed(topic.into());
        self
    }

    /// Dead-letter topics are `<topic><suffix>` (default `.dlq`).
    pub fn dead_letter_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.dead_letter = DeadLetterTopic::Suffix(suffix.into());
        self
    }

    /// The dead-letter topic for a topic.
    pub fn dead_letter_topic_for(&self, topic: &str) -> String {
        self.dead_letter.for_topic(topic)
    }

    /// Whether topics are created from `#[kafka(...)]` when missing (default
    /// `true`); turn off where the service account may not create topics.
    pub fn declare_topics(mut self, on: bool) -> Self {
        self.declare_topics = on;
        self
    }

    /// Partitions and replication factor for topics whose attribute gives
    /// none (each at least 1, or -1 for the broker's default). Without this
    /// call a topic is created with 1 partition and the **broker's default
    /// replication factor** (its `default.replication.factor`; Kafka 2.4 or
    /// later), so a production cluster's replication applies rather than a
    /// single copy.
    pub fn topic_defaults(mut self, num_partitions: i32, replication_factor: i16) -> Self {
        self.default_num_partitions = num_partitions;
        self.default_replication_factor = Some(replication_factor);
        self
    }

    /// Messages in flight per subscription when `max_poll_records` is not
    /// given (default 2000; from 1 to [`MAX_IN_FLIGHT`](Self::MAX_IN_FLIGHT)).
    /// The poll thread fetches while the handlers' lanes work; a bound of
    /// 500 stalled it whenever the lanes fell that far behind (`bench_kafka`
    /// consume: 0.76–0.83 of raw rdkafka at 500, 0.90–0.92 at 2000). After
    /// a crash, at most this many handled but unstored messages come again.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// How often handled offsets are committed (default 1 s; from 1 ms to
    /// 1 day); they are also committed on partition revocation and on shutdown.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Timeout of admin and metadata requests and of a send waiting for
    /// room in the producer's queue (default 30 s; from 1 ms to 1 day).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How long a revocation or shutdown waits for in-flight handlers before
    /// committing what is done (default 30 s; at most 1 day). A handler still running then
    /// is abandoned: its offset is not committed, so its message is delivered
    /// again (after a restart or to the partition's next owner). `stop()`
    /// returns within this plus [`operation_timeout`](Self::operation_timeout).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The largest [`max_in_flight`](Self::max_in_flight) (and
    /// `#[kafka(max_poll_records)]`) accepted.
    pub const MAX_IN_FLIGHT: usize = 1_000_000;

    /// Checks every setting; the error (an
    /// [`Error::Configuration`](crate::Error::Configuration)) names the
    /// setting and its allowed range, and never shows a secret. Run by
    /// `AppBuilder::build`, [`KafkaProducer::new`](crate::KafkaProducer::new)
    /// and [`KafkaConsumer::new`](crate::KafkaConsumer::new).
    ///
    /// Besides the ranges, every librdkafka property given (with
    /// [`property`](Self::property), [`producer_property`](Self::producer_property),
    /// [`consumer_property`](Self::consumer_property) or the dedicated
    /// setters) is handed to librdkafka once, so a misspelled name or an
    /// invalid value fails here.
    pub fn validate(&self) -> Result<()> {
        check::not_empty("KafkaOptions::bootstrap_servers", &self.bootstrap_servers)?;
        if self.bootstrap_servers.contains('@') {
            // librdkafka would take `user:pass@host` for a host name and
            // print it in every connection log line.
            return Err(Error::config(format!(
                "KafkaOptions::bootstrap_servers `{}` holds credentials (`user:password@`); Kafka takes none there: give them with KafkaOptions::sasl / sasl_plain",
                crate::redact::redact_url(&self.bootstrap_servers)
            )));
        }
        check::not_empty("KafkaOptions::group_id", &self.group_id)?;
        match &self.dead_letter {
            DeadLetterTopic::Suffix(s) => check::not_empty(
                "KafkaOptions::dead_letter_suffix (dead letters would go back to the topic they came from)",
                s,
            )?,
            DeadLetterTopic::Fixed(t) => check::not_empty("KafkaOptions::dead_letter_topic", t)?,
        }
        if self.default_num_partitions != -1 {
            check::int(
                "KafkaOptions::topic_defaults num_partitions (or -1 for the broker's default)",
                self.default_num_partitions,
                1,
                i128::from(i32::MAX),
            )?;
        }
        if let Some(rf) = self.default_replication_factor.filter(|rf| *rf != -1) {
            check::int(
                "KafkaOptions::topic_defaults replication_factor (or -1 for the broker's default)",
                rf,
                1,
                i128::from(i16::MAX),
            )?;
        }
        check::int(
            "KafkaOptions::max_in_flight",
            self.max_in_flight as u64,
            1,
            Self::MAX_IN_FLIGHT as i128,
        )?;
        check::duration(
            "KafkaOptions::commit_interval",
            self.commit_interval,
            check::MILLISECOND,
            check::DAY,
        )?;
        check::duration(
            "KafkaOptions::operation_timeout",
            self.operation_timeout,
            check::MILLISECOND,
            check::DAY,
        )?;
        check::duration(
            "KafkaOptions::drain_timeout",
            self.drain_timeout,
            Duration::ZERO,
            check::DAY,
        )?;
        // librdkafka checks each name and value as it is set.
        for (what, extra) in [
            ("producer", &self.producer_properties),
            ("consumer", &self.consumer_properties),
        ] {
            let mut c = self.client_config();
            for (k, v) in extra {
                c.set(k, v);
            }
            c.create_native_config()
                .map_err(|e| self.config_error(&format!("invalid Kafka {what} settings"), &e))?;
        }
        Ok(())
    }

    /// Every secret these options hold: the SASL and key passwords, the
    /// values of properties whose name looks secret, and the password of
    /// the bootstrap servers' userinfo, if any.
    fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = [&self.sasl_password, &self.ssl_key_password]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for (k, v) in self
            .properties
            .iter()
            .chain(&self.producer_properties)
            .chain(&self.consumer_properties)
        {
            if is_secret_property(k) {
                out.push(v.clone());
                // A JAAS configuration holds its password inside.
                out.extend(crate::redact::url_secrets(v));
            }
        }
        out.extend(crate::redact::url_secrets(&self.bootstrap_servers));
        out
    }

    /// `text` with every secret of these options masked.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let secrets = self.secrets();
        crate::redact::scrub(text, secrets.iter().map(String::as_str))
    }

    /// An [`Error::Configuration`] for a librdkafka error, scrubbed: a
    /// rejected property's value is shown only when its name does not look
    /// secret, and no secret of these options survives anywhere in the text
    /// (librdkafka and rdkafka both echo the rejected value).
    pub(crate) fn config_error(&self, what: &str, e: &KafkaError) -> Error {
        let detail = match e {
            KafkaError::ClientConfig(result, desc, key, value) => {
                // The value of a secret, or of a property librdkafka does
                // not know (a misspelled `sasl.pasword`), is never shown.
                let hide =
                    is_secret_property(key) || *result == RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN;
                if hide {
                    let desc = if value.is_empty() {
                        desc.clone()
                    } else {
                        desc.replace(value.as_str(), crate::redact::MASK)
                    };
                    format!("{desc} (property `{key}`, value not shown)")
                } else {
                    format!("{desc} (property `{key}` = `{value}`)")
                }
            }
            other => other.to_string(),
        };
        Error::config(format!("{what}: {}", self.scrub(&detail)))
    }

    /// The `acks` a producer for a route with `route_acks` runs with, as
    /// heytom's producer configuration resolves it: the route's setting
    /// overrides [`property`](Self::property), and
    /// [`producer_property`](Self::producer_property) overrides both.
    /// Nothing set: heytom's default, `all`.
    pub(crate) fn effective_acks(&self, route_acks: Option<Acks>) -> Option<String> {
        let is_acks = |k: &str| matches!(k.trim(), "acks" | "request.required.acks");
        let mut acks = None;
        for (k, v) in &self.properties {
            if is_acks(k) {
                acks = Some(v.trim().to_owned());
            }
        }
        if let Some(a) = route_acks {
            acks = Some(a.as_str().to_owned());
        }
        for (k, v) in &self.producer_properties {
            if is_acks(k) {
                acks = Some(v.trim().to_owned());
            }
        }
        // Nothing set: the producer's default, acks=all.
        acks.or_else(|| Some("all".to_owned()))
    }

    /// Why these options cannot confirm delivery for some of `events` (the
    /// events this transport carries), if they cannot: `acks = 0` in the
    /// options, or on an event's route.
    pub(crate) fn unconfirmed_reason(&self, events: &[(&str, &Route)]) -> Option<String> {
        if self.effective_acks(None).as_deref() == Some("0") {
            return Some(
                "Kafka is configured with `acks = 0` (KafkaOptions::property or producer_property): the producer does not wait for the broker's acknowledgement".to_owned(),
            );
        }
        let unconfirmed: Vec<&str> = events
            .iter()
            .filter(|(_, r)| {
                r.as_kafka()
                    .is_some_and(|k| self.effective_acks(k.acks).as_deref() == Some("0"))
            })
            .map(|(name, _)| *name)
            .collect();
        (!unconfirmed.is_empty()).then(|| {
            format!(
                "Kafka events {} are produced with `acks = 0` (#[kafka(acks = \"0\")]): the producer does not wait for the broker's acknowledgement",
                unconfirmed
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// The librdkafka settings shared by every client.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        if let Some(v) = &self.client_id {
            c.set("client.id", v);
        }
        if let Some(v) = &self.security_protocol {
            c.set("security.protocol", v);
        }
        if let Some(v) = &self.sasl_mechanism {
            c.set("sasl.mechanisms", v);
        }
        if let Some(v) = &self.sasl_username {
            c.set("sasl.username", v);
        }
        if let Some(v) = &self.sasl_password {
            c.set("sasl.password", v);
        }
        if let Some(v) = &self.ssl_ca_location {
            c.set("ssl.ca.location", v);
        }
        if let Some(v) = &self.ssl_certificate_location {
            c.set("ssl.certificate.location", v);
        }
        if let Some(v) = &self.ssl_key_location {
            c.set("ssl.key.location", v);
        }
        if let Some(v) = &self.ssl_key_password {
            c.set("ssl.key.password", v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests;
