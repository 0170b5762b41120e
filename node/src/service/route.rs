//! Where a partition is read: here when this node serves it and it is healthy, else at an
//! owner in the region (with gossip on); and the errors that say why not.

use super::{ErrorKind, Service, ServiceError};
use crate::cluster::Cluster;
use crate::engine::PartitionRuntime;
use std::sync::Arc;

/// Where one partition's reads go.
pub(super) enum Route {
    /// This node serves it.
    Local(Arc<PartitionRuntime>),
    /// Another node in the region does.
    Remote(Cluster),
}

impl Service {
    /// This node's partition if it serves it; else, with gossip on, the region's owners.
    pub(super) fn route(&self, partition: u32) -> Result<Route, ServiceError> {
        // A partition stopped here (a disk failure, a gap) is read from a healthy replica in the
        // region when there is one, else answered 503.
        if let Some(runtime) = self.serving_partition(partition) {
            // Replaying what the log held when it opened here: a member that serves it and has
            // applied that far answers at once (this node's reads of it would wait until it
            // catches up). One catching up as well would only make the read wait there.
            if let Some(to) = runtime.catching_up()
                && let Some(cluster) = &self.cluster
                && cluster.served_elsewhere_from(partition, to)
            {
                return Ok(Route::Remote(cluster.clone()));
            }
            return Ok(Route::Local(runtime));
        }
        if let Some(runtime) = self.standby_partition(partition) {
            return Ok(Route::Local(runtime));
        }
        match &self.cluster {
            Some(cluster) => Ok(Route::Remote(cluster.clone())),
            None => self.readable_partition(partition).map(Route::Local),
        }
    }

    /// This node's runtime of `partition` when it applies and serves it. What every read of a
    /// partition served elsewhere asks first: it makes no error (`readable_partition` says why).
    pub(super) fn serving_partition(&self, partition: u32) -> Option<Arc<PartitionRuntime>> {
        self.engine.partition(partition).filter(|r| r.serving())
    }

    /// This node's last state of `partition` when the log took it without settling its next
    /// owner (a rebalance, or the broker is away) and no node of the region serves it: read as
    /// a replica that lags is read (`min_offsets` and a Redis read's own writes still wait for
    /// what it has not applied, until it is back). Failing every read of the region while a
    /// broker restarts would serve nobody.
    pub(super) fn standby_partition(&self, partition: u32) -> Option<Arc<PartitionRuntime>> {
        // A copy taken while it still caught up with the log is behind what was answered
        // before it opened here: it answers nothing.
        let runtime = self
            .engine
            .standby(partition)
            .filter(|runtime| runtime.catching_up().is_none())?;
        let served_elsewhere = self
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.served_elsewhere(partition));
        (!served_elsewhere).then_some(runtime)
    }

    /// This node's runtime of `partition` when its reads may be answered here (it serves it, or
    /// keeps it on standby); else why not. What a read routed here, or a peer's read, uses: a
    /// peer asks this node from a card gossip has not refreshed yet when the partition just
    /// went on standby here, and the standby state answers it as well as any lagging replica.
    pub(super) fn readable_partition(
        &self,
        partition: u32,
    ) -> Result<Arc<PartitionRuntime>, ServiceError> {
        let unavailable = |message: String| {
            ServiceError::new(ErrorKind::Unavailable, "partition_unavailable", message)
        };
        let Some(runtime) = self.engine.partition(partition) else {
            if let Some(standby) = self.engine.standby(partition) {
                if let Some(to) = standby.catching_up() {
                    return Err(ServiceError::new(
                        ErrorKind::Unavailable,
                        "partition_catching_up",
                        format!(
                            "partition {partition} was taken from this node while it caught up \
                             with the log (it has applied {} of the {to} entries the log held \
                             when it opened here), and no other node serves it yet; try again \
                             shortly",
                            standby.next_offset()
                        ),
                    ));
                }
                return Ok(standby);
            }
            if self.engine.is_opening(partition) {
                return Err(ServiceError::new(
                    ErrorKind::Unavailable,
                    "partition_opening",
                    format!(
                        "partition {partition} is still opening on this node ({}); try again \
                         shortly",
                        crate::engine::OPENING
                    ),
                ));
            }
            return Err(unavailable(format!(
                "partition {partition} is not served by this node"
            )));
        };
        // A partition that stopped applying only has stale state: answering from it would hide
        // acknowledged writes behind a 200.
        if !runtime.serving() {
            let why = runtime
                .health()
                .reason()
                .unwrap_or_else(|| "its state just changed; try again".into());
            return Err(unavailable(format!(
                "partition {partition} is not served: {why}"
            )));
        }
        Ok(runtime)
    }

    /// [`Service::readable_partition`], but only one this node applies: following changes
    /// needs one (a standby partition's state does not move).
    pub(super) fn applying_partition(
        &self,
        partition: u32,
    ) -> Result<Arc<PartitionRuntime>, ServiceError> {
        let runtime = self.readable_partition(partition)?;
        if runtime.serving() {
            return Ok(runtime);
        }
        let why = runtime.health().reason().unwrap_or_default();
        Err(ServiceError::new(
            ErrorKind::Unavailable,
            "partition_unavailable",
            format!("partition {partition} is not applied here right now: {why}"),
        ))
    }

    pub(super) fn read_failed(&self, partition: u32, e: impl std::fmt::Display) -> ServiceError {
        tracing::error!(partition, error = %e, "read failed");
        ServiceError::internal(format!("reading partition {partition} failed: {e}"))
    }
}
