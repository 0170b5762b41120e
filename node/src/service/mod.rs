//! The one read/write surface every frontend calls (docs/architecture.md): HTTP and RESP. It
//! validates requests, turns writes into log entries, waits for outcomes, and reads owned
//! partitions. Frontends only parse and render.

mod auth;
mod cancel;
mod changes;
mod disk_space;
mod expiry;
mod json;
mod keyspace;
mod list;
mod log_end;
mod outcomes;
mod plugins;
mod positions;
mod read;
mod remote;
mod replicas;
mod route;
mod scan;
mod snapshots;
mod status;
mod validate;
mod watch;
mod write;

pub use crate::backup::Manifest;
pub use crate::engine::{
    LongDouble, RmwError, compute_read_modify_write, edit_json_alone, parse_finite_float,
    parse_redis_integer,
};
pub use crate::model::{ListRequest, Outcome, PluginRef, Rejection, RejectionKind};
/// A plugin name's binding, as `/plugins` lists it.
pub use crate::plugins::Binding;
pub use crate::store::KEY_HASH_BITS;
pub use auth::{Access, Denied, Operation, Tokens};
pub use cancel::watch_client;
pub use changes::{ChangeEvent, Follow, Token, Watch, WatchEvent, WatchRequest};
pub use disk_space::{DEFAULT_MIN_FREE_BYTES, DiskSpace, LowDisk};
pub use json::{JsonRead, compact_json};
pub use keyspace::KeyPage;
pub use list::ListPage;
pub use remote::RemoteStream;
pub use scan::ScanPage;
pub use status::{LastSnapshot, PartitionReport, Readiness};
pub use watch::Watched;
pub use write::{EntryResult, WriteMode, WriteOp, WriteRequest};

use crate::cluster::Cluster;
use crate::cond::Conditions;
use crate::engine::{Engine, PluginResolver, Plugins};
use crate::log::MutationLog;
use crate::metrics::Metrics;
use crate::plugins::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Request limits. Each has a setting; errors name the limit so users know what to change.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of one request body.
    pub max_body_bytes: usize,
    /// Records (or keys) in one request.
    pub max_records: usize,
    /// Bytes of a pk or an sk.
    pub max_key_bytes: usize,
    /// Bytes of one record's data (JSON text).
    pub max_value_bytes: usize,
    /// Bytes of one log entry.
    pub max_entry_bytes: usize,
    /// Records one list call returns at most (`limit` 0 means this many, with a cursor for more).
    pub max_list_records: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 8 * 1024 * 1024,
            max_records: 1000,
            max_key_bytes: 2048,
            max_value_bytes: 512 * 1024,
            max_entry_bytes: 1024 * 1024,
            max_list_records: 10_000,
        }
    }
}

/// Service settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub limits: Limits,
    /// Longest a `"wait": true` write waits for its outcome before answering "pending".
    pub write_wait_timeout: Duration,
    /// Longest a read with `min_offsets` waits for them to be applied.
    pub read_wait_timeout: Duration,
    /// Who may read, write and administer.
    pub tokens: Tokens,
    /// How often a quiet watch gets a bookmark event.
    pub watch_bookmark: Duration,
    /// The newest log entry format this node writes (`ENTRY_WRITE_VERSION`): below 2, ops
    /// asking for their key's deadline (`key_ttl`) go to the log without it; below 3, ops
    /// setting a record's own deadline (`own_ttl`) set a key's, as v2 did.
    pub entry_write_version: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            limits: Limits::default(),
            write_wait_timeout: Duration::from_secs(10),
            read_wait_timeout: Duration::from_secs(5),
            tokens: Tokens::default(),
            watch_bookmark: changes::DEFAULT_BOOKMARK,
            entry_write_version: crate::model::ENTRY_VERSION,
        }
    }
}

/// What kind of failure a [`ServiceError`] is; frontends map it to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong; the message says what to fix.
    BadRequest,
    /// No such route or resource.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The request or a part of it is over a size limit.
    TooLarge,
    /// The log or a partition cannot serve right now; retrying later may work.
    Unavailable,
    /// A bounded wait ran out.
    Timeout,
    /// The client did not send its request in time (a body that trickled in).
    RequestTimeout,
    /// A fault of the node.
    Internal,
    /// No valid credentials were presented.
    Unauthorized,
    /// The credentials do not allow this.
    Forbidden,
    /// What was asked for is no longer here (a watch token older than the history).
    Gone,
    /// The node's disk is almost full: writes are refused until space is freed.
    InsufficientStorage,
    /// The body is in a form the node does not read (a `Content-Encoding` other than identity).
    UnsupportedMediaType,
}

/// A failed service call: a stable code, and a message that says what to fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ServiceError {
            kind,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }

    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }
}

/// The service. Cheap to clone: one reference count (every HTTP request clones it).
#[derive(Clone)]
pub struct Service {
    inner: Arc<ServiceInner>,
}

/// What the service holds; its methods reach these fields through `Deref`.
pub struct ServiceInner {
    engine: Engine,
    /// Where writes go.
    log: Arc<dyn MutationLog>,
    /// `if` conditions: checked on arrival, evaluated by lists.
    conds: Arc<Conditions>,
    /// Compiled plugins by digest (uploads, read transforms).
    plugins: PluginResolver,
    /// With gossip on: where partitions this node does not serve are read.
    cluster: Option<Cluster>,
    /// Plugin names → digests.
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    config: Arc<ServiceConfig>,
    /// Bounds the lists evaluating an `if` at once.
    eval_slots: list::EvalSlots,
    /// With S3 configured: where snapshots go.
    snapshots: Option<snapshots::SnapshotState>,
    /// Fan each watched partition's changes out to its watches.
    dispatchers: changes::Dispatchers,
    /// The free-space floor writes are admitted under (MIN_FREE_DISK_BYTES), when set.
    disk: Option<DiskSpace>,
    /// Bounds the asks for where a partition's log ends (`log_end.rs`).
    log_end_asks: log_end::LogEndAsks,
}

impl std::ops::Deref for Service {
    type Target = ServiceInner;

    fn deref(&self) -> &ServiceInner {
        &self.inner
    }
}

impl Service {
    /// The service over `engine`, writing to `log`; conditions compile through `conds`, plugins
    /// are those set up at start.
    pub fn new(
        engine: Engine,
        log: Arc<dyn MutationLog>,
        conds: Arc<Conditions>,
        plugins: Plugins,
        metrics: Arc<Metrics>,
        config: ServiceConfig,
    ) -> Self {
        Service {
            inner: Arc::new(ServiceInner {
                engine,
                log,
                conds,
                plugins: plugins.resolver,
                registry: plugins.registry,
                cluster: None,
                metrics,
                config: Arc::new(config),
                eval_slots: list::EvalSlots::new(),
                snapshots: None,
                dispatchers: changes::Dispatchers::default(),
                disk: None,
                log_end_asks: log_end::LogEndAsks::default(),
            }),
        }
    }

    /// Reads partitions this node does not serve from their owners in `cluster`. Called while
    /// the node starts, before the service is shared.
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("the cluster is set before the service is shared")
            .cluster = Some(cluster);
        self
    }

    /// Snapshots partitions to `store` (S3). Called while the node starts, before the service
    /// is shared.
    pub fn with_snapshots(mut self, store: Arc<crate::backup::Snapshots>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("snapshots are set before the service is shared")
            .snapshots = Some(snapshots::SnapshotState::new(store));
        self
    }

    /// Refuses writes while the volume of the node's data has less free space than `disk`'s
    /// floor. Called while the node starts, before the service is shared.
    pub fn with_disk_space(mut self, disk: DiskSpace) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("the disk floor is set before the service is shared")
            .disk = Some(disk);
        self
    }

    /// Looks the data volume's free space up now (for the metrics), when a floor is set.
    pub fn refresh_disk_space(&self) {
        if let Some(free) = self.disk.as_ref().and_then(DiskSpace::look_now) {
            self.metrics
                .disk_free_bytes
                .set(free.min(i64::MAX as u64) as i64);
        }
    }

    /// The region's cluster, when gossip is on.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// The namespace's partition count.
    pub fn partition_count(&self) -> u32 {
        self.engine.partition_count()
    }

    /// How many partitions this node serves.
    pub fn owned_partition_count(&self) -> usize {
        self.engine.partitions().len()
    }

    /// Whether some partition this node serves is still opening (restored from a snapshot as
    /// the node starts), or catching up with what the log held when it opened here: its reads
    /// wait or are refused until then, as Redis answers `LOADING`.
    pub fn loading(&self) -> bool {
        !self.engine.opening().is_empty()
            || self
                .engine
                .partitions()
                .iter()
                .any(|runtime| runtime.catching_up().is_some())
    }

    /// Why this node takes no write now, if it does not: the log refuses every write, or the
    /// data volume is under `MIN_FREE_DISK_BYTES`.
    pub fn write_refusal(&self) -> Option<String> {
        if let Some(reason) = self.log.refuses_writes() {
            return Some(format!("the log refuses every write: {reason}"));
        }
        self.disk.as_ref().filter(|disk| disk.is_low()).map(|disk| {
            format!(
                "the data volume has less than MIN_FREE_DISK_BYTES ({} bytes) free",
                disk.min_free()
            )
        })
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What `token` (from `Authorization: Bearer` or Redis `AUTH`) grants.
    pub fn access(&self, token: Option<&str>) -> Access {
        self.config.tokens.access(token)
    }

    /// Whether callers must present a token.
    pub fn auth_required(&self) -> bool {
        self.config.tokens.required()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// The newest log entry format this node writes (`ENTRY_WRITE_VERSION`): an edge whose
    /// ops differ by format (Redis `INCRBYFLOAT`: `incr_long_double` from v4) asks it.
    pub fn entry_write_version(&self) -> u32 {
        self.config.entry_write_version
    }
}

pub(crate) use crate::model::now_ms;
