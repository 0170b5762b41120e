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

    /// Keeps a partition that is being released to answer reads. Its read index is dropped:
    /// its reads go to the store, which is shared with whatever opens the partition next —
    /// so a read that resolved to the standby copy and then waited for a write the reopened
    /// partition applied finds that write (an index would stay as the standby left it), and
    /// the reopened partition's own index is not held twice.
    pub(super) fn put_on_standby(&self, runtime: Arc<PartitionRuntime>) {
        runtime.index.turn_off();
        self.change_standby(|map| map.insert(runtime.id(), runtime));
    }

    /// No longer answers reads of `partition` from its standby state (its data stays on disk).
    pub(super) fn drop_standby(&self, partition: u32) -> Option<Arc<PartitionRuntime>> {
        if !self.inner.standby.load().contains_key(&partition) {
            return None;
        }
        self.change_standby(|map| map.remove(&partition))
    }

    /// Takes off standby the partitions the log has settled elsewhere (neither owned here nor
    /// in flux any more) and returns them.
    pub(super) fn settle_standby(&self, assignment: &Assignment) -> Vec<Arc<PartitionRuntime>> {
        let settled = |id: &u32| !assignment.unsettled.contains(id) && !assignment.contains(id);
        if !self.inner.standby.load().keys().any(settled) {
            return Vec::new();
        }
        self.change_standby(|map| {
            let ids: Vec<u32> = map.keys().copied().filter(settled).collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        })
    }

    /// Changes the standby partitions with `f`, one change (of them or of the owned ones) at a
    /// time.
    fn change_standby<R>(
        &self,
        f: impl FnOnce(&mut BTreeMap<u32, Arc<PartitionRuntime>>) -> R,
    ) -> R {
        let _changing = self
            .inner
            .partitions_changing
            .lock()
            .expect("partitions lock");
        let mut map = BTreeMap::clone(&self.inner.standby.load());
        let result = f(&mut map);
        self.inner.standby.store(Arc::new(map));
        self.inner.changed.send_modify(|n| *n += 1);
        result
    }
}
