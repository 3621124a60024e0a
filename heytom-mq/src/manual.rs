//! The manual producers and consumers of each transport
//! (`InMemoryProducer`, `RabbitMqConsumer`, ...): a [`Producer`](crate::Producer)
//! or [`Consumer`](crate::Consumer) on one transport, for code without an
//! `App`. They sit above the transports, next to the app.

use std::sync::Arc;

use crate::transport::memory::{InMemoryBroker, InMemoryTransport};

crate::producer::manual_producer!(
    /// A producer on an [`InMemoryBroker`].
    ///
    /// ```
    /// # use heytom_mq::prelude::*;
    /// # #[derive(Event, serde::Serialize, serde::Deserialize)] struct Ping;
    /// # async fn run() -> Result<(), heytom_mq::Error> {
    /// let broker = InMemoryBroker::new();
    /// let consumer = InMemoryConsumer::new(&broker);
    /// consumer.start().await?;
    /// consumer.subscribe(|_: Ping| async { true }).await?;
    /// InMemoryProducer::new(&broker).send(&Ping).await?;
    /// # Ok(()) }
    /// ```
    InMemoryProducer
);

impl InMemoryProducer {
    /// A producer publishing to `broker`.
    pub fn new(broker: &InMemoryBroker) -> Self {
        InMemoryProducer(crate::Producer::on(Arc::new(InMemoryTransport::new(
            broker.clone(),
        ))))
    }
}

crate::consumer::manual_consumer!(
    /// A consumer on an [`InMemoryBroker`].
    InMemoryConsumer
);

impl InMemoryConsumer {
    /// A consumer reading from `broker`.
    pub fn new(broker: &InMemoryBroker) -> Self {
        InMemoryConsumer(crate::consumer::Consumer::new(Arc::new(
            InMemoryTransport::new(broker.clone()),
        )))
    }
}

#[cfg(feature = "rabbitmq")]
mod rabbitmq {
    use std::sync::Arc;

    use crate::error::Result;
    use crate::transport::rabbitmq::{RabbitMqOptions, RabbitMqTransport};

    crate::producer::manual_producer!(
        /// A producer on RabbitMQ.
        ///
        /// ```no_run
        /// # use heytom_mq::prelude::*;
        /// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
        /// # impl Event for Ping {
        /// #     const NAME: &'static str = "Ping";
        /// #     fn route() -> &'static Route { &Route::Default }
        /// #     fn partition_key(&self) -> Option<String> { None }
        /// # }
        /// # async fn run() -> Result<(), heytom_mq::Error> {
        /// let producer = RabbitMqProducer::connect(RabbitMqOptions::new("amqp://guest:guest@localhost:5672")).await?;
        /// producer.send(&Ping).await?;
        /// # Ok(()) }
        /// ```
        RabbitMqProducer
    );

    impl RabbitMqProducer {
        /// Connects a producer.
        pub async fn connect(options: RabbitMqOptions) -> Result<Self> {
            Ok(RabbitMqProducer(crate::Producer::on(Arc::new(
                RabbitMqTransport::connect(options).await?,
            ))))
        }

        /// Closes the connection after the outstanding confirms.
        pub async fn close(&self) -> Result<()> {
            for t in self.0.inner.router.all() {
                t.close().await?;
            }
            Ok(())
        }
    }

    crate::consumer::manual_consumer!(
        /// A consumer on RabbitMQ.
        ///
        /// ```no_run
        /// # use heytom_mq::prelude::*;
        /// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping;
        /// # impl Event for Ping {
        /// #     const NAME: &'static str = "Ping";
        /// #     fn route() -> &'static Route { &Route::Default }
        /// #     fn partition_key(&self) -> Option<String> { None }
        /// # }
        /// # async fn run() -> Result<(), heytom_mq::Error> {
        /// let consumer = RabbitMqConsumer::connect(RabbitMqOptions::new("amqp://guest:guest@localhost:5672")).await?;
        /// consumer.start().await?;
        /// consumer.subscribe(|_: Ping| async { true }).await?;
        /// # Ok(()) }
        /// ```
        RabbitMqConsumer
    );

    impl RabbitMqConsumer {
        /// Connects a consumer (the connection is checked now).
        pub async fn connect(options: RabbitMqOptions) -> Result<Self> {
            let transport = RabbitMqTransport::new(options)?;
            // Fail now on a wrong URL or credentials, not at the first subscription.
            transport.check_consuming_connection().await?;
            Ok(RabbitMqConsumer(crate::consumer::Consumer::new(Arc::new(
                transport,
            ))))
        }
    }
}
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{RabbitMqConsumer, RabbitMqProducer};

#[cfg(feature = "kafka")]
mod kafka {
    use std::sync::Arc;

    use crate::error::Result;
    use crate::transport::kafka::{KafkaOptions, KafkaTransport};

    crate::producer::manual_producer!(
        /// A producer on Kafka.
        ///
        /// ```no_run
        /// # use heytom_mq::prelude::*;
        /// # #[derive(Event, serde::Serialize, serde::Deserialize)] #[kafka(topic = "pings")] struct Ping;
        /// # async fn run() -> Result<(), heytom_mq::Error> {
        /// let producer = KafkaProducer::new(KafkaOptions::new("127.0.0.1:9092"))?;
        /// producer.send(&Ping).await?;
        /// # Ok(()) }
        /// ```
        KafkaProducer
    );

    impl KafkaProducer {
        /// A producer; the brokers are contacted on the first send.
        pub fn new(options: KafkaOptions) -> Result<Self> {
            Ok(KafkaProducer(crate::Producer::on(Arc::new(
                KafkaTransport::new(options)?,
            ))))
        }

        /// Waits until every queued message is acknowledged (at most the operation timeout).
        pub async fn flush(&self) -> Result<()> {
            for t in self.0.inner.router.all() {
                t.close().await?;
            }
            Ok(())
        }
    }

    crate::consumer::manual_consumer!(
        /// A consumer on Kafka.
        ///
        /// ```no_run
        /// # use heytom_mq::prelude::*;
        /// # #[derive(Event, serde::Serialize, serde::Deserialize)] #[kafka(topic = "pings")] struct Ping;
        /// # async fn run() -> Result<(), heytom_mq::Error> {
        /// let consumer = KafkaConsumer::new(KafkaOptions::new("127.0.0.1:9092").group_id("pinger"))?;
        /// consumer.start().await?;
        /// consumer.subscribe(|_: Ping| async { true }).await?;
        /// # Ok(()) }
        /// ```
        KafkaConsumer
    );

    impl KafkaConsumer {
        /// A consumer; each subscription joins its consumer group when it starts.
        pub fn new(options: KafkaOptions) -> Result<Self> {
            Ok(KafkaConsumer(crate::consumer::Consumer::new(Arc::new(
                KafkaTransport::new(options)?,
            ))))
        }
    }
}
#[cfg(feature = "kafka")]
pub use kafka::{KafkaConsumer, KafkaProducer};
