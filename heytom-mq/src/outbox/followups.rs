//! Follow-ups of a handler that runs in the inbox's transaction: the events
//! it published with `ctx.publish()`, written into the local message table
//! in that transaction and handed to the relay's post-commit path after
//! the commit, exactly like an [`OutboxTransaction`](super::OutboxTransaction)'s.

use std::sync::Arc;
use std::time::Instant;

use super::lease::millis;
use super::relay::OutboxRuntime;
use super::repository::{Built, ROWS_PER_STATEMENT};
use super::transaction::OutboxDatabase;
use super::{LocalMessage, MessageStatus};
use crate::error::{Error, Result};
use crate::event::{registered_event, Envelope, Route};
use crate::producer::Producer;

/// Rows written in a transaction not committed yet; [`FollowUps::committed`]
/// after the commit sends them.
pub(crate) struct FollowUps {
    runtime: Arc<OutboxRuntime>,
    rows: Vec<LocalMessage>,
    since: Instant,
}

impl FollowUps {
    /// The transaction committed: the relay sends the rows at once.
    pub(crate) fn committed(self) {
        self.runtime.committed(self.rows, self.since);
    }
}

impl OutboxRuntime {
    /// The outbox a producer writes to, if it has one.
    pub(crate) fn of(producer: &Producer) -> Option<Arc<OutboxRuntime>> {
        let attachment = producer.inner.attachment.clone()?;
        attachment.downcast::<OutboxRuntime>().ok()
    }

    /// The local message table's name.
    pub(crate) fn table_name(&self) -> &str {
        &self.relay.store.table.name
    }

    /// Selects every column of the table, no row: run on another pool, it
    /// fails unless that pool reaches this table.
    pub(crate) fn probe_statement(&self) -> Built {
        self.relay.store.table.probe()
    }

    /// Writes `staged` follow-ups into the table through `conn`, an open
    /// transaction of the caller's.
    pub(crate) async fn write_follow_ups<DB: OutboxDatabase>(
        self: &Arc<Self>,
        producer: &Producer,
        conn: &mut DB::Connection,
        staged: Vec<(&'static Route, Envelope)>,
    ) -> Result<FollowUps> {
        let relay = &self.relay;
        let token = relay
            .dispatch_after_commit
            .then(|| relay.commit_token().to_string());
        let rows = staged
            .into_iter()
            .map(|(route, envelope)| row(producer, route, envelope, token.clone()))
            .collect::<Result<Vec<_>>>()?;
        let since = Instant::now();
        let lease = relay.dispatch_after_commit.then(|| millis(relay.lease));
        let table = &relay.store.table;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            DB::__insert(&mut *conn, table.insert_rows(chunk, lease))
                .await
                .map_err(|e| {
                    Error::storage(format!("outbox insert into {} failed: {e}", table.name), e)
                })?;
        }
        Ok(FollowUps {
            runtime: self.clone(),
            rows,
            since,
        })
    }
}

/// The row of one follow-up, leased to `locked_by` (the commit lease).
fn row(
    producer: &Producer,
    route: &'static Route,
    envelope: Envelope,
    locked_by: Option<String>,
) -> Result<LocalMessage> {
    if registered_event(&envelope.name).is_none() {
        return Err(Error::config(format!(
            "event `{}` is not registered (#[derive(Event)] registers it); the outbox relay could not send it",
            envelope.name
        )));
    }
    let transport = producer.transport_for(&envelope.name, route)?;
    let (topic, routing_key) = route.address(&envelope.name);
    let headers =
        super::transaction::headers_json(&envelope).map_err(|source| Error::Serialization {
            event: envelope.name.clone().into(),
            source,
        })?;
    Ok(LocalMessage {
        id: envelope.id,
        mq_type: transport.kind().as_str().to_owned(),
        topic,
        routing_key,
        message_type: envelope.name.into(),
        message_body: String::from_utf8(envelope.payload)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        status: MessageStatus::Pending,
        created_at: envelope.occurred_at,
        updated_at: None,
        retry_count: 0,
        error_message: None,
        headers: Some(headers),
        partition_key: envelope.partition_key,
        next_attempt_at: chrono::DateTime::UNIX_EPOCH,
        locked_by,
    })
}
