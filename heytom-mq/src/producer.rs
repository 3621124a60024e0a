//! The producing side: [`Producer`] and the [`MessageProducer`] trait.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tracing::Instrument;

use crate::error::{Error, Result};
use crate::event::{Envelope, Event, EventId, EventName, Headers, Route, TransportKind};
use crate::telemetry::{self, metrics, metrics::Timer};
use crate::transport::{Outgoing, PendingResults, Transport};

/// The producing half of a transport, used by hand.
pub trait MessageProducer: Send + Sync {
    /// Publishes one event and waits for the broker's confirm.
    fn send<E: Event>(&self, event: &E) -> impl Future<Output = Result<EventId>> + Send;
    /// Publishes several events, pipelining the confirms.
    fn send_batch<E: Event>(
        &self,
        events: &[E],
    ) -> impl Future<Output = Result<Vec<EventId>>> + Send;
}

/// Picks the transport for a route.
#[derive(Clone, Default)]
pub(crate) struct Router {
    transports: BTreeMap<TransportKind, Arc<dyn Transport>>,
    /// What [`resolve`](Self::resolve) answers for a Kafka route, a
    /// RabbitMQ route and an event without a transport attribute, worked
    /// out when a transport is added (every send asks).
    resolved: [Option<Arc<dyn Transport>>; 3],
}

/// The three shapes of route, as indexes into `Router::resolved`.
const ROUTES: [Route; 3] = [
    Route::Kafka(crate::event::KafkaRoute::new("")),
    Route::RabbitMq(crate::event::RabbitMqRoute::new("")),
    Route::Default,
];

fn route_index(route: &Route) -> usize {
    match route {
        Route::Kafka(_) => 0,
        Route::RabbitMq(_) => 1,
        Route::Default => 2,
    }
}

impl Router {
    pub(crate) fn insert(&mut self, t: Arc<dyn Transport>) {
        self.transports.insert(t.kind(), t);
        for (slot, route) in self.resolved.iter_mut().zip(&ROUTES) {
            *slot = resolve_kind(self.transports.keys().copied(), route)
                .and_then(|k| self.transports.get(&k))
                .cloned();
        }
    }

    pub(crate) fn kinds(&self) -> impl Iterator<Item = TransportKind> + '_ {
        self.transports.keys().copied()
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<dyn Transport>> {
        self.transports.values()
    }

    /// The attribute's transport if configured; otherwise the in-memory
    /// broker if configured; an event with no attribute takes the first
    /// configured of in-memory, RabbitMQ, Kafka and the custom transports.
    pub(crate) fn resolve(&self, route: &Route) -> Option<&Arc<dyn Transport>> {
        self.resolved[route_index(route)].as_ref()
    }
}

/// Which of the configured transports carries a route (see [`Router::resolve`]).
pub(crate) fn resolve_kind(
    configured: impl Iterator<Item = TransportKind> + Clone,
    route: &Route,
) -> Option<TransportKind> {
    let has = |k: TransportKind| configured.clone().any(|c| c == k);
    match route.transport() {
        Some(k) if has(k) => Some(k),
        // The in-memory broker carries every event, whatever its attribute.
        Some(_) => has(TransportKind::InMemory).then_some(TransportKind::InMemory),
        // No attribute: the first configured of in-memory, RabbitMQ, Kafka,
        // then the custom transports by name.
        None => configured.clone().min(),
    }
}

pub(crate) struct ProducerInner {
    pub(crate) router: Router,
    /// What the layer above attaches to the producer it hands out (the
    /// outbox keeps its runtime here for `Producer::begin`). Type-erased,
    /// so the producer knows nothing of the outbox.
    #[cfg_attr(not(feature = "_outbox"), allow(dead_code))]
    pub(crate) attachment: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// Publishes events; cheap to clone.
///
/// Get one from `App::producer()` / `RunningApp::producer()`.
#[derive(Clone)]
pub struct Producer {
    pub(crate) inner: Arc<ProducerInner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("transports", &self.inner.router.kinds().collect::<Vec<_>>())
            .finish()
    }
}

impl crate::handler::Publisher for Producer {
    fn publish_envelope(
        &self,
        route: &'static Route,
        envelope: Envelope,
    ) -> futures::future::BoxFuture<'_, Result<()>> {
        Box::pin(self.send_envelope(route, envelope))
    }
}

impl Producer {
    pub(crate) fn from_router(router: Router) -> Self {
        Producer {
            inner: Arc::new(ProducerInner {
                router,
                attachment: None,
            }),
        }
    }

    /// A producer on one transport.
    pub fn on(transport: Arc<dyn Transport>) -> Self {
        let mut router = Router::default();
        router.insert(transport);
        Self::from_router(router)
    }

    pub(crate) fn transport_for(&self, name: &str, route: &Route) -> Result<&Arc<dyn Transport>> {
        self.inner
            .router
            .resolve(route)
            .ok_or_else(|| Error::TransportNotConfigured(vec![(name.to_owned(), route.kind())]))
    }

    /// Publishes one event and waits for the broker's confirm.
    pub async fn send<E: Event>(&self, event: &E) -> Result<EventId> {
        self.send_with_headers(event, Headers::new()).await
    }

    /// Publishes one event with extra headers (correlation id, `traceparent`, your own).
    pub async fn send_with_headers<E: Event>(
        &self,
        event: &E,
        headers: Headers,
    ) -> Result<EventId> {
        let envelope = Envelope::with_headers(event, headers)?;
        let id = envelope.id;
        self.send_envelope(E::route(), envelope).await?;
        Ok(id)
    }

    /// Publishes a prepared envelope on the transport for `route`.
    #[doc(hidden)]
    pub async fn send_envelope(&self, route: &'static Route, mut envelope: Envelope) -> Result<()> {
        let transport = self.transport_for(&envelope.name, route)?;
        let span = telemetry::publish(route, &mut envelope, transport.kind());
        let timer = Timer::start();
        let outgoing = Outgoing { route, envelope };
        let r = telemetry::in_span(transport.publish(&outgoing), span).await;
        let (ok, failed) = (usize::from(r.is_ok()), usize::from(r.is_err()));
        metrics::published(&outgoing.envelope.name, transport.kind(), ok, failed, timer);
        r
    }

    /// Publishes several events, pipelining the confirms. Fails if any
    /// failed, naming each failure; the ids are returned only on full success.
    pub async fn send_batch<E: Event>(&self, events: &[E]) -> Result<Vec<EventId>> {
        if let Some(sent) = self.send_encoded(events).await {
            return sent;
        }
        let mut out = Vec::with_capacity(events.len());
        let mut size = 128;
        let mut headers = Headers::new();
        telemetry::inject_current(&mut headers);
        for e in events {
            out.push(Outgoing {
                route: E::route(),
                envelope: Envelope::sized(e, headers.clone(), &mut size)?,
            });
        }
        let ids: Vec<EventId> = out.iter().map(|o| o.envelope.id).collect();
        let count = out.len();
        // One event type, one route: one transport, which may keep the messages.
        let results = match self.transport_for(E::NAME, E::route()) {
            Ok(transport) => {
                let span =
                    tracing::debug_span!("publish_batch", transport = %transport.kind(), count);
                let timer = Timer::start();
                let rs = transport.publish_batch_owned(out).instrument(span).await;
                let ok = rs.iter().filter(|r| r.is_ok()).count();
                metrics::published(E::NAME, transport.kind(), ok, count - ok, timer);
                rs
            }
            Err(e) => return Err(e),
        };
        let answered = results.len();
        let mut failures: Vec<String> = results
            .into_iter()
            .zip(&ids)
            .filter_map(|(r, id)| r.err().map(|e| format!("{id}: {e}")))
            .collect();
        for id in ids.iter().skip(answered) {
            failures.push(format!("{id}: transport returned too few results"));
        }
        if failures.is_empty() {
            Ok(ids)
        } else {
            Err(Error::publish(
                E::NAME,
                format!(
                    "{} of {} failed: {}",
                    failures.len(),
                    count,
                    failures.join("; ")
                ),
            ))
        }
    }

    /// Publishes prepared messages, grouped by transport; one result per
    /// message, once every transport has answered.
    pub async fn send_outgoing(&self, messages: &[Outgoing]) -> Vec<Result<()>> {
        self.start_outgoing(messages.to_vec()).await.await
    }
}

/// One transport's part of a batch: the positions and the messages.
type TransportBatch = (Arc<dyn Transport>, Vec<usize>, Vec<Outgoing>);

impl Producer {
    /// [`send_outgoing`](Self::send_outgoing) in two steps: returns once
    /// every transport has the messages in order
    /// ([`Transport::publish_batch_queued`]), with their results to come.
    pub(crate) async fn start_outgoing(&self, messages: Vec<Outgoing>) -> PendingResults {
        let n = messages.len();
        let mut results: Vec<Option<Result<()>>> = (0..n).map(|_| None).collect();
        // Per transport: its positions in `messages` and its messages.
        let mut groups: Vec<TransportBatch> = Vec::new();
        for (i, m) in messages.into_iter().enumerate() {
            match self.transport_for(&m.envelope.name, m.route) {
                Ok(t) => match groups.iter_mut().find(|(g, _, _)| g.kind() == t.kind()) {
                    Some((_, idx, batch)) => {
                        idx.push(i);
                        batch.push(m);
                    }
                    None => groups.push((t.clone(), vec![i], vec![m])),
                },
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut pending = Vec::with_capacity(groups.len());
        for (transport, idx, batch) in groups {
            let kind = transport.kind();
            let span = tracing::debug_span!("publish_batch", transport = %kind, count = idx.len());
            let names: Vec<EventName> = batch.iter().map(|m| m.envelope.name.clone()).collect();
            let timer = Timer::start();
            let rs = transport
                .publish_batch_queued(batch)
                .instrument(span.clone())
                .await;
            pending.push((kind, idx, names, timer, rs.instrument(span)));
        }
        Box::pin(async move {
            for (kind, idx, names, timer, rs) in pending {
                let rs = rs.await;
                let each = names
                    .iter()
                    .zip(&rs)
                    .map(|(name, r)| (name.as_str(), r.is_ok()));
                metrics::published_each(kind, each, timer);
                for (i, r) in idx.into_iter().zip(rs) {
                    results[i] = Some(r);
                }
            }
            results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| {
                        Err(Error::publish("?", "transport returned too few results"))
                    })
                })
                .collect()
        })
    }

    /// `send_batch` on a transport that takes a batch serialized up front
    /// ([`Transport::publish_encoded`]): every event is serialized into one
    /// buffer first (a serialization error fails the batch before anything
    /// is sent), then the transport sends each while earlier ones are in
    /// flight. `None` when the transport does not take such batches.
    async fn send_encoded<E: Event>(&self, events: &[E]) -> Option<Result<Vec<EventId>>> {
        let transport = self.transport_for(E::NAME, E::route()).ok()?;
        // The encoded wire form has no room for a trace context.
        if !transport.publishes_encoded() || events.is_empty() || telemetry::carries_trace_context()
        {
            return None;
        }
        let mut payloads = Vec::with_capacity(events.len() * 128);
        let mut ends = Vec::with_capacity(events.len());
        for e in events {
            if let Err(source) = serde_json::to_writer(&mut payloads, e) {
                return Some(Err(Error::Serialization {
                    event: E::NAME.to_owned(),
                    source,
                }));
            }
            ends.push(payloads.len());
        }
        let ids: Vec<EventId> = (0..events.len())
            .map(|_| crate::event::new_event_id())
            .collect();
        let keys: Vec<Option<String>> = events.iter().map(Event::partition_key).collect();
        let batch = crate::transport::EncodedBatch {
            route: E::route(),
            name: E::NAME,
            ids: &ids,
            payloads: &payloads,
            ends: &ends,
            keys: &keys,
        };
        let span =
            tracing::debug_span!("publish_batch", transport = %transport.kind(), count = ids.len());
        let timer = Timer::start();
        let results = transport.publish_encoded(&batch).instrument(span).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        metrics::published(E::NAME, transport.kind(), ok, ids.len() - ok, timer);
        let answered = results.len();
        let mut failures: Vec<String> = results
            .into_iter()
            .zip(&ids)
            .filter_map(|(r, id)| r.err().map(|e| format!("{id}: {e}")))
            .collect();
        for id in ids.iter().skip(answered) {
            failures.push(format!("{id}: transport returned too few results"));
        }
        if failures.is_empty() {
            return Some(Ok(ids));
        }
        Some(Err(Error::publish(
            E::NAME,
            format!(
                "{} of {} failed: {}",
                failures.len(),
                ids.len(),
                failures.join("; ")
            ),
        )))
    }
}

impl MessageProducer for Producer {
    fn send<E: Event>(&self, event: &E) -> impl Future<Output = Result<EventId>> + Send {
        Producer::send(self, event)
    }
    fn send_batch<E: Event>(
        &self,
        events: &[E],
    ) -> impl Future<Output = Result<Vec<EventId>>> + Send {
        Producer::send_batch(self, events)
    }
}

/// Defines a manual producer newtype over [`Producer`].
macro_rules! manual_producer {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone)]
        pub struct $name(pub(crate) $crate::Producer);

        impl $name {
            /// Publishes one event and waits for the broker's confirm.
            pub async fn send<E: $crate::Event>(&self, event: &E) -> $crate::Result<$crate::EventId> {
                self.0.send(event).await
            }
            /// Publishes one event with extra headers.
            pub async fn send_with_headers<E: $crate::Event>(&self, event: &E, headers: $crate::Headers) -> $crate::Result<$crate::EventId> {
                self.0.send_with_headers(event, headers).await
            }
            /// Publishes several events, pipelining the confirms.
            pub async fn send_batch<E: $crate::Event>(&self, events: &[E]) -> $crate::Result<Vec<$crate::EventId>> {
                self.0.send_batch(events).await
            }
            /// The general [`Producer`](crate::Producer) underneath.
            pub fn producer(&self) -> &$crate::Producer {
                &self.0
            }
        }

        impl $crate::MessageProducer for $name {
            fn send<E: $crate::Event>(&self, event: &E) -> impl ::std::future::Future<Output = $crate::Result<$crate::EventId>> + Send {
                self.0.send(event)
            }
            fn send_batch<E: $crate::Event>(&self, events: &[E]) -> impl ::std::future::Future<Output = $crate::Result<Vec<$crate::EventId>>> + Send {
                self.0.send_batch(events)
            }
        }
    };
}
pub(crate) use manual_producer;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{KafkaRoute, RabbitMqRoute};

    static KAFKA: Route = Route::Kafka(KafkaRoute::new("t"));
    static RABBIT: Route = Route::RabbitMq(RabbitMqRoute::new("k"));

    #[test]
    fn routes_pick_their_transport_then_fall_back_to_in_memory() {
        use TransportKind::*;
        let all = [InMemory, RabbitMq, Kafka];
        assert_eq!(resolve_kind(all.iter().copied(), &KAFKA), Some(Kafka));
        assert_eq!(resolve_kind(all.iter().copied(), &RABBIT), Some(RabbitMq));
        assert_eq!(
            resolve_kind(all.iter().copied(), &Route::Default),
            Some(InMemory)
        );
        let mem = [InMemory];
        assert_eq!(resolve_kind(mem.iter().copied(), &KAFKA), Some(InMemory));
        let rabbit = [RabbitMq];
        assert_eq!(resolve_kind(rabbit.iter().copied(), &KAFKA), None);
        assert_eq!(
            resolve_kind(rabbit.iter().copied(), &Route::Default),
            Some(RabbitMq)
        );
        let kafka_rabbit = [Kafka, RabbitMq];
        assert_eq!(
            resolve_kind(kafka_rabbit.iter().copied(), &Route::Default),
            Some(RabbitMq)
        );
    }

    /// A transport that is only its kind.
    struct Kind(TransportKind);

    #[async_trait::async_trait]
    impl Transport for Kind {
        fn kind(&self) -> TransportKind {
            self.0
        }
        fn group_for(&self, _: &crate::handler::HandlerEntry) -> String {
            String::new()
        }
        async fn publish(&self, _: &Outgoing) -> Result<()> {
            Ok(())
        }
        async fn subscribe(
            &self,
            _: crate::transport::Subscription,
        ) -> Result<Box<dyn crate::transport::SubscriptionHandle>> {
            unreachable!("not subscribed in this test")
        }
    }

    #[test]
    fn the_router_answers_what_resolve_kind_says_whatever_order_transports_come_in() {
        use TransportKind::*;
        let sets: [&[TransportKind]; 7] = [
            &[],
            &[Kafka],
            &[RabbitMq, Kafka],
            &[Kafka, RabbitMq, InMemory],
            &[InMemory, Kafka],
            &[Custom("bus"), Kafka],
            &[Custom("bus")],
        ];
        for kinds in sets {
            let mut router = Router::default();
            for (n, k) in kinds.iter().enumerate() {
                router.insert(Arc::new(Kind(*k)));
                // After each insert, for every shape of route.
                let so_far = &kinds[..=n];
                for route in [&KAFKA, &RABBIT, &Route::Default] {
                    assert_eq!(
                        router.resolve(route).map(|t| t.kind()),
                        resolve_kind(so_far.iter().copied(), route),
                        "{so_far:?} {route:?}"
                    );
                }
            }
            if kinds.is_empty() {
                assert!(router.resolve(&KAFKA).is_none());
            }
        }
    }
}
