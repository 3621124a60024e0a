//! Where an event travels: its `Route` (from `#[kafka(...)]` /
//! `#[rabbitmq(...)]`), the typed attribute values, and the identity of
//! the transports (`TransportKind`).

use std::fmt;

mod validate;

/// Where an event travels. `#[non_exhaustive]`: a new transport's
/// attribute is a new variant, not a breaking change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// `#[kafka(...)]`
    Kafka(KafkaRoute),
    /// `#[rabbitmq(...)]`
    RabbitMq(RabbitMqRoute),
    /// No transport attribute: the event travels on the default transport under its name.
    Default,
}

impl Route {
    /// The transport this route asks for (in-memory for an event without
    /// a transport attribute).
    pub fn kind(&self) -> TransportKind {
        self.transport().unwrap_or(TransportKind::InMemory)
    }

    /// The transport the event's attribute names; `None` without one (the
    /// event takes the app's default transport).
    pub fn transport(&self) -> Option<TransportKind> {
        match self {
            Route::Kafka(_) => Some(TransportKind::Kafka),
            Route::RabbitMq(_) => Some(TransportKind::RabbitMq),
            Route::Default => None,
        }
    }

    /// Where a message of `event_name` goes, as the local message table
    /// records it: the topic (Kafka topic, RabbitMQ exchange, or the event
    /// name) and the RabbitMQ routing key.
    pub fn address(&self, event_name: &str) -> (String, Option<String>) {
        match self {
            Route::Kafka(k) => (k.topic.to_owned(), None),
            Route::RabbitMq(r) => (
                r.exchange.unwrap_or_default().to_owned(),
                Some(r.routing_key.to_owned()),
            ),
            Route::Default => (event_name.to_owned(), None),
        }
    }

    /// The Kafka settings, if this is a Kafka route.
    pub fn as_kafka(&self) -> Option<&KafkaRoute> {
        match self {
            Route::Kafka(k) => Some(k),
            _ => None,
        }
    }

    /// The RabbitMQ settings, if this is a RabbitMQ route.
    pub fn as_rabbitmq(&self) -> Option<&RabbitMqRoute> {
        match self {
            Route::RabbitMq(r) => Some(r),
            _ => None,
        }
    }
}

/// A transport's identity: the built-in ones, or a transport of your own
/// with its own name (`TransportKind::Custom("nats")`). `#[non_exhaustive]`:
/// a new built-in transport is not a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TransportKind {
    /// The embedded in-process broker.
    InMemory,
    /// RabbitMQ through lapin.
    RabbitMq,
    /// Kafka through rdkafka.
    Kafka,
    /// A transport of your own, by name. Events without a transport
    /// attribute travel on it when the app has no in-memory broker, RabbitMQ
    /// or Kafka configured.
    Custom(&'static str),
}

impl TransportKind {
    /// The name used in the local message table's `MQType` column and in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::InMemory => "InMemory",
            TransportKind::RabbitMq => "RabbitMQ",
            TransportKind::Kafka => "Kafka",
            TransportKind::Custom(name) => name,
        }
    }

    /// Parses [`TransportKind::as_str`]'s output (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "inmemory" | "memory" => Some(TransportKind::InMemory),
            "rabbitmq" => Some(TransportKind::RabbitMq),
            "kafka" => Some(TransportKind::Kafka),
            _ => None,
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kafka compression codecs (`compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// `none`
    None,
    /// `gzip`
    Gzip,
    /// `snappy`
    Snappy,
    /// `lz4`
    Lz4,
    /// `zstd`
    Zstd,
}

impl CompressionType {
    /// The librdkafka / topic config value.
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionType::None => "none",
            CompressionType::Gzip => "gzip",
            CompressionType::Snappy => "snappy",
            CompressionType::Lz4 => "lz4",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// Kafka producer acknowledgements (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `0`: fire and forget.
    None,
    /// `1`: the leader has written it.
    Leader,
    /// `all` (or `-1`): every in-sync replica has it.
    All,
}

impl Acks {
    /// The librdkafka config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// Where a new Kafka consumer group starts (`auto_offset_reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOffsetReset {
    /// `earliest`
    Earliest,
    /// `latest`
    Latest,
}

impl AutoOffsetReset {
    /// The librdkafka config value.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoOffsetReset::Earliest => "earliest",
            AutoOffsetReset::Latest => "latest",
        }
    }
}

/// RabbitMQ exchange types (`exchange_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    /// `direct`
    Direct,
    /// `topic`
    Topic,
    /// `fanout`
    Fanout,
    /// `headers`
    Headers,
}

impl ExchangeType {
    /// The AMQP name of the exchange type.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Topic => "topic",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Headers => "headers",
        }
    }
}

/// What a RabbitMQ queue with a length limit does when it is full
/// (`overflow`, the queue's `x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// `drop-head`: the oldest message is dropped (or dead-lettered) to
    /// make room; the publish is confirmed. Messages are lost silently:
    /// opt in only when the newest messages matter most.
    DropHead,
    /// `reject-publish`: the new message is refused; with publisher
    /// confirms the publish is nacked and `send` returns an error. The
    /// default for a queue with `max_length`.
    RejectPublish,
    /// `reject-publish-dlx`: like `reject-publish`, and the refused message
    /// is also dead-lettered to the queue's `dead_letter_exchange`.
    RejectPublishDlx,
}

impl Overflow {
    /// The `x-overflow` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::DropHead => "drop-head",
            Overflow::RejectPublish => "reject-publish",
            Overflow::RejectPublishDlx => "reject-publish-dlx",
        }
    }
}

/// The kind of a RabbitMQ queue (`queue_type`, the queue's `x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// `classic`: a queue on one node.
    Classic,
    /// `quorum`: replicated over the cluster with Raft; what RabbitMQ
    /// recommends for data safety. Always durable; no `max_priority`.
    Quorum,
    /// `stream`: an append-only, replicated log; consumers read from the
    /// next message on, and a stream takes nothing back (a message handed
    /// back is not delivered again).
    /// Always durable; no per-message TTL, length limit, priority or
    /// dead-lettering.
    Stream,
}

impl QueueType {
    /// The `x-queue-type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

/// The settings of `#[kafka(...)]`; keys that were not given are `None`.
/// `#[non_exhaustive]`: build one with [`KafkaRoute::new`] and the setters
/// (`KafkaRoute::new("orders").group_id("billing")`), all `const`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaRoute {
    /// Topic name (required).
    pub topic: &'static str,
    /// Consumer group; the app's default group when `None`.
    pub group_id: Option<&'static str>,
    /// The field whose value is the message key.
    pub partition_key: Option<&'static str>,
    /// Partitions to create the topic with; `None`: `KafkaOptions::topic_defaults`
    /// (1 unless set there).
    pub num_partitions: Option<i32>,
    /// Replication factor to create the topic with; `None`:
    /// `KafkaOptions::topic_defaults`, else the **broker's default**
    /// (`default.replication.factor`).
    pub replication_factor: Option<i16>,
    /// `retention.ms` of the topic; `None`: the broker's default.
    pub retention_ms: Option<u64>,
    /// `compression.type` of the topic and the producer; `None`: the broker's
    /// and librdkafka's default (no compression).
    pub compression_type: Option<CompressionType>,
    /// Idempotent producing (no duplicate from the producer's own retries).
    /// `None`: **on** when `acks` is `all` (the default), off for `acks` 0 or 1.
    pub enable_idempotence: Option<bool>,
    /// Producer acknowledgements; `None`: **`all`** (every in-sync replica).
    pub acks: Option<Acks>,
    /// Where a new group starts; `None`: **earliest**.
    pub auto_offset_reset: Option<AutoOffsetReset>,
    /// Let librdkafka commit on its own timer (at-most-once-ish); `None`:
    /// off (offsets stored after handling, at-least-once).
    pub enable_auto_commit: Option<bool>,
    /// Consumer `session.timeout.ms`; `None`: librdkafka's default (45 s).
    pub session_timeout_ms: Option<u32>,
    /// Upper bound of messages fetched but not yet handled, per consumer;
    /// `None`: `KafkaOptions::max_in_flight` (2000).
    pub max_poll_records: Option<u32>,
}

impl KafkaRoute {
    /// A route with only the topic set, the rest `None`.
    pub const fn new(topic: &'static str) -> Self {
        KafkaRoute {
            topic,
            group_id: None,
            partition_key: None,
            num_partitions: None,
            replication_factor: None,
            retention_ms: None,
            compression_type: None,
            enable_idempotence: None,
            acks: None,
            auto_offset_reset: None,
            enable_auto_commit: None,
            session_timeout_ms: None,
            max_poll_records: None,
        }
    }

    /// Sets `group_id`.
    pub const fn group_id(mut self, group_id: &'static str) -> Self {
        self.group_id = Some(group_id);
        self
    }

    /// Sets `partition_key`.
    pub const fn partition_key(mut self, partition_key: &'static str) -> Self {
        self.partition_key = Some(partition_key);
        self
    }

    /// Sets `num_partitions`.
    pub const fn num_partitions(mut self, num_partitions: i32) -> Self {
        self.num_partitions = Some(num_partitions);
        self
    }

    /// Sets `replication_factor`.
    pub const fn replication_factor(mut self, replication_factor: i16) -> Self {
        self.replication_factor = Some(replication_factor);
        self
    }

    /// Sets `retention_ms`.
    pub const fn retention_ms(mut self, retention_ms: u64) -> Self {
        self.retention_ms = Some(retention_ms);
        self
    }

    /// Sets `compression_type`.
    pub const fn compression_type(mut self, compression_type: CompressionType) -> Self {
        self.compression_type = Some(compression_type);
        self
    }

    /// Sets `enable_idempotence`.
    pub const fn enable_idempotence(mut self, enable_idempotence: bool) -> Self {
        self.enable_idempotence = Some(enable_idempotence);
        self
    }

    /// Sets `acks`.
    pub const fn acks(mut self, acks: Acks) -> Self {
        self.acks = Some(acks);
        self
    }

    /// Sets `auto_offset_reset`.
    pub const fn auto_offset_reset(mut self, auto_offset_reset: AutoOffsetReset) -> Self {
        self.auto_offset_reset = Some(auto_offset_reset);
        self
    }

    /// Sets `enable_auto_commit`.
    pub const fn enable_auto_commit(mut self, enable_auto_commit: bool) -> Self {
        self.enable_auto_commit = Some(enable_auto_commit);
        self
    }

    /// Sets `session_timeout_ms`.
    pub const fn session_timeout_ms(mut self, session_timeout_ms: u32) -> Self {
        self.session_timeout_ms = Some(session_timeout_ms);
        self
    }

    /// Sets `max_poll_records`.
    pub const fn max_poll_records(mut self, max_poll_records: u32) -> Self {
        self.max_poll_records = Some(max_poll_records);
        self
    }
}

/// The settings of `#[rabbitmq(...)]`; keys that were not given are `None`.
/// `#[non_exhaustive]`: build one with [`RabbitMqRoute::new`] and the
/// setters, all `const`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RabbitMqRoute {
    /// Routing key (required).
    pub routing_key: &'static str,
    /// Exchange; the transport's default exchange when `None`.
    pub exchange: Option<&'static str>,
    /// Exchange type; `topic` when `None`.
    pub exchange_type: Option<ExchangeType>,
    /// Queue name; derived from routing key and handler when `None`.
    pub queue_name: Option<&'static str>,
    /// Durable exchange and queue; `true` when `None`.
    pub durable: Option<bool>,
    /// `x-message-ttl` in milliseconds.
    pub message_ttl: Option<u32>,
    /// `x-max-length`; a full queue refuses new messages unless
    /// `overflow` says otherwise.
    pub max_length: Option<u32>,
    /// `x-max-priority`.
    pub max_priority: Option<u8>,
    /// `x-dead-letter-exchange`.
    pub dead_letter_exchange: Option<&'static str>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<&'static str>,
    /// `x-overflow`: what a queue with `max_length` does when full;
    /// [`Overflow::RejectPublish`] when `None`.
    pub overflow: Option<Overflow>,
    /// `x-queue-type`; the broker's default (classic, unless the virtual
    /// host says otherwise) when `None`.
    pub queue_type: Option<QueueType>,
}

impl RabbitMqRoute {
    /// A route with only the routing key set, the rest `None`.
    pub const fn new(routing_key: &'static str) -> Self {
        RabbitMqRoute {
            routing_key,
            exchange: None,
            exchange_type: None,
            queue_name: None,
            durable: None,
            message_ttl: None,
            max_length: None,
            max_priority: None,
            dead_letter_exchange: None,
            dead_letter_routing_key: None,
            overflow: None,
            queue_type: None,
        }
    }

    /// Sets `exchange`.
    pub const fn exchange(mut self, exchange: &'static str) -> Self {
        self.exchange = Some(exchange);
        self
    }

    /// Sets `exchange_type`.
    pub const fn exchange_type(mut self, exchange_type: ExchangeType) -> Self {
        self.exchange_type = Some(exchange_type);
        self
    }

    /// Sets `queue_name`.
    pub const fn queue_name(mut self, queue_name: &'static str) -> Self {
        self.queue_name = Some(queue_name);
        self
    }

    /// Sets `durable`.
    pub const fn durable(mut self, durable: bool) -> Self {
        self.durable = Some(durable);
        self
    }

    /// Sets `message_ttl`.
    pub const fn message_ttl(mut self, message_ttl: u32) -> Self {
        self.message_ttl = Some(message_ttl);
        self
    }

    /// Sets `max_length`.
    pub const fn max_length(mut self, max_length: u32) -> Self {
        self.max_length = Some(max_length);
        self
    }

    /// Sets `max_priority`.
    pub const fn max_priority(mut self, max_priority: u8) -> Self {
        self.max_priority = Some(max_priority);
        self
    }

    /// Sets `dead_letter_exchange`.
    pub const fn dead_letter_exchange(mut self, dead_letter_exchange: &'static str) -> Self {
        self.dead_letter_exchange = Some(dead_letter_exchange);
        self
    }

    /// Sets `dead_letter_routing_key`.
    pub const fn dead_letter_routing_key(mut self, dead_letter_routing_key: &'static str) -> Self {
        self.dead_letter_routing_key = Some(dead_letter_routing_key);
        self
    }

    /// Sets `overflow`.
    pub const fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = Some(overflow);
        self
    }

    /// Sets `queue_type`.
    pub const fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = Some(queue_type);
        self
    }
}
