//! Namespace bootstrap: the topics exist (created when missing, by setting), the mutations topic
//! really has PARTITIONS partitions, and the partitions topic pins that count — the first record
//! written there wins, and every node verifies it by reading it back.

use super::settings::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the namespace cannot be used. Each message says what differs and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot reach Kafka at {seeds} (KAFKA_SEEDS): {reason}")]
    Unreachable { seeds: String, reason: String },
    #[error(
        "topic {topic} does not exist and KAFKA_CREATE_TOPICS is off: create it with {partitions} partition(s), or turn KAFKA_CREATE_TOPICS on"
    )]
    MissingTopic { topic: String, partitions: u32 },
    #[error(
        "topic {topic} has {actual} partitions but PARTITIONS is {configured}: keys would be routed to partitions \
         other nodes do not read, and writes would be lost to readers. Set PARTITIONS={actual}, or use another NAMESPACE"
    )]
    TopicPartitionMismatch {
        topic: String,
        actual: u32,
        configured: u32,
    },
    #[error(
        "namespace {namespace} was created with {pinned} partitions (first record of {topic}) but PARTITIONS is {configured}: \
         nodes would disagree on which partition holds a key. Set PARTITIONS={pinned}, or use another NAMESPACE"
    )]
    PinnedPartitionMismatch {
        namespace: String,
        topic: String,
        pinned: u32,
        configured: u32,
    },
    #[error("Kafka bootstrap failed: {0}")]
    Kafka(String),
}

fn kafka(e: impl std::fmt::Display) -> BootstrapError {
    BootstrapError::Kafka(e.to_string())
}

/// Makes sure the namespace's topics exist and agree with the configured partition count.
pub async fn bootstrap(settings: &KafkaSettings) -> Result<(), BootstrapError> {
    let unreachable = |e: &dyn std::fmt::Display| BootstrapError::Unreachable {
        seeds: settings.seeds.clone(),
        reason: e.to_string(),
    };
    let probe: BaseConsumer = settings.reader_config().create().map_err(kafka)?;
    let metadata = probe
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| unreachable(&e))?;
    let existing = |topic: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as u32)
    };
    let mutations = settings.mutations_topic();
    let pins = settings.partitions_topic();
    let mut missing = Vec::new();
    let plugins = settings.plugins_topic();
    for (topic, partitions) in [(&mutations, settings.partitions), (&pins, 1), (&plugins, 1)] {
        if existing(topic).is_none() {
            if !settings.create_topics {
                return Err(BootstrapError::MissingTopic {
                    topic: topic.clone(),
                    partitions,
                });
            }
            missing.push((topic.clone(), partitions));
        }
    }
    if !missing.is_empty() {
        create_topics(settings, &missing).await?;
    }
    let actual = wait_for_topic(&probe, &mutations).await?;
    if actual != settings.partitions {
        return Err(BootstrapError::TopicPartitionMismatch {
            topic: mutations,
            actual,
            configured: settings.partitions,
        });
    }
    wait_for_topic(&probe, &pins).await?;
    let pinned = pinned_partition_count(settings).await?;
    if pinned != settings.partitions {
        return Err(BootstrapError::PinnedPartitionMismatch {
            namespace: settings.namespace.clone(),
            topic: pins,
            pinned,
            configured: settings.partitions,
        });
    }
    Ok(())
}

async fn create_topics(
    settings: &KafkaSettings,
    topics: &[(String, u32)],
) -> Result<(), BootstrapError> {
    let admin: AdminClient<DefaultClientContext> =
        settings.base_config().create().map_err(kafka)?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| {
            let topic = NewTopic::new(
                name,
                *partitions as i32,
                TopicReplication::Fixed(settings.replication_factor),
            );
            if *name == settings.plugins_topic() {
                // Keyed by digest and name: compaction keeps every module and the latest binding.
                topic
                    .set("cleanup.policy", "compact")
                    .set("max.message.bytes", "16781312")
            } else {
                topic
            }
        })
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new().operation_timeout(Some(TIMEOUT)))
        .await
        .map_err(kafka)?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            // Another node won the race: fine, the checks below verify what it created.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(kafka(format!("creating topic {topic} failed: {code}")));
            }
        }
    }
    Ok(())
}

/// Waits until metadata shows `topic`; returns its partition count.
async fn wait_for_topic(probe: &BaseConsumer, topic: &str) -> Result<u32, BootstrapError> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let metadata = probe.fetch_metadata(Some(topic), TIMEOUT).map_err(kafka)?;
        if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic)
            && t.error().is_none()
            && !t.partitions().is_empty()
        {
            return Ok(t.partitions().len() as u32);
        }
        if Instant::now() > deadline {
            return Err(kafka(format!("topic {topic} did not appear in metadata")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PartitionMessage {
    #[serde(rename = "NumPartitions")]
    num_partitions: u32,
}

/// The partition count pinned by the first record of the partitions topic, writing it first when
/// the topic is empty. Concurrent first starts may each write a record; the first one wins.
async fn pinned_partition_count(settings: &KafkaSettings) -> Result<u32, BootstrapError> {
    let topic = settings.partitions_topic();
    let reader: BaseConsumer = settings.reader_config().create().map_err(kafka)?;
    let (low, high) = reader.fetch_watermarks(&topic, 0, TIMEOUT).map_err(kafka)?;
    if high <= low {
        let producer: FutureProducer = settings.producer_config().create().map_err(kafka)?;
        let body = serde_json::to_vec(&PartitionMessage {
            num_partitions: settings.partitions,
        })
        .expect("serializes");
        producer
            .send(
                FutureRecord::<(), _>::to(&topic)
                    .partition(0)
                    .payload(&body),
                TIMEOUT,
            )
            .await
            .map_err(|(e, _)| kafka(format!("writing the partition count to {topic}: {e}")))?;
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topic, 0, Offset::Beginning)
        .map_err(kafka)?;
    reader.assign(&assignment).map_err(kafka)?;
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let payload = message.payload().unwrap_or_default();
                let pinned: PartitionMessage = serde_json::from_slice(payload).map_err(|e| {
                    kafka(format!(
                        "the first record of {topic} is not {{\"NumPartitions\":N}} ({e}): {}",
                        String::from_utf8_lossy(payload)
                    ))
                })?;
                return Ok(pinned.num_partitions);
            }
            Some(Err(e)) => return Err(kafka(format!("reading {topic}: {e}"))),
            None => {}
        }
    }
    Err(kafka(format!("no record could be read from {topic}")))
}
