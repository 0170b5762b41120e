//! The Kafka (or Redpanda) log: the multi-region write-ahead log.
//!
//! Writes go through an idempotent `acks=all` producer to the partition `partition_of(pk)`
//! names. Each node joins its replica group's consumer group with static membership; partition
//! ownership comes from the rebalance callback, which also starts every newly owned partition at
//! this node's own applied offset (from the store, never the group's committed offset: another
//! replica's progress says nothing about this node's store) and splits it into its own queue, so
//! each partition's applier reads it directly.

mod bootstrap;
mod plugins;
mod positions;
mod quiet;
mod settings;

pub use bootstrap::{BootstrapError, bootstrap};
pub use plugins::KafkaPluginFeed;
pub use settings::{KafkaSettings, SaslMechanism};

use super::{
    Append, AppendFuture, Assignment, LogError, LogRecord, MutationLog, Ownership, PartitionReader,
};
use positions::{ReaderPosition, ReaderPositions};
use quiet::QuietContext;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where each partition this node gains should start, as its store says.
pub type StartOffsets = Arc<dyn Fn(u32) -> StartAt + Send + Sync>;

/// What a partition's store says of where its reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartAt {
    /// The offset it applies next.
    pub next: u64,
    /// The offset of the last entry it applied, when known: the reader starts there while the
    /// log holds it, so the engine can check it is the entry applied (`model/lineage.rs`).
    pub last_applied: Option<u64>,
}

/// State shared by the log and its consumer's rebalance callback.
struct Shared {
    topic: String,
    /// The namespace's partition count (PARTITIONS).
    partitions: u32,
    start_offsets: StartOffsets,
    consumer: OnceLock<Weak<BaseConsumer<GroupContext>>>,
    /// Queues of newly assigned partitions, waiting for the engine to open a reader.
    queues: Mutex<HashMap<u32, PartitionQueue<GroupContext>>>,
    /// Where each open reader is, kept current by the poller thread.
    positions: ReaderPositions,
    ownership: watch::Sender<Ownership>,
}

/// The consumer's context: routes librdkafka's logs to tracing (repeats once in a while, see
/// `QuietContext`) and handles rebalances.
pub struct GroupContext {
    shared: Arc<Shared>,
    quiet: QuietContext,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.quiet.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.quiet.error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let shared = &self.shared;
        let mut partitions: Vec<i32> = tpl
            .elements_for_topic(&shared.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        // Partitions added to the topic after the namespace was created would route keys
        // differently from every node's `partition_of`: never apply or serve them.
        let (known, unknown): (Vec<i32>, Vec<i32>) = partitions
            .iter()
            .partition(|&&p| p >= 0 && (p as u32) < shared.partitions);
        if !unknown.is_empty() {
            tracing::error!(
                ?unknown,
                configured = shared.partitions,
                "the mutations topic has partitions beyond PARTITIONS (were partitions added?); they are ignored"
            );
        }
        partitions = known;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Only the known partitions, each at this node's own next offset (or its last
                // entry applied, while the log holds it).
                let starts: Vec<(i32, StartAt)> = partitions
                    .iter()
                    .map(|&p| (p, (shared.start_offsets)(p as u32)))
                    .collect();
                let held = first_offsets(consumer, &shared.topic, &starts);
                let mut assignment = TopicPartitionList::new();
                for &(p, at) in &starts {
                    let next = match at.last_applied {
                        Some(last) if held.get(&p).is_some_and(|&first| first <= last) => last,
                        _ => at.next,
                    };
                    // An empty store starts at the log's first entry: the partition may be
                    // restored from a snapshot before it is read, and the reader then skips
                    // what the snapshot holds. (Offset 0 itself may be gone, which the broker
                    // would answer with a reset to the end.)
                    let start = match next {
                        0 => Offset::Beginning,
                        next => Offset::Offset(next as i64),
                    };
                    if let Err(e) = assignment.add_partition_offset(&shared.topic, p, start) {
                        tracing::error!(partition = p, error = %e, "cannot set the start offset");
                    }
                }
                // Split before assigning, so no message of these partitions reaches the main queue.
                if let Some(consumer_arc) = shared.consumer.get().and_then(Weak::upgrade) {
                    let mut queues = shared.queues.lock().expect("queues lock");
                    for &p in &partitions {
                        if let Some(queue) = consumer_arc.split_partition_queue(&shared.topic, p) {
                            queues.insert(p as u32, queue);
                        }
                    }
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(&assignment)
                } else {
                    consumer.assign(&assignment)
                };
                if let Err(e) = assigned {
                    tracing::error!(error = %e, "assigning partitions failed");
                    return;
                }
                tracing::info!(?partitions, "partitions assigned");
                // A completed rebalance (with the cooperative protocol, perhaps only its first
                // round: a partition taken from this node may reach its next owner in the next).
                shared.ownership.send_modify(|ownership| {
                    let mut next = Assignment::clone(ownership);
                    for &p in &partitions {
                        next.owned.insert(p as u32);
                        next.unsettled.remove(&(p as u32));
                    }
                    next.rebalances += 1;
                    *ownership = Arc::new(next);
                });
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Not applied here any more, and nobody else has them yet: this node's last
                // state still answers their reads until another member serves them.
                shared.ownership.send_modify(|ownership| {
                    let mut next = Assignment::clone(ownership);
                    for &p in &partitions {
                        next.owned.remove(&(p as u32));
                        next.unsettled.insert(p as u32);
                    }
                    *ownership = Arc::new(next);
                });
                {
                    let mut queues = shared.queues.lock().expect("queues lock");
                    for p in &partitions {
                        queues.remove(&(*p as u32));
                    }
                }
                let mut revocation = TopicPartitionList::new();
                for &p in &partitions {
                    revocation.add_partition(&shared.topic, p);
                }
                let revoked = if cooperative {
                    consumer.incremental_unassign(&revocation)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = revoked {
                    tracing::error!(error = %e, "unassigning partitions failed");
                }
                tracing::info!(?partitions, "partitions revoked");
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::error!(error = %code, "rebalance failed");
            }
        }
    }
}

/// The Kafka log. See the module docs.
pub struct KafkaLog {
    settings: KafkaSettings,
    producer: FutureProducer<QuietContext>,
    plugins: KafkaPluginFeed,
    consumer: Arc<BaseConsumer<GroupContext>>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    poller: Mutex<Option<JoinHandle<()>>>,
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// What a failed delivery means for the write. The broker's own size limit (the topic's
/// `max.message.bytes`, when below MAX_ENTRY_BYTES) is the write's fault — a 413, never a
/// retryable outage.
fn delivery_error(e: KafkaError, size: usize) -> LogError {
    match e {
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) => {
            LogError::BrokerTooLarge { size }
        }
        e => unavailable(format!("Kafka did not acknowledge the write: {e}")),
    }
}

impl KafkaLog {
    /// Bootstraps the namespace, then joins the replica group. Partitions arrive through
    /// [`MutationLog::ownership`] as the group assigns them.
    pub async fn connect(
        settings: KafkaSettings,
        start_offsets: StartOffsets,
    ) -> Result<Self, BootstrapError> {
        bootstrap(&settings).await?;
        let producer: FutureProducer<QuietContext> = settings
            .producer_config()
            .create_with_context(QuietContext::new())
            .map_err(|e| BootstrapError::Kafka(e.to_string()))?;
        let (ownership, _) = watch::channel(Arc::new(Assignment::default()));
        let shared = Arc::new(Shared {
            topic: settings.mutations_topic(),
            partitions: settings.partitions,
            start_offsets,
            consumer: OnceLock::new(),
            queues: Mutex::new(HashMap::new()),
            positions: ReaderPositions::default(),
            ownership,
        });
        let consumer: Arc<BaseConsumer<GroupContext>> = Arc::new(
            settings
                .consumer_config()
                .create_with_context(GroupContext {
                    shared: shared.clone(),
                    quiet: QuietContext::new(),
                })
                .map_err(|e| BootstrapError::Kafka(e.to_string()))?,
        );
        let _ = shared.consumer.set(Arc::downgrade(&consumer));
        consumer
            .subscribe(&[&settings.mutations_topic()])
            .map_err(|e| BootstrapError::Kafka(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        // Polling the main queue serves the group protocol and rebalance callbacks; messages
        // arrive on the per-partition queues instead. The same thread keeps the readers'
        // positions current (asking waits on librdkafka's group thread; appliers never do).
        let poller = {
            let (consumer, stop, shared) = (consumer.clone(), stop.clone(), shared.clone());
            std::thread::Builder::new()
                .name("kafka-group".into())
                .spawn(move || {
                    let repeats = quiet::Repeats::new(quiet::EVERY);
                    let mut refreshed = Instant::now();
                    while !stop.load(Ordering::SeqCst) {
                        if refreshed.elapsed() >= positions::REFRESH_EVERY {
                            shared.positions.refresh(&consumer, &shared.topic);
                            refreshed = Instant::now();
                        }
                        match consumer.poll(Duration::from_millis(100)) {
                            None => {}
                            Some(Ok(m)) => tracing::warn!(
                                partition = m.partition(),
                                offset = m.offset(),
                                "message on the main queue (partition not split); it will be re-read"
                            ),
                            Some(Err(e)) => {
                                if let Some(left_out) = repeats.admit(&quiet::error_kind(&e)) {
                                    tracing::warn!(error = %e, left_out, "consumer error");
                                }
                            }
                        }
                    }
                })
                .map_err(|e| BootstrapError::Kafka(e.to_string()))?
        };
        tracing::info!(
            group = settings.group_id(),
            instance = settings.instance_id,
            topic = settings.mutations_topic(),
            "joined the replica group"
        );
        let plugins = KafkaPluginFeed::new(settings.clone())
            .map_err(|e| BootstrapError::Kafka(e.to_string()))?;
        Ok(KafkaLog {
            plugins,
            settings,
            producer,
            consumer,
            shared,
            stop,
            poller: Mutex::new(Some(poller)),
        })
    }
}

impl KafkaLog {
    /// Takes `partition`, owned here, out of the consumer's assignment and assigns it again at
    /// offset `from`, with a new queue of its own.
    fn assign_again(
        &self,
        partition: u32,
        from: u64,
    ) -> Result<PartitionQueue<GroupContext>, LogError> {
        let topic = &self.shared.topic;
        if !matches!(
            self.consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        ) {
            return Err(unavailable(format!(
                "partition {partition} is not assigned to this node (a reader stopped at an \
                 error is read again only after the next rebalance with an eager assignor)"
            )));
        }
        let failed = |e: KafkaError| {
            unavailable(format!(
                "assigning partition {partition} again at offset {from}: {e}"
            ))
        };
        let mut taken = TopicPartitionList::new();
        taken.add_partition(topic, partition as i32);
        self.consumer.incremental_unassign(&taken).map_err(failed)?;
        // Split before assigning, so no message of it reaches the main queue.
        let queue = self
            .consumer
            .split_partition_queue(topic, partition as i32)
            .ok_or_else(|| unavailable(format!("no queue for partition {partition}")))?;
        let mut given = TopicPartitionList::new();
        given
            .add_partition_offset(topic, partition as i32, Offset::Offset(from as i64))
            .map_err(failed)?;
        self.consumer.incremental_assign(&given).map_err(failed)?;
        tracing::info!(
            partition,
            offset = from,
            "partition assigned again to read it from a new offset"
        );
        Ok(queue)
    }
}

impl MutationLog for KafkaLog {
    fn partition_count(&self) -> u32 {
        self.settings.partitions
    }

    fn append(&self, partition: u32, entries: Vec<Append>) -> AppendFuture {
        let topic = self.shared.topic.clone();
        let producer = self.producer.clone();
        let limit = self.settings.max_entry_bytes;
        Box::pin(async move {
            if let Some(size) = entries.iter().map(|e| e.payload.len()).find(|&l| l > limit) {
                return Err(LogError::TooLarge { size, limit });
            }
            // Enqueue all, in order (the idempotent producer keeps a partition's order), then
            // wait for every acknowledgement.
            let mut deliveries = Vec::with_capacity(entries.len());
            for entry in &entries {
                let record = FutureRecord::to(&topic)
                    .partition(partition as i32)
                    .key(&entry.key)
                    .payload(&entry.payload);
                let delivery = producer
                    .send_result(record)
                    .map_err(|(e, _)| unavailable(format!("cannot queue the write: {e}")))?;
                deliveries.push(delivery);
            }
            let mut offsets = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                match delivery.await {
                    Ok(Ok(delivered)) => offsets.push(delivered.offset as u64),
                    Ok(Err((e, _))) => {
                        let size = entries.iter().map(|e| e.payload.len()).max().unwrap_or(0);
                        return Err(delivery_error(e, size));
                    }
                    Err(_) => return Err(LogError::Closed),
                }
            }
            Ok(offsets)
        })
    }

    fn ownership(&self) -> watch::Receiver<Ownership> {
        self.shared.ownership.subscribe()
    }

    fn reader(&self, partition: u32, from: u64) -> Result<Box<dyn PartitionReader>, LogError> {
        let topic = &self.shared.topic;
        // No silent gaps: if retention removed what this node needs next, say so.
        let watermarks =
            self.consumer
                .fetch_watermarks(topic, partition as i32, Duration::from_secs(5));
        if let Ok((low, _)) = watermarks
            && from < low as u64
        {
            return Err(LogError::Truncated {
                partition,
                requested: from,
                start: low as u64,
            });
        }
        let queue = self
            .shared
            .queues
            .lock()
            .expect("queues lock")
            .remove(&partition);
        let queue = match queue {
            Some(queue) => queue,
            // Its last reader stopped at an error (a gap found while reading): librdkafka stops
            // fetching there and refuses to move, so it is assigned again where asked.
            None if self.shared.ownership.borrow().contains(&partition) => {
                self.assign_again(partition, from)?
            }
            None => {
                return Err(unavailable(format!(
                    "partition {partition} is not assigned to this node"
                )));
            }
        };
        Ok(Box::new(KafkaReader {
            queue,
            partition,
            // A negative watermark is librdkafka's "not known", not an empty partition.
            end_at_open: watermarks
                .ok()
                .and_then(|(_, high)| u64::try_from(high).ok()),
            next: from,
            pending: None,
            consumer: self.consumer.clone(),
            topic: topic.clone(),
            position: self.shared.positions.open(partition),
            shared: self.shared.clone(),
        }))
    }

    fn bounds(&self, partition: u32) -> Result<(u64, u64), LogError> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.shared.topic, partition as i32, Duration::from_secs(2))
            .map_err(unavailable)?;
        Ok((low.max(0) as u64, high.max(0) as u64))
    }

    fn release(&self, partition: u32, offset: u64) {
        // Committing is only for operators' lag tools: the start offset always comes from the
        // store. Partitions not assigned here are skipped.
        if !self.shared.ownership.borrow().contains(&partition) || offset == 0 {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(
                &self.shared.topic,
                partition as i32,
                Offset::Offset(offset as i64),
            )
            .is_ok()
        {
            let _ = self.consumer.commit(&tpl, CommitMode::Async);
        }
    }

    fn plugin_feed(&self) -> Option<&dyn super::PluginFeed> {
        Some(&self.plugins)
    }

    fn shutdown(&self) {
        self.plugins.shutdown();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(poller) = self.poller.lock().expect("poller lock").take() {
            let _ = poller.join();
        }
        let _ = rdkafka::producer::Producer::flush(&self.producer, Duration::from_secs(5));
    }
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The first offset the log holds of each partition in `starts` whose store knows its last
/// entry applied, in one request (bounded); none when the broker does not answer (their
/// readers then start at the next offset, unchecked).
fn first_offsets(
    consumer: &BaseConsumer<GroupContext>,
    topic: &str,
    starts: &[(i32, StartAt)],
) -> HashMap<i32, u64> {
    let mut asked = TopicPartitionList::new();
    for &(p, at) in starts {
        if at.last_applied.is_some_and(|last| last < at.next) {
            // ListOffsets' "earliest" timestamp: the partition's first offset.
            let _ = asked.add_partition_offset(topic, p, Offset::Beginning);
        }
    }
    if asked.count() == 0 {
        return HashMap::new();
    }
    match consumer.offsets_for_times(asked, Duration::from_secs(5)) {
        Ok(answered) => answered
            .elements_for_topic(topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(first) if first >= 0 => Some((e.partition(), first as u64)),
                _ => None,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "the log's first offsets are unknown; partitions start at their next offset, their last entry applied unchecked");
            HashMap::new()
        }
    }
}

/// Reads one partition's queue.
struct KafkaReader {
    queue: PartitionQueue<GroupContext>,
    partition: u32,
    /// The high watermark when the reader opened (unknown when the broker did not answer).
    end_at_open: Option<u64>,
    next: u64,
    /// An error met after some records were read: those go out first, the error on the next call.
    pending: Option<LogError>,
    consumer: Arc<BaseConsumer<GroupContext>>,
    topic: String,
    /// How far it got, delivered or not, as the poller thread last asked.
    position: Arc<ReaderPosition>,
    shared: Arc<Shared>,
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        self.shared.positions.close(self.partition, &self.position);
    }
}

impl KafkaReader {
    fn error(&self, e: KafkaError) -> LogError {
        let out_of_range = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
        );
        if out_of_range {
            let start = self
                .consumer
                .fetch_watermarks(&self.topic, self.partition as i32, Duration::from_secs(5))
                .map(|(low, _)| low.max(0) as u64)
                .unwrap_or(self.next + 1);
            return LogError::Truncated {
                partition: self.partition,
                requested: self.next,
                start,
            };
        }
        unavailable(format!("reading partition {}: {e}", self.partition))
    }
}

impl PartitionReader for KafkaReader {
    fn set_waker(&mut self, waker: crate::log::Waker) {
        // librdkafka calls it when the partition's queue goes from empty to not empty: a read
        // that leaves messages behind must be followed by another without waiting for it.
        self.position.set_waker(waker.clone());
        self.queue.set_nonempty_callback(move || waker());
    }

    fn end_at_open(&self) -> Option<u64> {
        self.end_at_open
    }

    fn position(&self) -> Option<u64> {
        // librdkafka moves the application's position past a transaction marker when a poll
        // consumes it without returning it (and past an aborted transaction's records); the
        // poller thread asks it and wakes the partition when it moves (`positions.rs`).
        self.position.get()
    }

    fn read(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let mut records = Vec::new();
        let mut timeout = wait;
        while records.len() < max {
            let Some(result) = self.queue.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            let message = match result {
                Ok(message) => message,
                Err(e) if records.is_empty() => return Err(self.error(e)),
                Err(e) => {
                    self.pending = Some(self.error(e));
                    break;
                }
            };
            let offset = message.offset() as u64;
            // Entries below `next` are already applied here (a re-delivery after a rebalance).
            if offset < self.next {
                continue;
            }
            records.push(LogRecord {
                offset,
                payload: message.payload().unwrap_or_default().to_vec(),
            });
            self.next = offset + 1;
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_size_refusal_is_the_writes_fault_and_the_rest_are_outages() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(
            delivery_error(too_large, 900),
            LogError::BrokerTooLarge { size: 900 }
        ));
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(matches!(
            delivery_error(timed_out, 900),
            LogError::Unavailable(_)
        ));
    }
}
