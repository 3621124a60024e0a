//! Exchanges, queues, arguments and bindings derived from `#[rabbitmq(...)]`.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::error::{Error, Result};
use crate::event::{ExchangeType, Overflow, QueueType, RabbitMqRoute, Route};
use crate::handler::HandlerEntry;

use super::connection::{describe, is_precondition_failed, TRANSPORT};

/// An exchange to declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExchangeSpec {
    pub(crate) name: String,
    pub(crate) kind: ExchangeType,
    pub(crate) durable: bool,
}

/// Where an event is published: exchange and routing key.
#[derive(Debug, Clone)]
pub(crate) struct Destination<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) kind: ExchangeType,
    pub(crate) durable: bool,
    pub(crate) routing_key: &'a str,
}

impl Destination<'_> {
    /// The exchange to declare.
    pub(crate) fn exchange_spec(&self) -> ExchangeSpec {
        ExchangeSpec {
            name: self.exchange.to_owned(),
            kind: self.kind,
            durable: self.durable,
        }
    }

    /// Whether `other` goes to the same exchange, declared the same way.
    pub(crate) fn same_exchange(&self, other: &Destination<'_>) -> bool {
        self.exchange == other.exchange && self.kind == other.kind && self.durable == other.durable
    }

    /// Whether `spec` is this destination's exchange, as declared.
    pub(crate) fn matches(&self, spec: &ExchangeSpec) -> bool {
        spec.name == self.exchange && spec.kind == self.kind && spec.durable == self.durable
    }
}

/// Where an event of `route` goes. Events with no attribute use the
/// default exchange with their `NAME` as routing key.
pub(crate) fn destination<'a>(
    route: &'a Route,
    event_name: &'a str,
    default_exchange: &'a str,
) -> Result<Destination<'a>> {
    match (route.as_rabbitmq(), route.transport()) {
        (Some(r), _) => Ok(Destination {
            exchange: r.exchange.unwrap_or(default_exchange),
            kind: r.exchange_type.unwrap_or(ExchangeType::Topic),
            durable: r.durable.unwrap_or(true),
            routing_key: r.routing_key,
        }),
        (None, None) => Ok(Destination {
            exchange: default_exchange,
            kind: ExchangeType::Topic,
            durable: true,
            routing_key: event_name,
        }),
        (None, Some(other)) => Err(Error::config(format!(
            "event `{event_name}` has a {other} route; the RabbitMQ transport cannot carry it"
        ))),
    }
}

/// The queue a handler consumes from: the handler's group if it names one,
/// else the attribute's `queue_name`, else `<routing key>.<handler name>`.
pub(crate) fn queue_for(handler: &HandlerEntry) -> String {
    if let Some(g) = &handler.group {
        return g.clone();
    }
    match handler.route {
        Route::RabbitMq(r) => match r.queue_name {
            Some(q) => q.to_owned(),
            None => format!("{}.{}", r.routing_key, handler.name),
        },
        _ => format!("{}.{}", handler.event_name, handler.name),
    }
}

/// Where a subscription sends the messages its handlers gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeadLetterTarget {
    /// The queue's `x-dead-letter-exchange`, with its routing key (the
    /// message's own routing key when `None`, as the broker does).
    Exchange {
        exchange: String,
        routing_key: Option<String>,
    },
    /// `<queue>.dlq`, through the AMQP default exchange.
    Queue(String),
}

/// Everything one subscription declares.
#[derive(Debug, Clone)]
pub(crate) struct QueueTopology {
    pub(crate) queue: String,
    pub(crate) queue_type: Option<QueueType>,
    pub(crate) durable: bool,
    pub(crate) arguments: FieldTable,
    pub(crate) exchange: ExchangeSpec,
    pub(crate) routing_key: String,
    pub(crate) dead_letter: DeadLetterTarget,
}

/// The arguments of the dead-letter queue of a queue of type `queue_type`:
/// a replicated queue's dead letters go to a quorum queue (a stream's too:
/// a dead-letter queue is read message by message), others to a classic one.
pub(crate) fn dead_letter_queue_arguments(queue_type: Option<QueueType>) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(QueueType::Quorum | QueueType::Stream) = queue_type {
        args.insert(
            ShortString::from("x-queue-type"),
            str_arg(QueueType::Quorum.as_str()),
        );
    }
    args
}

/// The queue a dead-letter exchange's messages land in.
pub(crate) fn dead_letter_queue_of_exchange(exchange: &str) -> String {
    format!("{exchange}.dlq")
}

/// The queue a queue without a dead-letter exchange dead-letters to.
pub(crate) fn dead_letter_queue_of_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

fn int_arg(v: u32) -> AMQPValue {
    // Signed 32-bit ints are what most clients send; bigger values need 64 bits.
    match i32::try_from(v) {
        Ok(i) => AMQPValue::LongInt(i),
        Err(_) => AMQPValue::LongLongInt(i64::from(v)),
    }
}

fn str_arg(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The queue arguments (`x-*`) of a route. A queue with `max_length`
/// refuses new messages when full (`x-overflow = reject-publish`) unless
/// the route says otherwise, so that a confirmed publish is never dropped.
pub(crate) fn queue_arguments(r: Option<&RabbitMqRoute>) -> FieldTable {
    let mut args = FieldTable::default();
    let Some(r) = r else { return args };
    if let Some(t) = r.queue_type {
        args.insert(ShortString::from("x-queue-type"), str_arg(t.as_str()));
    }
    if let Some(ttl) = r.message_ttl {
        args.insert(ShortString::from("x-message-ttl"), int_arg(ttl));
    }
    if let Some(n) = r.max_length {
        args.insert(ShortString::from("x-max-length"), int_arg(n));
        let overflow = r.overflow.unwrap_or(Overflow::RejectPublish);
        args.insert(ShortString::from("x-overflow"), str_arg(overflow.as_str()));
    }
    if let Some(p) = r.max_priority {
        args.insert(ShortString::from("x-max-priority"), int_arg(u32::from(p)));
    }
    if let Some(dlx) = r.dead_letter_exchange {
        args.insert(ShortString::from("x-dead-letter-exchange"), str_arg(dlx));
    }
    if let Some(key) = r.dead_letter_routing_key {
        args.insert(ShortString::from("x-dead-letter-routing-key"), str_arg(key));
    }
    args
}

impl QueueTopology {
    /// The topology of a subscription to `queue` for an event.
    pub(crate) fn new(
        route: &Route,
        event_name: &str,
        queue: &str,
        default_exchange: &str,
    ) -> Result<Self> {
        let dest = destination(route, event_name, default_exchange)?;
        let r = route.as_rabbitmq();
        let dead_letter = match r.and_then(|r| r.dead_letter_exchange) {
            Some(dlx) => DeadLetterTarget::Exchange {
                exchange: dlx.to_owned(),
                routing_key: r.and_then(|r| r.dead_letter_routing_key).map(str::to_owned),
            },
            None => DeadLetterTarget::Queue(dead_letter_queue_of_queue(queue)),
        };
        Ok(QueueTopology {
            queue: queue.to_owned(),
            queue_type: r.and_then(|r| r.queue_type),
            durable: dest.durable,
            arguments: queue_arguments(r),
            routing_key: dest.routing_key.to_owned(),
            exchange: dest.exchange_spec(),
            dead_letter,
        })
    }

    /// The arguments of the dead-letter queue heytom-mq declares for it.
    fn dead_letter_arguments(&self) -> FieldTable {
        dead_letter_queue_arguments(self.queue_type)
    }

    /// Declares the exchange, the queue with its arguments, the dead-letter
    /// destination and the binding.
    pub(crate) async fn declare(&self, channel: &Channel) -> Result<()> {
        declare_exchange(channel, &self.exchange).await?;
        // The queue first: when it conflicts, nothing else gets created.
        declare_queue(channel, &self.queue, self.durable, self.arguments.clone()).await?;
        match &self.dead_letter {
            DeadLetterTarget::Exchange {
                exchange,
                routing_key,
            } => {
                if !exchange.is_empty() {
                    if *exchange != self.exchange.name {
                        declare_exchange(
                            channel,
                            &ExchangeSpec {
                                name: exchange.clone(),
                                kind: ExchangeType::Direct,
                                durable: self.durable,
                            },
                        )
                        .await?;
                    }
                    let dlq = dead_letter_queue_of_exchange(exchange);
                    declare_queue(channel, &dlq, self.durable, self.dead_letter_arguments())
                        .await?;
                    let key = routing_key.as_deref().unwrap_or(&self.routing_key);
                    bind(channel, &dlq, exchange, key).await?;
                }
            }
            DeadLetterTarget::Queue(dlq) => {
                declare_queue(channel, dlq, self.durable, self.dead_letter_arguments()).await?;
            }
        }
        if !self.exchange.name.is_empty() {
            bind(channel, &self.queue, &self.exchange.name, &self.routing_key).await?;
        }
        Ok(())
    }
}

fn exchange_kind(kind: ExchangeType) -> ExchangeKind {
    match kind {
        ExchangeType::Direct => ExchangeKind::Direct,
        ExchangeType::Topic => ExchangeKind::Topic,
        ExchangeType::Fanout => ExchangeKind::Fanout,
        ExchangeType::Headers => ExchangeKind::Headers,
    }
}

fn topology_error(what: String, e: &lapin::Error) -> Error {
    let message = if is_precondition_failed(e) {
        format!(
            "{what} already exists with different settings: {}",
            describe(e)
        )
    } else {
        format!("declaring {what} failed: {}", describe(e))
    };
    Error::Topology {
        transport: TRANSPORT,
        message,
    }
}

/// Declares an exchange (nothing for the AMQP default exchange `""`).
pub(crate) async fn declare_exchange(channel: &Channel, spec: &ExchangeSpec) -> Result<()> {
    if spec.name.is_empty() {
        return Ok(());
    }
    channel
        .exchange_declare(
            spec.name.as_str().into(),
            exchange_kind(spec.kind),
            ExchangeDeclareOptions {
                durable: spec.durable,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            topology_error(
                format!(
                    "exchange `{}` ({}, durable {})",
                    spec.name,
                    spec.kind.as_str(),
                    spec.durable
                ),
                &e,
            )
        })
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    durable: bool,
    args: FieldTable,
) -> Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map(|_| ())
        .map_err(|e| topology_error(format!("queue `{name}`"), &e))
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            topology_error(
                format!("binding of queue `{queue}` to exchange `{exchange}` with key `{key}`"),
                &e,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    static FULL: Route = Route::RabbitMq(RabbitMqRoute {
        routing_key: "order.created",
        exchange: Some("order.exchange"),
        exchange_type: Some(ExchangeType::Direct),
        queue_name: Some("order.created.queue"),
        durable: Some(false),
        message_ttl: Some(60000),
        max_length: Some(10000),
        max_priority: Some(10),
        dead_letter_exchange: Some("order.dlx"),
        dead_letter_routing_key: Some("order.dead"),
        overflow: Some(Overflow::DropHead),
        queue_type: Some(QueueType::Classic),
    });

    #[test]
    fn every_key_lands_in_the_topology() {
        let t = QueueTopology::new(
            &FULL,
            "OrderPlaced",
            "order.created.queue",
            "heytom.exchange",
        )
        .unwrap();
        assert_eq!(t.exchange.name, "order.exchange");
        assert_eq!(t.exchange.kind, ExchangeType::Direct);
        assert!(!t.durable && !t.exchange.durable);
        assert_eq!(t.routing_key, "order.created");
        let args = t.arguments.inner();
        assert_eq!(args.get("x-message-ttl"), Some(&AMQPValue::LongInt(60000)));
        assert_eq!(args.get("x-max-length"), Some(&AMQPValue::LongInt(10000)));
        assert_eq!(args.get("x-overflow"), Some(&str_arg("drop-head")));
        assert_eq!(args.get("x-queue-type"), Some(&str_arg("classic")));
        assert!(t.dead_letter_arguments().inner().is_empty());
        assert_eq!(args.get("x-max-priority"), Some(&AMQPValue::LongInt(10)));
        assert_eq!(
            args.get("x-dead-letter-exchange"),
            Some(&str_arg("order.dlx"))
        );
        assert_eq!(
            args.get("x-dead-letter-routing-key"),
            Some(&str_arg("order.dead"))
        );
        assert_eq!(
            t.dead_letter,
            DeadLetterTarget::Exchange {
                exchange: "order.dlx".into(),
                routing_key: Some("order.dead".into())
            }
        );
    }

    #[test]
    fn defaults_and_default_route() {
        static MIN: Route = Route::RabbitMq(RabbitMqRoute::new("user.created"));
        let t = QueueTopology::new(&MIN, "UserCreated", "q", "heytom.exchange").unwrap();
        assert_eq!(t.exchange.name, "heytom.exchange");
        assert_eq!(t.exchange.kind, ExchangeType::Topic);
        assert!(t.durable);
        assert!(t.arguments.inner().is_empty());
        assert_eq!(t.dead_letter, DeadLetterTarget::Queue("q.dlq".into()));

        let d = destination(&Route::Default, "Ping", "ex").unwrap();
        assert_eq!((d.exchange, d.routing_key), ("ex", "Ping"));
        assert!(destination(&Route::Kafka(crate::KafkaRoute::new("t")), "K", "ex").is_err());
    }

    #[test]
    fn a_length_limit_refuses_new_messages_unless_told_otherwise() {
        let limited = RabbitMqRoute::new("k").max_length(5);
        let args = queue_arguments(Some(&limited));
        assert_eq!(
            args.inner().get("x-overflow"),
            Some(&str_arg("reject-publish"))
        );
        let args = queue_arguments(Some(&limited.overflow(Overflow::DropHead)));
        assert_eq!(args.inner().get("x-overflow"), Some(&str_arg("drop-head")));
        // No limit, no overflow argument (it would change nothing).
        let args = queue_arguments(Some(&RabbitMqRoute::new("k")));
        assert!(args.inner().get("x-overflow").is_none());
    }

    #[test]
    fn replicated_queues_have_a_replicated_dead_letter_queue() {
        static QUORUM: Route =
            Route::RabbitMq(RabbitMqRoute::new("q").queue_type(QueueType::Quorum));
        let t = QueueTopology::new(&QUORUM, "Q", "q", "ex").unwrap();
        assert!(t.durable);
        assert_eq!(
            t.arguments.inner().get("x-queue-type"),
            Some(&str_arg("quorum"))
        );
        assert_eq!(
            t.dead_letter_arguments().inner().get("x-queue-type"),
            Some(&str_arg("quorum"))
        );
        static STREAM: Route =
            Route::RabbitMq(RabbitMqRoute::new("s").queue_type(QueueType::Stream));
        let t = QueueTopology::new(&STREAM, "S", "s", "ex").unwrap();
        assert_eq!(
            t.arguments.inner().get("x-queue-type"),
            Some(&str_arg("stream"))
        );
        assert_eq!(
            t.dead_letter_arguments().inner().get("x-queue-type"),
            Some(&str_arg("quorum"))
        );
    }

    #[test]
    fn big_values_use_64_bit_ints() {
        assert_eq!(
            int_arg(u32::MAX),
            AMQPValue::LongLongInt(i64::from(u32::MAX))
        );
    }
}
