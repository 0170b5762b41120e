//! Partition snapshots to S3 (`backup`): made from one store snapshot of each partition this
//! node serves, on a timer and on an operator's request; S3 trouble is logged and counted, never
//! in the way of apply or reads.

use super::{ErrorKind, Service, ServiceError};
use crate::backup::{BackupError, Manifest, Snapshots, format, upload};
use crate::engine::PartitionRuntime;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The snapshot store and what this node uploaded last, per partition.
pub struct SnapshotState {
    pub(super) store: Arc<Snapshots>,
    /// Partition → next offset of the newest snapshot (this node's upload, or the bucket's
    /// newest when this node has not uploaded one), and when it was made.
    last: Mutex<HashMap<u32, (u64, Instant)>>,
    /// Fingerprint of the plugin bindings last backed up (embedded log only).
    plugins_backed_up: Mutex<Option<String>>,
    /// Held by the snapshot pass under way: one at a time, so operators' requests (however
    /// many arrive) and the timer never snapshot the node twice over at once.
    pass: tokio::sync::Mutex<()>,
}

impl SnapshotState {
    pub fn new(store: Arc<Snapshots>) -> Self {
        SnapshotState {
            store,
            last: Mutex::new(HashMap::new()),
            plugins_backed_up: Mutex::new(None),
            pass: tokio::sync::Mutex::new(()),
        }
    }
}

fn unavailable(e: BackupError) -> ServiceError {
    ServiceError::new(ErrorKind::Unavailable, "snapshot_failed", e.to_string())
}

impl Service {
    fn snapshot_state(&self) -> Result<&SnapshotState, ServiceError> {
        self.snapshots.as_ref().ok_or_else(|| {
            ServiceError::bad_request(
                "snapshots_off",
                "snapshots are off on this node: set S3_BUCKET (and S3_ENDPOINT for an \
                 S3-compatible store)",
            )
        })
    }

    /// The newest snapshot of `partition` this node knows, for `/debug/partitions`.
    pub(super) fn last_snapshot(&self, partition: u32) -> Option<super::status::LastSnapshot> {
        let state = self.snapshots.as_ref()?;
        let last = state.last.lock().expect("snapshot lock");
        last.get(&partition)
            .map(|(offset, at)| super::status::LastSnapshot {
                offset: *offset,
                age_ms: at.elapsed().as_millis() as u64,
            })
    }

    /// Snapshots every partition this node serves now (`POST /admin/snapshots`).
    pub async fn snapshot_now(&self) -> Result<Vec<Manifest>, ServiceError> {
        let state = self.snapshot_state()?;
        let Ok(_pass) = state.pass.try_lock() else {
            return Err(ServiceError::new(
                ErrorKind::Unavailable,
                "snapshot_in_progress",
                "a snapshot pass is already running on this node; ask again when it is done",
            ));
        };
        self.back_up_plugins().await?;
        let mut manifests = Vec::new();
        for runtime in self.engine.partitions() {
            if !runtime.serving() {
                continue;
            }
            manifests.push(self.snapshot_partition(runtime).await?);
        }
        Ok(manifests)
    }

    /// Every snapshot the bucket holds for this namespace (`GET /admin/snapshots`).
    pub async fn list_snapshots(&self) -> Result<Vec<Manifest>, ServiceError> {
        self.snapshot_state()?
            .store
            .list(None)
            .await
            .map_err(unavailable)
    }

    /// The periodic pass: snapshots each served partition that applied at least
    /// SNAPSHOT_MIN_ENTRIES entries since its newest snapshot, or any entry at all once that
    /// snapshot is older than half of LOG_RETENTION (the log must always continue the newest
    /// snapshot, or a new replica cannot start from it). Failures are logged and counted; the
    /// next pass tries again.
    pub async fn snapshot_due(&self) {
        let Ok(state) = self.snapshot_state() else {
            return;
        };
        // An operator's pass is running: this interval's work is being done.
        let Ok(_pass) = state.pass.try_lock() else {
            return;
        };
        if let Err(e) = self.back_up_plugins().await {
            tracing::warn!(error = %e.message, "backing up plugins failed; retrying next interval");
        }
        let min = state.store.settings().min_entries.max(1);
        let stale_after = state.store.settings().log_retention.map(|r| r / 2);
        for runtime in self.engine.partitions() {
            if !runtime.serving() {
                continue;
            }
            let partition = runtime.id();
            let newest = self.newest_snapshot(state, partition).await;
            let last = newest.map_or(0, |(offset, _)| offset);
            let age = newest.map(|(_, at)| at.elapsed());
            if let Some(age) = age {
                self.metrics
                    .snapshot_age
                    .with_label_values(&[&partition.to_string()])
                    .set(age.as_secs() as i64);
            }
            let next = runtime.next_offset();
            // With LOG_RETENTION known, having no snapshot at all is as stale as it gets.
            let stale = match (stale_after, age) {
                (Some(limit), Some(age)) => age >= limit,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if next < last + min && !(stale && next > last) {
                continue;
            }
            if let Err(e) = self.snapshot_partition(runtime.clone()).await {
                if stale {
                    tracing::error!(
                        partition,
                        age = ?age.unwrap_or_default(),
                        log_retention = ?state.store.settings().log_retention.unwrap_or_default(),
                        error = %e,
                        "the newest snapshot of partition {partition} is older than half of \
                         LOG_RETENTION and a new one failed: once the log drops the entries after \
                         it, a new replica cannot start from S3"
                    );
                } else {
                    tracing::warn!(partition, error = %e, "snapshot failed; retrying next interval");
                }
            }
        }
    }

    /// On the embedded log, keeps the plugin bindings and their modules in the bucket (when
    /// they changed), so a disaster recovery brings them back with the partitions. The Kafka
    /// log's compacted plugins topic already keeps them.
    async fn back_up_plugins(&self) -> Result<(), ServiceError> {
        let state = self.snapshot_state()?;
        if self.log.plugin_feed().is_some() {
            return Ok(());
        }
        let plugins = crate::engine::plugins_to_back_up(&self.registry, &self.plugins);
        let fingerprint = plugins
            .iter()
            .map(|p| format!("{}={};", p.binding.name, p.binding.binding))
            .collect::<String>();
        if state
            .plugins_backed_up
            .lock()
            .expect("plugins lock")
            .as_ref()
            == Some(&fingerprint)
        {
            return Ok(());
        }
        state
            .store
            .upload_plugins(&plugins)
            .await
            .map_err(unavailable)?;
        tracing::info!(bindings = plugins.len(), "plugins backed up to S3");
        *state.plugins_backed_up.lock().expect("plugins lock") = Some(fingerprint);
        Ok(())
    }

    /// Tries again to serve partitions stopped by a gap in the log: a snapshot may fill it now
    /// (S3 came back, or another replica uploaded one). Runs off the async threads.
    pub async fn retry_unserved(&self) {
        let engine = self.engine.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || engine.retry_gaps()).await {
            tracing::warn!(error = %e, "retrying unserved partitions failed");
        }
    }

    /// The next offset and time of the newest snapshot of `partition`: this node's last upload,
    /// else the newest manifest in the bucket (looked up once, so a restarted node does not
    /// upload an unchanged partition again).
    async fn newest_snapshot(
        &self,
        state: &SnapshotState,
        partition: u32,
    ) -> Option<(u64, Instant)> {
        if let Some(known) = state.last.lock().expect("snapshot lock").get(&partition) {
            return Some(*known);
        }
        let manifests = state.store.list(Some(partition)).await.ok()?;
        let newest = manifests.iter().max_by_key(|m| m.next_offset)?;
        let age_ms = (super::now_ms() - newest.created_at_ms).max(0) as u64;
        let at = Instant::now()
            .checked_sub(std::time::Duration::from_millis(age_ms))
            .unwrap_or_else(Instant::now);
        let known = (newest.next_offset, at);
        state
            .last
            .lock()
            .expect("snapshot lock")
            .insert(partition, known);
        Some(known)
    }

    /// Snapshots one partition: encoded off the async threads from one store snapshot, uploaded
    /// (object, then manifest), then old snapshots beyond SNAPSHOT_KEEP removed.
    async fn snapshot_partition(
        &self,
        runtime: Arc<PartitionRuntime>,
    ) -> Result<Manifest, ServiceError> {
        let state = self.snapshot_state()?;
        let partition = runtime.id();
        let started = Instant::now();
        // One store snapshot fixes the offset (and so the object's key) before encoding starts;
        // the encoder streams from it on a blocking thread while the parts upload.
        let (next_offset, last_entry, records) = runtime
            .frozen()
            .map_err(|e| self.read_failed(partition, e))?;
        let header = state.store.header(partition, next_offset, last_entry);
        let (sink, parts) = upload::part_channel(state.store.settings().part_bytes);
        let encoding = {
            let header = header.clone();
            tokio::task::spawn_blocking(move || {
                let (sink, trailer) = format::encode_into(&header, records, sink)?;
                Ok::<_, format::EncodeError<crate::store::StoreError>>((trailer, sink.finish()?))
            })
        };
        let encoded = async {
            match encoding.await {
                Ok(Ok(done)) => Ok(done),
                Ok(Err(e)) => Err(BackupError::Invalid {
                    key: format!("partition {partition}"),
                    reason: e.to_string(),
                }),
                Err(e) => Err(BackupError::Invalid {
                    key: format!("partition {partition}"),
                    reason: format!("the encoder failed: {e}"),
                }),
            }
        };
        let uploaded = state.store.upload_parts(&header, parts, encoded).await;
        let manifest = match uploaded {
            Ok(manifest) => manifest,
            Err(e) => {
                self.metrics.snapshots.with_label_values(&["failed"]).inc();
                return Err(unavailable(e));
            }
        };
        self.metrics.snapshots.with_label_values(&["ok"]).inc();
        self.metrics
            .snapshot_duration
            .observe(started.elapsed().as_secs_f64());
        let label = partition.to_string();
        self.metrics
            .snapshot_offset
            .with_label_values(&[&label])
            .set(manifest.next_offset as i64);
        self.metrics
            .snapshot_bytes
            .with_label_values(&[&label])
            .set(manifest.object_bytes as i64);
        self.metrics
            .snapshot_age
            .with_label_values(&[&label])
            .set(0);
        state
            .last
            .lock()
            .expect("snapshot lock")
            .insert(partition, (manifest.next_offset, Instant::now()));
        if let Err(e) = state.store.retain(partition).await {
            tracing::warn!(partition, error = %e, "removing old snapshots failed");
        }
        tracing::info!(
            partition,
            next_offset = manifest.next_offset,
            records = manifest.records,
            bytes = manifest.object_bytes,
            "snapshot uploaded"
        );
        Ok(manifest)
    }
}
