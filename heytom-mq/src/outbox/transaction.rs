//! Enqueueing events in the caller's transaction: [`OutboxTransaction`] and
//! the `Producer` methods `begin`, `send_with_transaction`,
//! `send_batch_with_transaction`.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{Pool, Transaction};
use tracing::Instrument;

use super::lease::millis;
use super::relay::OutboxRuntime;
use super::repository::{Built, DbKind, Insert, ROWS_PER_STATEMENT};
use super::{LocalMessage, MessageStatus};
use crate::error::{BoxError, Error, Result};
use crate::event::{registered_event, Envelope, Event, EventId, Headers};
use crate::producer::Producer;
use crate::transport::Outgoing;

/// A database the local message table can live in: PostgreSQL, MySQL /
/// MariaDB, SQLite (each behind its cargo feature).
pub trait OutboxDatabase: sqlx::Database {
    #[doc(hidden)]
    const KIND: DbKind;

    #[doc(hidden)]
    fn __execute<'c>(
        conn: &'c mut <Self as sqlx::Database>::Connection,
        q: Built,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;

    #[doc(hidden)]
    fn __insert<'c>(
        conn: &'c mut <Self as sqlx::Database>::Connection,
        q: Insert<'c>,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;
}

/// A database transaction that also enqueues events in the local message
/// table. Derefs to [`sqlx::Transaction`], so `&mut **tx` is the connection
/// for your own statements.
///
/// [`commit`](Self::commit) commits, then hands the events to the relay,
/// which sends them at once. [`rollback`](Self::rollback), or dropping the
/// transaction, sends nothing.
///
/// ```no_run
/// # use heytom_mq::prelude::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderCreated { order_id: String }
/// # impl Event for OrderCreated { const NAME: &'static str = "OrderCreated";
/// #   fn route() -> &'static Route { static R: Route = Route::Default; &R }
/// #   fn partition_key(&self) -> Option<String> { None } }
/// # async fn run(producer: Producer, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = producer.begin(&pool).await?;
/// sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind("o-1").execute(&mut **tx).await?;
/// tx.publish(&OrderCreated { order_id: "o-1".into() }).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub struct OutboxTransaction<DB: OutboxDatabase> {
    tx: Transaction<'static, DB>,
    runtime: Arc<OutboxRuntime>,
    producer: Producer,
    rows: Vec<LocalMessage>,
    /// The commit lease the rows are written with (with dispatch after commit).
    lease_token: Option<Arc<str>>,
    /// When the first insert was sent: the commit lease runs from after it.
    since: Option<Instant>,
    /// Events scheduled for later (`publish_at`), and the earliest due time.
    scheduled: Vec<EventId>,
    wake_at: Option<DateTime<Utc>>,
}

impl<DB: OutboxDatabase> std::fmt::Debug for OutboxTransaction<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxTransaction")
            .field("database", &DB::KIND.as_str())
            .field("events", &self.rows.len())
            .finish()
    }
}

impl<DB: OutboxDatabase> std::ops::Deref for OutboxTransaction<DB> {
    type Target = Transaction<'static, DB>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<DB: OutboxDatabase> std::ops::DerefMut for OutboxTransaction<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl<DB: OutboxDatabase> OutboxTransaction<DB> {
    /// Enqueues one event; it is sent after [`commit`](Self::commit).
    pub async fn publish<E: Event>(&mut self, event: &E) -> Result<EventId> {
        self.publish_with_headers(event, Headers::new()).await
    }

    /// Enqueues one event with extra headers (correlation id, your own).
    pub async fn publish_with_headers<E: Event>(
        &mut self,
        event: &E,
        headers: Headers,
    ) -> Result<EventId> {
        let row = self.row(event, headers)?;
        let id = row.id;
        self.insert(vec![row]).await?;
        Ok(id)
    }

    /// Enqueues several events with one multi-row insert.
    pub async fn publish_batch<E: Event>(&mut self, events: &[E]) -> Result<Vec<EventId>> {
        let rows = events
            .iter()
            .map(|e| self.row(e, Headers::new()))
            .collect::<Result<Vec<_>>>()?;
        let ids = rows.iter().map(|r| r.id).collect();
        self.insert(rows).await?;
        Ok(ids)
    }

    /// Enqueues one event to be sent at `when`: stored with this
    /// transaction (a rollback discards it), then sent by the outbox relay
    /// once `when` has come, by this app or another instance on the table
    /// (see [`Producer::send_at`]). A time in the past is
    /// [`publish`](Self::publish). Needs the retry scanner enabled.
    ///
    /// ```no_run
    /// # use heytom_mq::prelude::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct PaymentReminder { order_id: String }
    /// # impl Event for PaymentReminder { const NAME: &'static str = "PaymentReminder";
    /// #   fn route() -> &'static Route { static R: Route = Route::Default; &R }
    /// #   fn partition_key(&self) -> Option<String> { None } }
    /// # async fn run(producer: Producer, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = producer.begin(&pool).await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind("o-1").execute(&mut **tx).await?;
    /// let in_a_day = chrono::Utc::now() + chrono::Duration::days(1);
    /// tx.publish_at(&PaymentReminder { order_id: "o-1".into() }, in_a_day).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_at<E: Event>(
        &mut self,
        event: &E,
        when: DateTime<Utc>,
    ) -> Result<EventId> {
        self.runtime.check_schedulable()?;
        if when <= Utc::now() {
            return self.publish(event).await;
        }
        let mut row = message_row(&self.producer, event, Headers::new())?;
        // Unleased, due at `when`: no post-commit send, only a scanner claims it.
        row.next_attempt_at = when;
        let id = row.id;
        let table = &self.runtime.relay.store.table;
        let span = tracing::debug_span!("outbox.schedule", event_id = %id, event_name = E::NAME, due = %when);
        DB::__insert(
            &mut *self.tx,
            table.insert_rows(std::slice::from_ref(&row), None),
        )
        .instrument(span)
        .await
        .map_err(|e| Error::storage(format!("outbox insert into {} failed: {e}", table.name), e))?;
        self.scheduled.push(id);
        self.wake_at = Some(self.wake_at.map_or(when, |w| w.min(when)));
        Ok(id)
    }

    /// Enqueues one event to be sent `delay` after now; see
    /// [`publish_at`](Self::publish_at).
    pub async fn publish_after<E: Event>(
        &mut self,
        event: &E,
        delay: std::time::Duration,
    ) -> Result<EventId> {
        self.runtime.check_schedulable()?;
        self.publish_at(event, super::schedule::due_after(delay)?)
            .await
    }

    /// Commits the transaction, then hands the events to the relay, which
    /// sends them at once. If the commit fails nothing is sent.
    pub async fn commit(self) -> Result<()> {
        let OutboxTransaction {
            tx,
            runtime,
            rows,
            since,
            wake_at,
            ..
        } = self;
        tx.commit()
            .await
            .map_err(|e| Error::storage(format!("commit failed: {e}"), e))?;
        runtime.committed(rows, since.unwrap_or_else(Instant::now));
        if let Some(when) = wake_at {
            runtime.relay.schedule.hint(when);
            // The other instances' scanners look at the earliest due time again.
            runtime.relay.wake_scanners(false);
        }
        Ok(())
    }

    /// Rolls back: the business statements and the events are discarded.
    pub async fn rollback(self) -> Result<()> {
        self.tx
            .rollback()
            .await
            .map_err(|e| Error::storage(format!("rollback failed: {e}"), e))
    }

    /// Ids of the events enqueued so far (scheduled ones last).
    pub fn event_ids(&self) -> Vec<EventId> {
        let now = self.rows.iter().map(|r| r.id);
        now.chain(self.scheduled.iter().copied()).collect()
    }

    fn row<E: Event>(&mut self, event: &E, headers: Headers) -> Result<LocalMessage> {
        let mut row = message_row(&self.producer, event, headers)?;
        let relay = &self.runtime.relay;
        // With dispatch after commit the row carries a commit lease (from
        // the insert, on the database's clock: see `insert`), hidden from the
        // scanners until the post-commit sender has sent it; without, it is
        // due at once.
        if relay.dispatch_after_commit {
            let token = self.lease_token.get_or_insert_with(|| relay.commit_token());
            row.locked_by = Some(token.to_string());
        }
        Ok(row)
    }

    async fn insert(&mut self, rows: Vec<LocalMessage>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let runtime = self.runtime.clone();
        let table = &runtime.relay.store.table;
        let dispatch_after_commit = runtime.relay.dispatch_after_commit;
        let lease = dispatch_after_commit.then(|| millis(runtime.relay.lease));
        let tx = &mut self.tx;
        self.since.get_or_insert_with(Instant::now);
        let span = crate::telemetry::outbox_insert(&rows[0].id, &rows[0].message_type, rows.len());
        async {
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                DB::__insert(&mut **tx, table.insert_rows(chunk, lease))
                    .await
                    .map_err(|e| {
                        Error::storage(format!("outbox insert into {} failed: {e}", table.name), e)
                    })?;
            }
            Ok::<(), Error>(())
        }
        .instrument(span)
        .await?;
        if self.rows.is_empty() {
            self.rows = rows;
        } else {
            self.rows.extend(rows);
        }
        Ok(())
    }
}

impl Producer {
    fn outbox_runtime<DB: OutboxDatabase>(&self) -> Result<Arc<OutboxRuntime>> {
        let runtime = self
            .inner
            .attachment
            .clone()
            .map(Arc::downcast::<OutboxRuntime>);
        let Some(Ok(rt)) = runtime else {
            return Err(Error::config(
                "no local message table configured: add AppBuilder::outbox(Outbox::postgres(..) / mysql(..) / sqlite(..))",
            ));
        };
        if rt.kind() != DB::KIND {
            return Err(Error::config(format!(
                "the outbox is configured for {} but this transaction is on {}",
                rt.kind().as_str(),
                DB::KIND.as_str()
            )));
        }
        Ok(rt)
    }

    /// Begins a transaction on `pool` that can enqueue events; see
    /// [`OutboxTransaction`].
    pub async fn begin<DB: OutboxDatabase>(
        &self,
        pool: &Pool<DB>,
    ) -> Result<OutboxTransaction<DB>> {
        let runtime = self.outbox_runtime::<DB>()?.clone();
        let tx = pool
            .begin()
            .await
            .map_err(|e| Error::storage(format!("could not begin a transaction: {e}"), e))?;
        Ok(OutboxTransaction {
            tx,
            runtime,
            producer: self.clone(),
            rows: Vec::new(),
            lease_token: None,
            since: None,
            scheduled: Vec::new(),
            wake_at: None,
        })
    }

    /// Runs `f` in a transaction, stores the event it returns in the local
    /// message table in the same transaction, commits, and sends the event
    /// right after the commit.
    ///
    /// If `f` returns an error (or panics) the transaction is rolled back
    /// and nothing is sent; the error comes back as [`Error::Transaction`].
    pub async fn send_with_transaction<DB, E, F>(&self, pool: &Pool<DB>, f: F) -> Result<EventId>
    where
        DB: OutboxDatabase,
        E: Event,
        F: for<'t> FnOnce(&'t mut Transaction<'static, DB>) -> BoxFuture<'t, Result<E, BoxError>>,
    {
        let mut tx = self.begin(pool).await?;
        match f(&mut tx.tx).await {
            Ok(event) => {
                let id = tx.publish(&event).await?;
                tx.commit().await?;
                Ok(id)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(Error::Transaction(e))
            }
        }
    }

    /// Like [`send_with_transaction`](Self::send_with_transaction) for
    /// several events, stored with one multi-row insert.
    pub async fn send_batch_with_transaction<DB, E, F>(
        &self,
        pool: &Pool<DB>,
        f: F,
    ) -> Result<Vec<EventId>>
    where
        DB: OutboxDatabase,
        E: Event,
        F: for<'t> FnOnce(
            &'t mut Transaction<'static, DB>,
        ) -> BoxFuture<'t, Result<Vec<E>, BoxError>>,
    {
        let mut tx = self.begin(pool).await?;
        match f(&mut tx.tx).await {
            Ok(events) => {
                let ids = tx.publish_batch(&events).await?;
                tx.commit().await?;
                Ok(ids)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(Error::Transaction(e))
            }
        }
    }
}

/// A Pending row for `event`, due at once and unleased: the event checked
/// (registered, its transport configured), its envelope made.
pub(super) fn message_row<E: Event>(
    producer: &Producer,
    event: &E,
    mut headers: Headers,
) -> Result<LocalMessage> {
    if registered_event(E::NAME).is_none() {
        return Err(Error::config(format!(
            "event `{}` is not registered (#[derive(Event)] registers it); the outbox relay could not send it",
            E::NAME
        )));
    }
    let route = E::route();
    let transport = producer.transport_for(E::NAME, route)?;
    // Stored with the row: the relay's send continues the caller's trace.
    crate::telemetry::inject_current(&mut headers);
    let envelope = Envelope::with_headers(event, headers)?;
    let (topic, routing_key) = route.address(E::NAME);
    let headers = headers_json(&envelope).map_err(|source| Error::Serialization {
        event: E::NAME.to_owned(),
        source,
    })?;
    Ok(LocalMessage {
        id: envelope.id,
        mq_type: transport.kind().as_str().to_owned(),
        topic,
        routing_key,
        message_type: E::NAME.to_owned(),
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
        locked_by: None,
    })
}

/// Rebuilds the envelope of a row; fails (the row is marked Failed) when its
/// type is not a registered event or its headers are not a JSON object.
pub(super) fn to_outgoing(row: &LocalMessage) -> std::result::Result<Outgoing, String> {
    let Some(reg) = registered_event(&row.message_type) else {
        return Err(format!(
            "unknown message type `{}`: no Event with this NAME is compiled into this binary",
            row.message_type
        ));
    };
    let headers = row_headers(row)?;
    Ok(Outgoing {
        route: (reg.route)(),
        envelope: Envelope {
            id: row.id,
            name: reg.name.into(),
            occurred_at: row.created_at,
            headers,
            partition_key: row.partition_key.clone(),
            payload: row.message_body.clone().into_bytes(),
        },
    })
}

/// A row's `Headers` column as an envelope's headers: without the default
/// correlation id (the event id), which envelopes do not store (every
/// transport answers it from the id). The column of a row written here
/// holds that alone (see [`headers_json`]): recognised as it is, not parsed.
fn row_headers(row: &LocalMessage) -> std::result::Result<Headers, String> {
    use crate::event::headers::CORRELATION_ID;

    let Some(h) = row.headers.as_deref().filter(|h| !h.is_empty()) else {
        return Ok(Headers::new());
    };
    let mut id = uuid::Uuid::encode_buffer();
    let id: &str = row.id.hyphenated().encode_lower(&mut id);
    // `{"correlation-id":"<id>"}`, byte for byte.
    let default = h
        .strip_prefix("{\"")
        .and_then(|r| r.strip_prefix(CORRELATION_ID))
        .and_then(|r| r.strip_prefix("\":\""))
        .and_then(|r| r.strip_suffix("\"}"));
    if default == Some(id) {
        return Ok(Headers::new());
    }
    let mut headers: Headers =
        serde_json::from_str(h).map_err(|e| format!("invalid Headers column: {e}"))?;
    if headers.get(CORRELATION_ID).is_some_and(|c| c == id) {
        headers.remove(CORRELATION_ID);
    }
    Ok(headers)
}

/// A row's `Headers` column: the envelope's headers as a JSON object, with
/// the correlation id in its place (the event id, which the envelope does
/// not store, unless the headers carry another), as before the default was
/// left out of envelopes.
pub(super) fn headers_json(envelope: &Envelope) -> serde_json::Result<String> {
    use serde::Serializer as _;
    use std::ops::Bound;

    use crate::event::headers::CORRELATION_ID;

    let h = &envelope.headers;
    let mut id = uuid::Uuid::encode_buffer();
    let id: &str = envelope.id.hyphenated().encode_lower(&mut id);
    let correlation = h.get(CORRELATION_ID).map_or(id, String::as_str);
    fn pairs<'a>(
        r: std::collections::btree_map::Range<'a, String, String>,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        r.map(|(k, v)| (k.as_str(), v.as_str()))
    }
    let entries = pairs(h.range::<str, _>((Bound::Unbounded, Bound::Excluded(CORRELATION_ID))))
        .chain([(CORRELATION_ID, correlation)])
        .chain(pairs(h.range::<str, _>((
            Bound::Excluded(CORRELATION_ID),
            Bound::Unbounded,
        ))));
    // Sized for the usual headers (a correlation id): one allocation.
    let mut out = Vec::with_capacity(96);
    serde_json::Serializer::new(&mut out).collect_map(entries)?;
    // serde_json writes UTF-8 only.
    Ok(String::from_utf8(out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::headers::CORRELATION_ID;

    #[test]
    fn the_headers_column_has_the_correlation_id_in_key_order() {
        let mut e = Envelope {
            id: uuid::Uuid::now_v7(),
            name: "Ping".into(),
            occurred_at: Utc::now(),
            headers: Headers::from([
                ("a".to_owned(), "1".to_owned()),
                ("z".to_owned(), "2".to_owned()),
            ]),
            partition_key: None,
            payload: b"{}".to_vec(),
        };
        let default = format!(r#"{{"a":"1","{CORRELATION_ID}":"{}","z":"2"}}"#, e.id);
        assert_eq!(headers_json(&e).unwrap(), default);
        // what a map with the default in it writes, read back the same
        let mut with_default = e.headers.clone();
        with_default.insert(CORRELATION_ID.to_owned(), e.id.to_string());
        assert_eq!(serde_json::to_string(&with_default).unwrap(), default);

        e.headers.insert(CORRELATION_ID.to_owned(), "c".to_owned());
        assert_eq!(
            headers_json(&e).unwrap(),
            format!(r#"{{"a":"1","{CORRELATION_ID}":"c","z":"2"}}"#)
        );
        e.headers.clear();
        assert_eq!(
            headers_json(&e).unwrap(),
            format!(r#"{{"{CORRELATION_ID}":"{}"}}"#, e.id)
        );
    }

    #[test]
    fn a_rows_headers_read_back_as_its_envelope_had_them() {
        let mut row = LocalMessage::pending("Ping", "{}");
        let id = row.id.to_string();
        let read = |row: &LocalMessage, column: String| {
            let row = LocalMessage {
                headers: Some(column),
                ..row.clone()
            };
            row_headers(&row)
        };
        // What `headers_json` writes for an envelope without headers.
        let default = format!(r#"{{"{CORRELATION_ID}":"{id}"}}"#);
        assert_eq!(read(&row, default.clone()), Ok(Headers::new()));
        // The same, written by someone else's JSON.
        let spaced = format!(r#"{{ "{CORRELATION_ID}" : "{id}" }}"#);
        assert_eq!(read(&row, spaced), Ok(Headers::new()));
        let others = format!(r#"{{"a":"1","{CORRELATION_ID}":"{id}","z":"2"}}"#);
        assert_eq!(
            read(&row, others),
            Ok(Headers::from([
                ("a".to_owned(), "1".to_owned()),
                ("z".to_owned(), "2".to_owned()),
            ]))
        );
        // Another correlation id is the envelope's own.
        let own = format!(r#"{{"{CORRELATION_ID}":"c-1"}}"#);
        assert_eq!(
            read(&row, own),
            Ok(Headers::from([(
                CORRELATION_ID.to_owned(),
                "c-1".to_owned()
            )]))
        );
        // Another row's id is not this row's default.
        let other_id = format!(r#"{{"{CORRELATION_ID}":"{}"}}"#, uuid::Uuid::now_v7());
        assert_eq!(read(&row, other_id).map(|h| h.len()), Ok(1));
        assert!(read(&row, "{not json".to_owned())
            .unwrap_err()
            .contains("invalid Headers column"));
        row.headers = None;
        assert_eq!(row_headers(&row), Ok(Headers::new()));
        assert_eq!(read(&row, String::new()), Ok(Headers::new()));
    }
}
