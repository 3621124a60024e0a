//! Topic administration: the topics `#[kafka(...)]` asks for are created
//! when missing (partitions, replication factor, `retention.ms`,
//! `compression.type`), and an existing topic with fewer partitions than
//! asked is a topology error.

use super::*;

/// What a topic should look like, from its route.
#[derive(Debug, Clone)]
pub(crate) struct TopicSpec {
    pub(crate) name: String,
    pub(crate) partitions: i32,
    /// Whether the attribute asked for the partition count (then fewer is an error).
    pub(crate) explicit_partitions: bool,
    /// `None`: the broker's default.
    pub(crate) replication: Option<i16>,
    pub(crate) configs: Vec<(&'static str, String)>,
}

impl TransportInner {
    pub(super) fn admin(&self) -> Result<Arc<AdminClient<TracingContext>>> {
        let mut slot = lock(&self.admin);
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let a: AdminClient<TracingContext> = health::admin_config(self.options.client_config())
            .create_with_context(self.context())
            .map_err(|e| {
                self.options
                    .config_error("invalid Kafka admin settings", &e)
            })?;
        let a = Arc::new(a);
        *slot = Some(a.clone());
        Ok(a)
    }

    pub(crate) fn topic_spec(&self, route: &Route, event_name: &str) -> TopicSpec {
        let k = route.as_kafka();
        let mut configs = Vec::new();
        if let Some(ms) = k.and_then(|k| k.retention_ms) {
            configs.push(("retention.ms", ms.to_string()));
        }
        if let Some(c) = k.and_then(|k| k.compression_type) {
            configs.push(("compression.type", c.as_str().to_owned()));
        }
        let asked = k.and_then(|k| k.num_partitions);
        TopicSpec {
            name: topic_of(route, event_name).to_owned(),
            partitions: asked.unwrap_or(self.options.default_num_partitions),
            explicit_partitions: asked.is_some(),
            replication: k
                .and_then(|k| k.replication_factor)
                .or(self.options.default_replication_factor),
            configs,
        }
    }

    fn is_declared(&self, topic: &str) -> bool {
        self.declared
            .read()
            .map(|s| s.contains(topic))
            .unwrap_or_else(|p| p.into_inner().contains(topic))
    }

    /// Whether a publish to `topic` declares it first (see
    /// [`ensure_topic_for_publish`](Self::ensure_topic_for_publish)).
    pub(super) fn declares_before_publish(&self, topic: &str) -> bool {
        self.options.declare_topics && !self.is_declared(topic)
    }

    /// Creates a topic unless it was already declared by this transport
    /// (one declaration at a time per topic: those waiting for it find it
    /// done).
    pub(crate) async fn ensure_topic(&self, spec: &TopicSpec) -> Result<()> {
        if !self.options.declare_topics || self.is_declared(&spec.name) {
            return Ok(());
        }
        let _turn = self.declaring.turn(&spec.name).await;
        if self.is_declared(&spec.name) {
            return Ok(());
        }
        self.create_topic(spec).await
    }

    pub(super) async fn create_topic(&self, spec: &TopicSpec) -> Result<()> {
        tracing::debug!(topic = %spec.name, partitions = spec.partitions, "declaring Kafka topic");
        let admin = self.admin()?;
        let mut new = NewTopic::new(
            &spec.name,
            spec.partitions,
            // -1: the broker's `default.replication.factor` (KIP-464).
            TopicReplication::Fixed(spec.replication.map_or(-1, i32::from)),
        );
        for (k, v) in &spec.configs {
            new = new.set(k, v);
        }
        let timeout = self.options.operation_timeout;
        let opts = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| Error::Topology {
                transport: KAFKA,
                message: format!("creating topic `{}` failed: {e}", spec.name),
            })?;
        for r in results {
            match r {
                Ok(topic) => tracing::info!(
                    topic,
                    partitions = spec.partitions,
                    replication_factor = ?spec.replication,
                    configs = ?spec.configs,
                    "created Kafka topic"
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    if spec.explicit_partitions {
                        self.check_partitions(&admin, spec).await?;
                    }
                }
                Err((topic, code)) => {
                    return Err(Error::Topology {
                        transport: KAFKA,
                        message: format!("creating topic `{topic}` failed: {code}"),
                    })
                }
            }
        }
        if let Ok(mut set) = self.declared.write() {
            set.insert(spec.name.clone());
        }
        Ok(())
    }

    async fn check_partitions(
        &self,
        admin: &Arc<AdminClient<TracingContext>>,
        spec: &TopicSpec,
    ) -> Result<()> {
        let admin = admin.clone();
        let topic = spec.name.clone();
        let timeout = self.options.operation_timeout;
        let count = tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(Some(&topic), timeout)
                .map(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == topic)
                        .map(|t| t.partitions().len())
                })
        })
        .await
        .map_err(|e| Error::Topology {
            transport: KAFKA,
            message: format!("metadata task for topic `{}` failed: {e}", spec.name),
        })?
        .map_err(|e| Error::Topology {
            transport: KAFKA,
            message: format!("reading metadata of topic `{}` failed: {e}", spec.name),
        })?;
        let count = count.unwrap_or(0);
        if (count as i64) < i64::from(spec.partitions) {
            return Err(Error::Topology {
                transport: KAFKA,
                message: format!(
                    "topic `{}` exists with {count} partition(s) but #[kafka(num_partitions = {})] asks for {}; \
                     add partitions to the topic (kafka-topics --alter --partitions {}) or lower num_partitions",
                    spec.name, spec.partitions, spec.partitions, spec.partitions
                ),
            });
        }
        Ok(())
    }

    /// On the publish path a failed declaration is logged, not fatal: the
    /// topic may exist already or be created by the broker (and is not
    /// declared again by this transport).
    pub(super) async fn ensure_topic_for_publish(&self, route: &Route, event_name: &str) {
        let topic = topic_of(route, event_name);
        if !self.options.declare_topics || self.is_declared(topic) {
            return;
        }
        // One declaration at a time per topic: a burst of sends to a new
        // topic makes one, the others find it done.
        let _turn = self.declaring.turn(topic).await;
        if self.is_declared(topic) {
            return;
        }
        let spec = self.topic_spec(route, event_name);
        if let Err(e) = self.create_topic(&spec).await {
            tracing::warn!(topic, error = %e, "could not declare Kafka topic before publishing");
            if let Ok(mut set) = self.declared.write() {
                set.insert(spec.name);
            }
        }
    }
}
