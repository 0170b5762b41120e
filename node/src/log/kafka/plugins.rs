//! The compacted `firescroll_{ns}_plugins` topic: how plugin modules and name bindings reach
//! every node of every region. One partition; keys `wasm:<digest>` (module bytes) and
//! `name:<name>` (binding JSON, or a tombstone to unbind). Every node reads it from the beginning
//! and follows it, outside any consumer group.

use super::KafkaSettings;
use super::quiet::{EVERY, QuietContext, Repeats, error_kind};
use crate::log::{LogError, PluginFeed, PluginSink, PublishFuture};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Largest plugin record (a module) either side handles.
const MAX_RECORD_BYTES: usize = 16 << 20;

/// The plugins topic of one namespace.
pub struct KafkaPluginFeed {
    settings: KafkaSettings,
    producer: FutureProducer<QuietContext>,
    stop: Arc<AtomicBool>,
    following: AtomicBool,
}

impl KafkaPluginFeed {
    pub fn new(settings: KafkaSettings) -> Result<Self, LogError> {
        let mut config = settings.producer_config();
        config.set("message.max.bytes", (MAX_RECORD_BYTES + 4096).to_string());
        let producer = config
            .create_with_context(QuietContext::new())
            .map_err(|e| LogError::Unavailable(e.to_string()))?;
        Ok(KafkaPluginFeed {
            settings,
            producer,
            stop: Arc::new(AtomicBool::new(false)),
            following: AtomicBool::new(false),
        })
    }

    /// Stops following.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = rdkafka::producer::Producer::flush(&self.producer, Duration::from_secs(5));
    }
}

impl PluginFeed for KafkaPluginFeed {
    fn publish<'a>(&'a self, key: String, value: Option<Vec<u8>>) -> PublishFuture<'a> {
        Box::pin(async move {
            let topic = self.settings.plugins_topic();
            let mut record = FutureRecord::<String, Vec<u8>>::to(&topic)
                .partition(0)
                .key(&key);
            if let Some(value) = &value {
                record = record.payload(value);
            }
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| LogError::Unavailable(format!("cannot queue {key}: {e}")))?;
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(LogError::Unavailable(format!(
                    "Kafka did not acknowledge {key}: {e}"
                ))),
                Err(_) => Err(LogError::Closed),
            }
        })
    }

    fn follow(&self, sink: PluginSink) {
        if self.following.swap(true, Ordering::SeqCst) {
            return;
        }
        let (settings, stop) = (self.settings.clone(), self.stop.clone());
        let spawned = std::thread::Builder::new()
            .name("kafka-plugins".into())
            .spawn(move || {
                let mut config = settings.base_config();
                config
                    // Never joins a group or commits: every node reads everything.
                    .set("group.id", format!("firescroll_{}_plugins_reader", settings.namespace))
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("fetch.max.bytes", MAX_RECORD_BYTES.to_string())
                    .set("max.partition.fetch.bytes", MAX_RECORD_BYTES.to_string())
                    .set("receive.message.max.bytes", (MAX_RECORD_BYTES + 65536).to_string())
                    .set("fetch.wait.max.ms", settings.fetch_wait.as_millis().to_string());
                let consumer: BaseConsumer<QuietContext> =
                    match config.create_with_context(QuietContext::new()) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot follow the plugins topic");
                        return;
                    }
                };
                let mut assignment = TopicPartitionList::new();
                let topic = settings.plugins_topic();
                if let Err(e) = assignment.add_partition_offset(&topic, 0, Offset::Beginning) {
                    tracing::error!(error = %e, "cannot follow the plugins topic");
                    return;
                }
                if let Err(e) = consumer.assign(&assignment) {
                    tracing::error!(error = %e, "cannot follow the plugins topic");
                    return;
                }
                tracing::info!(topic, "following the plugins topic");
                let repeats = Repeats::new(EVERY);
                while !stop.load(Ordering::SeqCst) {
                    match consumer.poll(Duration::from_millis(100)) {
                        None => {}
                        Some(Ok(message)) => {
                            let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok())
                            else {
                                tracing::warn!(offset = message.offset(), "plugin record without a key; skipped");
                                continue;
                            };
                            sink(key, message.payload());
                        }
                        Some(Err(e)) => {
                            if let Some(left_out) = repeats.admit(&error_kind(&e)) {
                                tracing::warn!(error = %e, left_out, "reading the plugins topic failed; retrying");
                            }
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start following the plugins topic");
        }
    }
}
