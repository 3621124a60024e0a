//! Publishing with confirms on one channel that is re-opened when it breaks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Channel;
use lapin::{Confirmation, PublisherConfirm};
use tokio::time::Instant;

use super::connection::TRANSPORT;
use crate::error::{Error, Result};
use crate::event::{headers, Envelope};
use crate::transport::Outgoing;

use super::connection::{describe, lock, ConnectionSlot};
use super::options::RabbitMqOptions;
use super::topology::{declare_exchange, destination, Destination, ExchangeSpec};

/// The header that sets a message's AMQP priority (`0..=255`), honoured by
/// queues with `max_priority`.
///
/// ```
/// # use heytom_mq::Headers;
/// use heytom_mq::PRIORITY_HEADER;
/// let headers = Headers::from([(PRIORITY_HEADER.to_owned(), "9".to_owned())]);
/// // producer.send_with_headers(&event, headers).await?;
/// # let _ = headers;
/// ```
pub const PRIORITY_HEADER: &str = "priority";

pub(crate) struct Publisher {
    slot: ConnectionSlot,
    options: Arc<RabbitMqOptions>,
    channel: RwLock<Option<Arc<Channel>>>,
    reopen: tokio::sync::Mutex<()>,
    /// Exchanges published to so far; declared once per channel.
    exchanges: Mutex<HashMap<String, ExchangeSpec>>,
}

impl Publisher {
    pub(crate) fn new(slot: ConnectionSlot, options: Arc<RabbitMqOptions>) -> Self {
        Publisher {
            slot,
            options,
            channel: RwLock::new(None),
            reopen: tokio::sync::Mutex::new(()),
            exchanges: Mutex::new(HashMap::new()),
        }
    }

    fn open_channel(&self) -> Option<Arc<Channel>> {
        self.channel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }

    /// The publishing channel; (re)connects and redeclares the known
    /// exchanges when it is gone.
    pub(crate) async fn channel(&self) -> Result<Arc<Channel>> {
        if let Some(c) = self.open_channel() {
            return Ok(c);
        }
        let _guard = self.reopen.lock().await;
        if let Some(c) = self.open_channel() {
            return Ok(c);
        }
        let conn = self.slot.get().await?;
        let channel = conn.create_channel().await.map_err(|e| {
            Error::connection(
                super::connection::TRANSPORT,
                format!("cannot open a channel: {}", describe(&e)),
                e,
            )
        })?;
        if self.options.publisher_confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| {
                    Error::connection(
                        super::connection::TRANSPORT,
                        format!("cannot turn on publisher confirms: {}", describe(&e)),
                        e,
                    )
                })?;
        }
        let known: Vec<ExchangeSpec> = lock(&self.exchanges).values().cloned().collect();
        for spec in known {
            if let Err(e) = declare_exchange(&channel, &spec).await {
                // Forget it so the next publish to it declares again and reports.
                lock(&self.exchanges).remove(&spec.name);
                return Err(e);
            }
        }
        let channel = Arc::new(channel);
        *self.channel.write().unwrap_or_else(|p| p.into_inner()) = Some(channel.clone());
        Ok(channel)
    }

    /// Declares an exchange on the publishing channel unless done already.
    pub(crate) async fn ensure_exchange(
        &self,
        channel: &Channel,
        dest: &Destination<'_>,
    ) -> Result<()> {
        if lock(&self.exchanges)
            .get(dest.exchange)
            .is_some_and(|s| dest.matches(s))
        {
            return Ok(());
        }
        let spec = dest.exchange_spec();
        declare_exchange(channel, &spec).await?;
        lock(&self.exchanges).insert(spec.name.clone(), spec);
        Ok(())
    }

    /// Sends one message; the confirm future is awaited by the caller.
    async fn start(&self, channel: &Channel, message: &Outgoing) -> Result<PublisherConfirm> {
        let dest = destination(
            message.route,
            &message.envelope.name,
            &self.options.exchange,
        )?;
        self.ensure_exchange(channel, &dest).await?;
        let props = properties(&message.envelope)?;
        channel
            .basic_publish(
                dest.exchange.into(),
                dest.routing_key.into(),
                BasicPublishOptions {
                    // Without confirms nobody would read the returns; they would pile up.
                    mandatory: self.options.mandatory && self.options.publisher_confirms,
                    immediate: false,
                },
                &message.envelope.payload,
                props,
            )
            .await
            .map_err(|e| {
                Error::unavailable(
                    TRANSPORT,
                    &message.envelope.name,
                    format!("could not send: {}", describe(&e)),
                )
            })
    }

    pub(crate) async fn publish(&self, message: &Outgoing) -> Result<()> {
        let timeout = self.options.publish_timeout;
        let name = &message.envelope.name;
        let work = async {
            let channel = self.channel().await?;
            let confirm = self.start(&channel, message).await?;
            check(confirm.await, name)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(name, timeout)),
        }
    }

    /// Sends every message, then waits for all the confirms.
    pub(crate) async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<Result<()>> {
        let timeout = self.options.publish_timeout;
        let deadline = Instant::now() + timeout;
        let channel = match tokio::time::timeout_at(deadline, self.channel()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let reason = e.to_string();
                let unavailable = e.is_unavailable();
                return messages
                    .iter()
                    .map(|m| {
                        Err(if unavailable {
                            Error::unavailable(TRANSPORT, &m.envelope.name, reason.clone())
                        } else {
                            Error::publish(&m.envelope.name, reason.clone())
                        })
                    })
                    .collect();
            }
            Err(_) => {
                return messages
                    .iter()
                    .map(|m| Err(timed_out(&m.envelope.name, timeout)))
                    .collect()
            }
        };
        // One deadline for the whole batch, one timer: a message's result
        // is filled in as it is known; what is still missing at the
        // deadline timed out.
        let mut out: Vec<Option<Result<()>>> = (0..messages.len()).map(|_| None).collect();
        let work = async {
            let mut sent: Vec<Option<PublisherConfirm>> = Vec::with_capacity(messages.len());
            for (m, slot) in messages.iter().zip(out.iter_mut()) {
                match self.start(&channel, m).await {
                    Ok(confirm) => sent.push(Some(confirm)),
                    Err(e) => {
                        *slot = Some(Err(e));
                        sent.push(None);
                    }
                }
            }
            for ((m, s), slot) in messages.iter().zip(sent).zip(out.iter_mut()) {
                if let Some(confirm) = s {
                    *slot = Some(check(confirm.await, &m.envelope.name));
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, work).await;
        out.into_iter()
            .zip(messages)
            .map(|(r, m)| r.unwrap_or_else(|| Err(timed_out(&m.envelope.name, timeout))))
            .collect()
    }

    pub(crate) async fn close(&self) {
        let channel = self
            .channel
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = channel {
            if c.status().connected() {
                let _ =
                    tokio::time::timeout(self.options.publish_timeout, c.wait_for_confirms()).await;
                // Closed here and awaited: a channel dropped open is closed by
                // lapin in the background, racing the connection close below,
                // and that race logs an ERROR on an orderly shutdown.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    c.close(200, "closing".into()),
                )
                .await;
            }
        }
        self.slot.close().await;
    }
}

fn timed_out(name: &str, timeout: std::time::Duration) -> Error {
    Error::unavailable(
        TRANSPORT,
        name,
        format!("no confirm from RabbitMQ within {timeout:?}"),
    )
}

/// Turns the broker's answer into the publish's result.
pub(crate) fn check(confirm: lapin::Result<Confirmation>, name: &str) -> Result<()> {
    match confirm {
        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
        Ok(Confirmation::Ack(Some(returned))) | Ok(Confirmation::Nack(Some(returned))) => Err(Error::publish(
            name,
            format!(
                "unroutable: no queue is bound to exchange `{}` for routing key `{}` (broker: {} {})",
                returned.delivery.exchange, returned.delivery.routing_key, returned.reply_code, returned.reply_text
            ),
        )),
        Ok(Confirmation::Nack(None)) => Err(Error::publish(
            name,
            "the broker refused the message (nack): a queue it routes to is full (`max_length`, overflow `reject-publish`) or failed to store it",
        )),
        Err(e) => Err(Error::unavailable(
            TRANSPORT,
            name,
            format!("connection lost before the broker confirmed: {}", describe(&e)),
        )),
    }
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// AMQP properties of an envelope: persistent JSON with id, type,
/// timestamp and the wire headers.
pub(crate) fn properties(envelope: &Envelope) -> Result<BasicProperties> {
    let mut table = FieldTable::default();
    let mut priority = None;
    for (k, v) in &envelope.headers {
        if k.len() > 255 {
            return Err(Error::publish(
                &envelope.name,
                format!("header name longer than 255 bytes: `{k}`"),
            ));
        }
        if k == PRIORITY_HEADER {
            priority = Some(v.trim().parse::<u8>().map_err(|_| {
                Error::publish(
                    &envelope.name,
                    format!("header `{PRIORITY_HEADER}` must be a number from 0 to 255, not `{v}`"),
                )
            })?);
        }
        table.insert(ShortString::from(k.as_str()), long(v));
    }
    let id = crate::event::id_string(envelope.id);
    let occurred = envelope.occurred_at.to_rfc3339();
    table.insert(ShortString::from(headers::EVENT_ID), long(&id));
    table.insert(ShortString::from(headers::EVENT_NAME), long(&envelope.name));
    table.insert(ShortString::from(headers::OCCURRED_AT), long(&occurred));
    let mut props = BasicProperties::default()
        .with_message_id(ShortString::from(id))
        .with_type(ShortString::from(envelope.name.as_str()))
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_headers(table);
    if let Ok(ts) = u64::try_from(envelope.occurred_at.timestamp()) {
        props = props.with_timestamp(ts);
    }
    if let Some(c) = envelope.headers.get(headers::CORRELATION_ID) {
        if c.len() <= 255 {
            props = props.with_correlation_id(ShortString::from(c.as_str()));
        }
    }
    if let Some(p) = priority {
        props = props.with_priority(p);
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(headers: crate::Headers) -> Envelope {
        Envelope {
            id: uuid::Uuid::now_v7(),
            name: "OrderPlaced".into(),
            occurred_at: chrono::Utc::now(),
            headers,
            partition_key: None,
            payload: b"{}".to_vec(),
        }
    }

    fn header(p: &BasicProperties, k: &str) -> Option<String> {
        match p.headers().as_ref()?.inner().get(k)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            _ => None,
        }
    }

    #[test]
    fn properties_carry_id_type_headers_and_priority() {
        let mut h = crate::Headers::new();
        h.insert(headers::CORRELATION_ID.into(), "corr-1".into());
        h.insert(PRIORITY_HEADER.into(), " 7 ".into());
        // a user header cannot override a reserved one
        h.insert(headers::EVENT_NAME.into(), "Spoofed".into());
        let e = envelope(h);
        let p = properties(&e).unwrap();
        let id = e.id.to_string();
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some(id.as_str())
        );
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("OrderPlaced"));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            p.correlation_id().as_ref().map(|s| s.as_str()),
            Some("corr-1")
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.priority(), Some(7));
        assert_eq!(header(&p, headers::EVENT_ID), Some(id));
        assert_eq!(
            header(&p, headers::EVENT_NAME).as_deref(),
            Some("OrderPlaced")
        );
        assert!(header(&p, headers::OCCURRED_AT).is_some());
    }

    #[test]
    fn bad_priority_and_long_header_names_are_errors() {
        let mut h = crate::Headers::new();
        h.insert(PRIORITY_HEADER.into(), "256".into());
        let err = properties(&envelope(h)).unwrap_err().to_string();
        assert!(err.contains("0 to 255"), "{err}");
        let mut h = crate::Headers::new();
        h.insert("x".repeat(300), "v".into());
        assert!(properties(&envelope(h)).is_err());
    }

    #[test]
    fn confirmations_become_results() {
        assert!(check(Ok(Confirmation::Ack(None)), "E").is_ok());
        assert!(check(Ok(Confirmation::NotRequested), "E").is_ok());
        let err = check(Ok(Confirmation::Nack(None)), "E").unwrap_err();
        assert!(matches!(err, Error::Publish { .. }));
        let lost: lapin::Error =
            lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "basic.publish")
                .into();
        assert!(check(Err(lost), "E")
            .unwrap_err()
            .to_string()
            .contains("connection lost"));
    }
}
