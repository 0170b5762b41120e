//! Partition snapshots to S3 (`backup`): made from one store snapshot of each partition this
//! node serves, on a timer and on an operator's request; S3 trouble is logged and counted, never
//! in the way of apply or reads.

use super::{ErrorKind, Service, ServiceError};
use crate::backup::{BackupError, Manifest, Snapshots, format};
use crate::engine::PartitionRuntime;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The snapshot store and what this node uploaded last, per partition.
pub struct SnapshotState {
    pub(super) store: Arc<Snapshots>,
    /// Partition → next offset of the newest snapshot this node uploaded, and when.
    last: Mutex<HashMap<u32, (u64, Instant)>>,
}

impl SnapshotState {
    pub fn new(store: Arc<Snapshots>) -> Self {
        SnapshotState {
            store,
            last: Mutex::new(HashMap::new()),
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

    /// The newest snapshot this node uploaded of `partition`, for `/debug/partitions`.
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
        self.snapshot_state()?;
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
    /// SNAPSHOT_MIN_ENTRIES entries since this node's last snapshot of it. Failures are logged
    /// and counted; the next pass tries again.
    pub async fn snapshot_due(&self) {
        let Ok(state) = self.snapshot_state() else {
            return;
        };
        let min = state.store.settings().min_entries.max(1);
        for runtime in self.engine.partitions() {
            let last = state
                .last
                .lock()
                .expect("snapshot lock")
                .get(&runtime.id())
                .map_or(0, |(offset, _)| *offset);
            if !runtime.serving() || runtime.next_offset() < last + min {
                continue;
            }
            if let Err(e) = self.snapshot_partition(runtime.clone()).await {
                tracing::warn!(partition = runtime.id(), error = %e, "snapshot failed; retrying next interval");
            }
        }
    }

    /// Snapshots one partition: encoded off the async threads from one store snapshot, uploaded
    /// (object, then manifest), then old snapshots beyond SNAPSHOT_KEEP removed.
    async fn snapshot_partition(
        &self,
        runtime: Arc<PartitionRuntime>,
    ) -> Result<Manifest, ServiceError> {
        let state = self.snapshot_state()?;
        let store = state.store.clone();
        let partition = runtime.id();
        let encoded = tokio::task::spawn_blocking(move || {
            let (next_offset, records) = runtime.frozen()?;
            let header = store.header(partition, next_offset);
            format::encode(&header, records).map(|(bytes, trailer)| (header, bytes, trailer))
        })
        .await
        .map_err(|e| ServiceError::internal(format!("snapshot task failed: {e}")))?
        .map_err(|e| self.read_failed(partition, e))?;
        let (header, bytes, trailer) = encoded;
        let uploaded = state.store.upload(&header, bytes, &trailer).await;
        let manifest = match uploaded {
            Ok(manifest) => manifest,
            Err(e) => {
                self.metrics.snapshots.with_label_values(&["failed"]).inc();
                return Err(unavailable(e));
            }
        };
        self.metrics.snapshots.with_label_values(&["ok"]).inc();
        self.metrics
            .snapshot_offset
            .with_label_values(&[&partition.to_string()])
            .set(manifest.next_offset as i64);
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
