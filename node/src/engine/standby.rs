//! Partitions the log took from this node while their next owner is not settled (the group is
//! rebalancing, or this node lost its session with the broker, which revokes every partition
//! until the broker is back): kept, not applied, so their reads are answered from their last
//! state — as a replica that lags would answer them — instead of failing everywhere at once.
//! See [`crate::log::Assignment::unsettled`].

use super::*;
use crate::log::Assignment;

impl Engine {
    /// `partition`'s last state here, when the log took it and has not settled its next owner.
    pub fn standby(&self, partition: u32) -> Option<Arc<PartitionRuntime>> {
        self.inner.standby.load().get(&partition).cloned()
    }

    /// Every partition on standby.
    pub fn standby_partitions(&self) -> Vec<Arc<PartitionRuntime>> {
        self.inner.standby.load().values().cloned().collect()
    }

    /// Whether this node owns `partition` or keeps it on standby: its reads are answered here.
    pub fn holds(&self, partition: u32) -> bool {
        self.inner.partitions.load().contains_key(&partition)
            || self.inner.standby.load().contains_key(&partition)
    }

    /// Sees every change of the partitions this node owns or keeps on standby.
    pub(super) fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Ends the standby of `partition` (another member serves it now): its reads are no
    /// longer answered here. Its data stays on disk (`DROP_RELEASED_PARTITIONS` deletes it).
    /// Does nothing while ownership changes are being applied (an open may wait on S3 for long,
    /// and gossip, which calls this, must not wait): the caller asks again later.
    pub fn end_standby(&self, partition: u32) {
        let Ok(_reconciling) = self.inner.reconciling.try_lock() else {
            return;
        };
        if let Some(runtime) = self.drop_standby(partition) {
            tracing::info!(
                partition,
                "another member serves the partition now; its reads are no longer answered here"
            );
            self.forget_released(&runtime);
        }
    }

    /// Keeps a partition that is being released to answer reads. Its read index is dropped:
    /// its reads go to the store, which is shared with whatever opens the partition next —
    /// so a read that resolved to the standby copy and then waited for a write the reopened
    /// partition applied finds that write (an index would stay as the standby left it), and
    /// the reopened partition's own index is not held twice.
    pub(super) fn put_on_standby(&self, runtime: Arc<PartitionRuntime>, rebalances: u64) {
        runtime.index.turn_off();
        self.inner
            .standby_since
            .lock()
            .expect("standby lock")
            .insert(runtime.id(), rebalances);
        self.change_standby(|map| map.insert(runtime.id(), runtime));
    }

    /// No longer answers reads of `partition` from its standby state (its data stays on disk).
    pub(super) fn drop_standby(&self, partition: u32) -> Option<Arc<PartitionRuntime>> {
        if !self.inner.standby.load().contains_key(&partition) {
            return None;
        }
        self.inner
            .standby_since
            .lock()
            .expect("standby lock")
            .remove(&partition);
        self.change_standby(|map| map.remove(&partition))
    }

    /// Takes off standby the partitions the log has settled elsewhere and returns them: those
    /// it no longer lists as taken (nor owned), and, unless gossip says when another member
    /// serves them, those a rebalance since they were taken did not give back.
    pub(super) fn settle_standby(&self, assignment: &Assignment) -> Vec<Arc<PartitionRuntime>> {
        let since = self
            .inner
            .standby_since
            .lock()
            .expect("standby lock")
            .clone();
        let by_gossip = self.inner.config.standby_until_served_elsewhere;
        let settled = |id: &u32| {
            !assignment.contains(id)
                && (!assignment.unsettled.contains(id)
                    || (!by_gossip && since.get(id).is_some_and(|&s| assignment.rebalances > s)))
        };
        if !self.inner.standby.load().keys().any(settled) {
            return Vec::new();
        }
        let settled: Vec<u32> = self
            .inner
            .standby
            .load()
            .keys()
            .copied()
            .filter(settled)
            .collect();
        settled
            .iter()
            .filter_map(|&id| self.drop_standby(id))
            .collect()
    }

    /// Changes the standby partitions with `f` (see [`Engine::change_map`]).
    fn change_standby<R>(
        &self,
        f: impl FnOnce(&mut BTreeMap<u32, Arc<PartitionRuntime>>) -> R,
    ) -> R {
        let result = self.change_map(&self.inner.standby, f);
        let count = self.inner.standby.load().len();
        self.inner.metrics.partitions_standby.set(count as i64);
        result
    }
}
