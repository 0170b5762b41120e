//! Plugins as the node runs them. [`Plugins::open`] is the one place they are set up at start
//! (the wasm host, bindings from disk, precompiling, following the log's plugin records); the
//! applier resolves the digests entries name, the service names and uploads.

use crate::log::MutationLog;
use crate::metrics::Metrics;
use crate::plugins::{Binding, Compiled, Digest, PluginHost, PluginLimits, Registry};
use crate::store::{PluginStore, Store, StoreError};
use std::sync::Arc;

/// Everything plugins need at run time, set up once when the node starts.
#[derive(Clone)]
pub struct Plugins {
    /// Digests to compiled modules (what apply and read transforms run).
    pub resolver: PluginResolver,
    /// Names to digests (what writes and reads name).
    pub registry: Arc<Registry>,
}

/// Why plugins could not be set up; the node does not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginSetupError {
    #[error("the WebAssembly engine cannot start: {0}")]
    Host(String),
    #[error("the plugins keyspace cannot be opened: {0}")]
    Store(#[from] StoreError),
}

impl Plugins {
    /// Starts the wasm host under `limits`, loads the bindings stored here, compiles the bound
    /// modules in the background (so no first request waits), and follows the log's plugin
    /// records when the log carries them (Kafka).
    pub fn open(
        store: &Store,
        log: &Arc<dyn MutationLog>,
        limits: PluginLimits,
        metrics: &Metrics,
    ) -> Result<Plugins, PluginSetupError> {
        let host = PluginHost::new(limits).map_err(|e| PluginSetupError::Host(e.to_string()))?;
        metrics.register(Box::new(host.metrics().calls.clone()));
        metrics.register(Box::new(host.metrics().latency.clone()));
        let plugin_store = store.plugins()?;
        let registry = Arc::new(Registry::default());
        for (name, json) in plugin_store.bindings()? {
            match serde_json::from_slice(&json) {
                Ok(binding) => registry.bind(binding),
                Err(e) => tracing::warn!(name, error = %e, "unreadable plugin binding"),
            }
        }
        let resolver = PluginResolver::new(Arc::new(host), plugin_store.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (resolver, digests) = (
                resolver.clone(),
                registry
                    .list()
                    .into_iter()
                    .map(|b| b.digest)
                    .collect::<Vec<_>>(),
            );
            runtime.spawn_blocking(move || {
                for digest in digests {
                    resolver.resolve(&digest);
                }
            });
        }
        if let Some(feed) = log.plugin_feed() {
            let registry = registry.clone();
            feed.follow(Arc::new(move |key, value| {
                receive_plugin_record(&plugin_store, &registry, key, value)
            }));
        }
        Ok(Plugins { resolver, registry })
    }
}

/// Where a digest named by an entry stands on this node.
pub enum Resolved {
    Ready(Arc<Compiled>),
    /// Not here yet (it travels through the log separately): the partition waits for it.
    Missing,
    /// Never usable: not a digest, or the stored module is invalid. Deterministic.
    Invalid(String),
}

/// The host plus the store modules are loaded from. Cheap to clone.
#[derive(Clone)]
pub struct PluginResolver {
    host: Arc<PluginHost>,
    store: PluginStore,
}

impl PluginResolver {
    pub fn new(host: Arc<PluginHost>, store: PluginStore) -> Self {
        PluginResolver { host, store }
    }

    /// The wasmtime host.
    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// The plugin modules and bindings on disk.
    pub fn store(&self) -> &PluginStore {
        &self.store
    }

    /// The compiled plugin `digest` names.
    pub fn resolve(&self, digest: &Digest) -> Resolved {
        if let Some(compiled) = self.host.get(digest) {
            return Resolved::Ready(compiled);
        }
        match self.store.module(&digest.to_string()) {
            Ok(Some(bytes)) => match self.host.load(&bytes) {
                Ok(compiled) => Resolved::Ready(compiled),
                Err(e) => Resolved::Invalid(e.to_string()),
            },
            Ok(None) => Resolved::Missing,
            Err(e) => {
                tracing::warn!(digest = %digest, error = %e, "reading a plugin module failed");
                Resolved::Missing
            }
        }
    }
}

/// Applies one plugin record from the log to this node: modules to the store, bindings to the
/// store and the registry. Records that do not parse are skipped (logged): they are not ours.
fn receive_plugin_record(
    store: &PluginStore,
    registry: &Registry,
    key: &str,
    value: Option<&[u8]>,
) {
    let result = match (key.split_once(':'), value) {
        (Some(("wasm", digest)), Some(bytes)) => {
            if Digest::of(bytes).to_string() != digest {
                tracing::warn!(key, "plugin module does not match its digest; skipped");
                return;
            }
            store.put_module(digest, bytes)
        }
        (Some(("name", name)), Some(json)) => match serde_json::from_slice::<Binding>(json) {
            Ok(binding) if binding.name == name => {
                let stored = store.put_binding(name, json);
                registry.bind(binding);
                stored
            }
            _ => {
                tracing::warn!(key, "unreadable plugin binding; skipped");
                return;
            }
        },
        (Some(("name", name)), None) => {
            registry.unbind(name);
            store.remove_binding(name)
        }
        _ => {
            tracing::warn!(key, "unknown plugin record; skipped");
            return;
        }
    };
    if let Err(e) = result {
        tracing::error!(key, error = %e, "storing a plugin record failed");
    }
}

/// Brings plugins back from the snapshot bucket onto a new store — no bindings and nothing
/// applied in any partition (a lost data directory on the embedded log, which has no plugins
/// topic to replay): every backed-up binding and the module it names, each module checked
/// against its digest. Returns how many bindings came back. Call before [`Plugins::open`].
///
/// A store that has applied entries keeps its own plugins, even none: the bucket may still hold
/// bindings deleted since, and an ordinary restart needs no S3 call at all.
pub async fn restore_plugins(
    store: &Store,
    snapshots: &crate::backup::Snapshots,
) -> Result<usize, PluginRestoreError> {
    let plugin_store = store.plugins()?;
    if !plugin_store.bindings()?.is_empty() {
        return Ok(0);
    }
    for id in 0..store.partition_count() {
        if store.partition(id)?.next_offset()? > 0 {
            return Ok(0);
        }
    }
    let backed_up = snapshots.fetch_plugins().await?;
    for plugin in &backed_up {
        let json = serde_json::to_vec(&plugin.binding.binding).expect("JSON values serialize");
        if serde_json::from_slice::<Binding>(&json).is_err() {
            return Err(PluginRestoreError::Binding(plugin.binding.name.clone()));
        }
        plugin_store.put_module(&plugin.binding.digest, &plugin.module)?;
        plugin_store.put_binding(&plugin.binding.name, &json)?;
    }
    Ok(backed_up.len())
}

/// Why plugins could not be brought back from the bucket.
#[derive(Debug, thiserror::Error)]
pub enum PluginRestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    #[error("the backed-up binding {0:?} is not a binding this node reads")]
    Binding(String),
}

/// The bindings this node holds with their modules, as the snapshot bucket keeps them.
pub fn plugins_to_back_up(
    registry: &Registry,
    resolver: &PluginResolver,
) -> Vec<crate::backup::BackedUpPlugin> {
    registry
        .list()
        .into_iter()
        .filter_map(|binding| {
            let digest = binding.digest.to_string();
            let module = match resolver.store().module(&digest) {
                Ok(Some(module)) => module,
                _ => {
                    tracing::warn!(name = %binding.name, %digest, "a bound plugin's module is not stored here; not backed up");
                    return None;
                }
            };
            Some(crate::backup::BackedUpPlugin {
                binding: crate::backup::BackedUpBinding {
                    name: binding.name.clone(),
                    digest,
                    binding: serde_json::to_value(&binding).expect("bindings serialize"),
                },
                module,
            })
        })
        .collect()
}
