//! Following ownership: opening the partitions the log assigns to this node (from the store,
//! or as a visible gap when the log no longer covers them) and stopping the ones it takes away.

use super::new_disk::NotRestored;
use super::*;
use crate::log::{LogError, Ownership};
use crate::model::AppliedEntry;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Longest a partition's open waits for S3 to list its snapshots.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

impl Engine {
    /// Opens newly owned partitions and stops those no longer owned.
    pub(super) fn reconcile(&self, owned: &Ownership) {
        // Shutdown waits for this: an open must not write the store after its final flush.
        let _reconciling = self.inner.reconciling.lock().expect("reconciling lock");
        let current: Vec<u32> = self.inner.partitions.load().keys().copied().collect();
        for id in current.iter().filter(|id| !owned.contains(id)) {
            let on_standby = owned.unsettled.contains(id);
            if on_standby && let Some(runtime) = self.partition(*id) {
                // On standby before it leaves the owned ones: no read finds it in neither.
                self.put_on_standby(runtime, owned.rebalances);
            }
            let removed = self.change_partitions(|map| map.remove(id));
            if let Some(runtime) = removed {
                runtime.stop_applier(&self.inner.pool, self.inner.config.stop_patience);
                self.inner.metrics.forget_partition(*id);
                if on_standby {
                    runtime.set_health(Health::Released);
                    tracing::info!(
                        partition = id,
                        "partition released; its last state answers reads until the log settles its next owner"
                    );
                } else {
                    tracing::info!(partition = id, "partition released");
                    self.forget_released(&runtime);
                }
            }
        }
        for runtime in self.settle_standby(owned) {
            tracing::info!(
                partition = runtime.id(),
                "the log settled the partition's next owner elsewhere; its reads are no longer answered here"
            );
            self.forget_released(&runtime);
        }
        self.inner
            .unopened
            .write()
            .expect("unopened lock")
            .retain(|id, _| owned.contains(id));
        // No lock is held while a partition opens: a restore may wait on S3 for a long time,
        // and /ready, reads and gossip read these maps from async threads meanwhile (holding
        // one here once froze every runtime worker, and with them the S3 request itself).
        let gained: Vec<u32> = owned
            .owned
            .iter()
            .copied()
            .filter(|id| !current.contains(id))
            .collect();
        self.mark_opening(&gained);
        for id in gained {
            if self.stopping() {
                self.inner.opening.send_modify(BTreeSet::clear);
                break;
            }
            match self.open_partition(id) {
                Ok(runtime) => {
                    self.inner
                        .unopened
                        .write()
                        .expect("unopened lock")
                        .remove(&id);
                    self.change_partitions(|map| map.insert(id, runtime));
                }
                Err(reason) => {
                    self.inner
                        .unopened
                        .write()
                        .expect("unopened lock")
                        .insert(id, reason);
                }
            }
            // Answered from the open partition from now on (or said why it cannot be).
            self.drop_standby(id);
            // Off the list once its outcome is in place, so it is never seen in neither.
            self.inner
                .opening
                .send_if_modified(|opening| opening.remove(&id));
        }
        self.inner
            .metrics
            .partitions
            .set(self.inner.partitions.load().len() as i64);
    }

    /// Done with a partition this node no longer answers for: its data is deleted with
    /// `DROP_RELEASED_PARTITIONS`, else kept for when it comes back.
    pub(super) fn forget_released(&self, runtime: &PartitionRuntime) {
        if !self.inner.config.drop_released {
            // Its changes, for the watches resuming once it is back here.
            self.inner
                .released_history
                .lock()
                .expect("released history lock")
                .insert(runtime.id(), runtime.feed.saved());
            return;
        }
        let id = runtime.id();
        match runtime.store.destroy() {
            Ok(()) => tracing::info!(partition = id, "released partition's data deleted"),
            Err(e) => {
                tracing::error!(partition = id, error = %e, "deleting a released partition's data failed")
            }
        }
    }

    /// Lists `ids` as opening (before their opens start, so /ready and reads say so at once).
    pub(super) fn mark_opening<'a>(&self, ids: impl IntoIterator<Item = &'a u32>) {
        let ids: Vec<u32> = ids.into_iter().copied().collect();
        if !ids.is_empty() {
            self.inner
                .opening
                .send_modify(|opening| opening.extend(ids));
        }
    }

    pub(super) fn open_partition(&self, id: u32) -> Result<Arc<PartitionRuntime>, String> {
        let metrics = &self.inner.metrics;
        let label = id.to_string();
        let failed = |reason: String| {
            tracing::error!(partition = id, %reason, "partition cannot be opened");
            metrics
                .partition_healthy
                .with_label_values(&[&label])
                .set(0);
            reason
        };
        let store = match self.inner.store.partition(id) {
            Ok(store) => store,
            Err(e) => return Err(failed(format!("opening the partition's store failed: {e}"))),
        };
        let next = match store.next_offset() {
            Ok(next) => next,
            Err(e) => {
                let reason = failed(format!("reading the applied offset failed: {e}"));
                return Ok(Arc::new(PartitionRuntime::failed(store, 0, reason)));
            }
        };
        let (next, no_restore) = match &self.inner.config.snapshots {
            Some(snapshots) => match self.restore_if_newer(&store, snapshots, next) {
                Ok(next) => (next, None),
                // A restore that failed once it began emptied the partition: read again where
                // it starts.
                Err(not) => match store.next_offset() {
                    Ok(next) if not.missed && self.new_disk(id, next) => {
                        return Ok(Arc::new(self.unrestored(store, not.why)));
                    }
                    Ok(next) => (next, Some(not.why)),
                    Err(e) => {
                        let reason = failed(format!("reading the applied offset failed: {e}"));
                        return Ok(Arc::new(PartitionRuntime::failed(store, 0, reason)));
                    }
                },
            },
            None => (next, None),
        };
        metrics
            .applied_offset
            .with_label_values(&[&label])
            .set(next as i64 - 1);
        if let Err(reason) = self.log_behind_store(id, next) {
            let reason = failed(reason);
            return Ok(Arc::new(PartitionRuntime::failed(store, next, reason)));
        }
        let (reader, lineage) = match self.lineage_reader(&store, next) {
            Ok(opened) => opened,
            Err(LogError::Truncated { start, .. }) => {
                return Ok(Arc::new(self.gap(store, next, start, no_restore)));
            }
            Err(e) => {
                let reason = failed(format!("opening the log at offset {next} failed: {e}"));
                return Ok(Arc::new(PartitionRuntime::failed(store, next, reason)));
            }
        };
        let index = match ReadIndex::load(&store, self.inner.config.read_index_max_bytes) {
            Ok(index) => index,
            Err(e) => {
                let reason = failed(format!("loading the read index failed: {e}"));
                return Ok(Arc::new(PartitionRuntime::failed(store, next, reason)));
            }
        };
        self.inner
            .metrics
            .read_index_bytes
            .with_label_values(&[&id.to_string()])
            .set(index.bytes() as i64);
        // The history of its standby copy (or of the partition released here before), when
        // the log gives the partition back where it took it (a broker outage revokes every
        // partition; without this, every watch resuming after the outage got 410 and read
        // everything again); else the history saved when the node last stopped, if it ends
        // where this partition is.
        let released = self
            .inner
            .released_history
            .lock()
            .expect("released history lock")
            .remove(&id);
        let saved = self
            .standby(id)
            .map(|standby| standby.feed.saved())
            .or(released)
            .filter(|history| history.next == next)
            .or_else(|| {
                self.inner
                    .config
                    .watch_history_dir
                    .as_deref()
                    .and_then(|dir| super::feed_file::take(dir, id, next))
            });
        let runtime = Arc::new(PartitionRuntime::new(
            store,
            next,
            Health::Serving,
            index,
            (
                self.inner.config.watch_history_bytes,
                self.inner.config.watch_lag_batches,
            ),
            saved,
        ));
        metrics
            .partition_healthy
            .with_label_values(&[&label])
            .set(1);
        // A history taken back from the last stop holds bytes before any batch is applied.
        metrics
            .watch_history_bytes
            .with_label_values(&[&label])
            .set(runtime.feed.bytes() as i64);
        // The node began to stop while this partition opened (a restore can take minutes): its
        // appliers are gone and its store flushed, so this one must not start.
        if self.stopping() {
            return Err("the node is stopping".into());
        }
        // What the log holds beyond the store (a crash lost the store's last commits, the
        // partition moved here, or a restore was older than the log): reads wait for it, so
        // this node never answers older state than it, or the owner before it, answered.
        // The reader's own look at the end can fail (a consumer that just joined, a broker
        // slow to answer): asked once more (bounded, 2 s on Kafka; partitions open one after
        // another, so retrying longer would hold up every open in a broker outage).
        let end = reader
            .end_at_open()
            .or_else(|| self.inner.log.bounds(id).ok().map(|(_, end)| end));
        let catch_up = match end {
            Some(end) if end > next => {
                runtime.catch_up_to(end);
                Some(end)
            }
            Some(_) => None,
            None => {
                tracing::warn!(
                    partition = id,
                    "the log's end is unknown; reads do not wait for the partition to catch up"
                );
                None
            }
        };
        let slot = self.inner.pool.add(runtime.clone(), reader, lineage);
        *runtime.applier.lock().expect("applier lock") = Some(slot);
        match catch_up {
            Some(end) => tracing::info!(
                partition = id,
                next_offset = next,
                catch_up_to = end,
                "partition opened; its reads wait until it applies what the log holds"
            ),
            None => tracing::info!(partition = id, next_offset = next, "partition opened"),
        }
        Ok(runtime)
    }

    /// A reader of partition `store` from `next`, or from the last entry its state applied
    /// when the log still holds that offset, with that entry: the applier then checks that the
    /// log holds the same entry there before it applies anything after it (`model/lineage.rs`).
    /// An entry the log no longer holds (retention), or a state whose last entry is not known
    /// (restored from a snapshot that did not say it), is not checked.
    #[allow(clippy::type_complexity)]
    fn lineage_reader(
        &self,
        store: &crate::store::PartitionStore,
        next: u64,
    ) -> Result<(Box<dyn crate::log::PartitionReader>, Option<AppliedEntry>), LogError> {
        let id = store.id();
        let last = match store.last_entry() {
            Ok(last) => last.filter(|last| last.offset < next),
            Err(e) => {
                tracing::warn!(partition = id, error = %e, "the last applied entry is unreadable; the log is not checked against it");
                None
            }
        };
        if let Some(last) = last {
            match self.inner.log.reader(id, last.offset) {
                Ok(reader) => return Ok((reader, Some(last))),
                // Retention removed it: nothing to compare with.
                Err(LogError::Truncated { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((self.inner.log.reader(id, next)?, None))
    }

    /// Says (an error in the log, `firescroll_partition_healthy` 0) that partition `id` is not
    /// served, and why.
    pub(super) fn report_not_serving(&self, id: u32, health: &Health) {
        tracing::error!(
            partition = id,
            "NOT SERVING partition {id}: {}",
            health.reason().unwrap_or_default()
        );
        self.inner
            .metrics
            .partition_healthy
            .with_label_values(&[&id.to_string()])
            .set(0);
    }

    pub(super) fn gap(
        &self,
        store: crate::store::PartitionStore,
        next: u64,
        start: u64,
        snapshots: Option<String>,
    ) -> PartitionRuntime {
        let id = store.id();
        let remedy = match &snapshots {
            Some(why) => format!("no S3 snapshot fills the gap ({why}); retrying"),
            None if self.inner.config.snapshots.is_some() => {
                "retrying a restore from S3 snapshots".to_string()
            }
            None => "turn on S3 snapshots (S3_BUCKET) or rebuild this replica".to_string(),
        };
        tracing::error!(
            partition = id,
            next_offset = next,
            log_start = start,
            "NOT SERVING partition {id}: {}; {remedy}",
            super::partition::gap_words(next, start)
        );
        self.inner
            .metrics
            .partition_healthy
            .with_label_values(&[&id.to_string()])
            .set(0);
        PartitionRuntime::new(
            store,
            next,
            Health::Gap {
                next_offset: next,
                log_start: start,
                snapshots,
            },
            ReadIndex::off(),
            (0, 1),
            None,
        )
    }

    /// Restores `store` from the newest verified snapshot that is newer than its state
    /// (`next`) and that the log continues (its offset is within the log's bounds); returns
    /// the offset to apply next, or why no snapshot was restored (for a gap's reason). A
    /// snapshot that does not verify is skipped with a warning; S3 trouble leaves the partition
    /// to the log.
    fn restore_if_newer(
        &self,
        store: &crate::store::PartitionStore,
        snapshots: &crate::backup::Snapshots,
        next: u64,
    ) -> Result<u64, NotRestored> {
        let id = store.id();
        let (start, end) = self
            .inner
            .log
            .bounds(id)
            .map_err(|e| NotRestored::missed(format!("the log's bounds are unknown: {e}")))?;
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Err(NotRestored::missed("no async runtime to reach S3 from"));
        };
        // Opening partitions one after another holds up ownership changes: a slow S3 must not.
        let listed = self
            .until_stopped(
                &handle,
                tokio::time::timeout(LIST_TIMEOUT, snapshots.list(Some(id))),
            )
            .map_err(NotRestored::missed)?;
        let manifests = match listed {
            Ok(Ok(manifests)) => manifests,
            Ok(Err(e)) => {
                tracing::warn!(partition = id, error = %e, "cannot list snapshots; following the log");
                return Err(NotRestored::missed(format!("S3 unreachable: {e}")));
            }
            Err(_) => {
                tracing::warn!(
                    partition = id,
                    "listing snapshots timed out; following the log"
                );
                return Err(NotRestored::missed(format!(
                    "S3 unreachable: listing snapshots took over {} s",
                    LIST_TIMEOUT.as_secs()
                )));
            }
        };
        // Whether a snapshot this partition could have restored was there and was not.
        let mut missed = false;
        let mut why = match manifests.last() {
            None => "the bucket holds no snapshot of this partition".to_string(),
            Some(newest) => format!(
                "no snapshot continues the log (the newest ends before offset {}, the log holds {start}..{end})",
                newest.next_offset
            ),
        };
        for manifest in manifests.iter().rev() {
            // An empty log (a new disk on the embedded log) may continue after the snapshot;
            // otherwise the log must hold the entries that follow it.
            let resumable = start == end && next == 0 && manifest.next_offset > end;
            // Another namespace's or partition count's snapshot would put keys in the wrong
            // partitions.
            if manifest.partitions != self.partition_count()
                || manifest.format != crate::backup::FORMAT_VERSION
            {
                tracing::warn!(partition = id, snapshot = %manifest.object_key, "snapshot of another layout; skipped");
                continue;
            }
            if self
                .inner
                .foreign_snapshots
                .lock()
                .expect("foreign snapshots lock")
                .contains(&manifest.object_key)
            {
                // Restored once, and the log held another entry at its last offset.
                continue;
            }
            if manifest.next_offset <= next {
                // Nothing newer than what the store holds.
                return Ok(next);
            }
            if (manifest.next_offset > end && !resumable) || manifest.next_offset < start {
                continue;
            }
            missed = true;
            tracing::info!(partition = id, snapshot = %manifest.object_key, "restoring partition {id} from a snapshot");
            let dir = &self.inner.config.snapshot_download_dir;
            let min_free = self.inner.config.min_free_disk_bytes;
            let volume = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
            if let Err(low) =
                super::disk_floor::check(volume, "the download", manifest.object_bytes, min_free)
            {
                self.inner
                    .metrics
                    .snapshot_restores
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(partition = id, snapshot = %manifest.object_key, error = %low, "snapshot not fetched");
                why = format!("{} not fetched: {low}", manifest.object_key);
                continue;
            }
            let snapshot = match self
                .until_stopped(&handle, snapshots.fetch_to(manifest, dir))
                .map_err(NotRestored::missed)?
            {
                Ok(snapshot) => snapshot,
                Err(e) => {
                    // S3 or the local disk failing is not the snapshot's fault.
                    let fetched = !matches!(
                        e,
                        crate::backup::BackupError::S3 { .. }
                            | crate::backup::BackupError::Local { .. }
                    );
                    self.inner
                        .metrics
                        .snapshot_restores
                        .with_label_values(&[if fetched { "invalid" } else { "failed" }])
                        .inc();
                    if fetched {
                        tracing::warn!(partition = id, error = %e, "snapshot does not verify; trying an older one");
                    } else {
                        tracing::warn!(partition = id, error = %e, "snapshot could not be fetched; trying an older one");
                    }
                    why = format!("{e}");
                    continue;
                }
            };
            if manifest.next_offset > end
                && let Err(e) = self
                    .until_stopped(&handle, self.inner.log.resume_at(id, manifest.next_offset))
                    .map_err(NotRestored::missed)?
            {
                tracing::info!(partition = id, error = %e, "the log cannot continue after this snapshot");
                why = format!("the log cannot continue after {}: {e}", manifest.object_key);
                continue;
            }
            let records = match snapshot.records() {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(partition = id, error = %e, "the downloaded snapshot cannot be read; trying an older one");
                    why = format!("{e}");
                    continue;
                }
            };
            // Its standby state must not answer reads while the restore replaces it.
            self.drop_standby(id);
            let last_entry = records.header().last_entry;
            let records = super::disk_floor::FloorChecked::new(records, volume, min_free);
            let restored = store.restore(
                records,
                manifest.next_offset,
                last_entry,
                &manifest.object_key,
            );
            return match restored {
                Ok(()) => {
                    self.inner
                        .metrics
                        .snapshot_restores
                        .with_label_values(&["ok"])
                        .inc();
                    tracing::info!(
                        partition = id,
                        next_offset = manifest.next_offset,
                        records = manifest.records,
                        snapshot = %manifest.object_key,
                        "partition restored from a snapshot"
                    );
                    Ok(manifest.next_offset)
                }
                Err(e) => {
                    self.inner
                        .metrics
                        .snapshot_restores
                        .with_label_values(&["failed"])
                        .inc();
                    tracing::error!(partition = id, error = %e, "restoring a snapshot failed; the partition was emptied");
                    Err(NotRestored::missed(format!(
                        "restoring {} failed: {e}",
                        manifest.object_key
                    )))
                }
            };
        }
        Err(NotRestored { why, missed })
    }

    /// Tries again to open each partition that is not served because of a gap in the log, or
    /// left unrestored on a new disk (a snapshot may have appeared since, S3 come back, or the
    /// disk got room); a partition that now opens serving replaces the unserved one. Called
    /// periodically when snapshots are on.
    pub fn retry_gaps(&self) {
        // One open of a partition at a time, and none running through shutdown's flush.
        let _reconciling = self.inner.reconciling.lock().expect("reconciling lock");
        let gaps: Vec<Arc<PartitionRuntime>> = self
            .partitions()
            .into_iter()
            .filter(|runtime| runtime.health().retried())
            .collect();
        for old in gaps {
            let id = old.id();
            let mut set_aside = false;
            if let Health::Diverged {
                offset,
                snapshot: Some(snapshot),
            } = old.health()
            {
                // Its state is that snapshot's alone (nothing applied after it), and the log
                // holds another entry at the snapshot's last offset: the snapshot is a copy of
                // another log's prefix. Emptied, the partition is rebuilt from the log, or from
                // an older snapshot that is of it.
                if let Err(e) = old.store.empty() {
                    tracing::error!(partition = id, error = %e, "emptying a partition restored from a snapshot of another log failed");
                    continue;
                }
                tracing::warn!(
                    partition = id,
                    snapshot = %snapshot,
                    offset,
                    "the snapshot this partition was restored from is of another log (the log holds \
                     another entry at its last offset, as after a topic was deleted and created \
                     again): set aside, and the partition rebuilt from the log"
                );
                self.inner
                    .foreign_snapshots
                    .lock()
                    .expect("foreign snapshots lock")
                    .insert(snapshot);
                set_aside = true;
            }
            let Ok(fresh) = self.open_partition(id) else {
                continue;
            };
            if !fresh.serving() && !set_aside {
                // Still a gap: keep the old runtime, with the newest reason.
                old.set_health(fresh.health());
                continue;
            }
            // Served or not, a set-aside partition's new runtime replaces the old one, which
            // still holds the foreign snapshot's offset and read index: given a health that
            // has state (an open that failed), it would answer outcomes of that snapshot.
            // Ownership moved on meanwhile when another runtime is there: the new one is not
            // wanted.
            let replaced = self.change_partitions(|map| match map.get(&id) {
                Some(current) if Arc::ptr_eq(current, &old) => {
                    map.insert(id, fresh.clone());
                    true
                }
                _ => false,
            });
            if replaced && fresh.serving() {
                tracing::info!(partition = id, "partition served again after a gap");
            } else if !replaced {
                fresh.stop_applier(&self.inner.pool, self.inner.config.stop_patience);
            }
        }
    }
}

impl Engine {
    /// Runs `future` (an S3 or log call) to completion from the synchronous ownership path
    /// (a runtime worker or a blocking thread), or drops it once the node begins to stop: the
    /// runtime goes away soon after, and a call still running then (the S3 client's retry
    /// timers) would panic in it.
    pub(super) fn until_stopped<F: std::future::Future>(
        &self,
        handle: &tokio::runtime::Handle,
        future: F,
    ) -> Result<F::Output, String> {
        let mut stop = self.inner.stop.subscribe();
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                tokio::select! {
                    output = future => Ok(output),
                    _ = stop.wait_for(|&stopping| stopping) => Err("the node is stopping".to_string()),
                }
            })
        })
    }
}
