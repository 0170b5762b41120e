//! Plugins as the applier sees them: entries name a digest; the module comes from the host's
//! cache, or from this node's plugin store (where uploads and the plugins topic put it).

use crate::plugins::{Compiled, Digest, PluginHost};
use crate::store::PluginStore;
use std::sync::Arc;

/// Where a digest named by an entry stands on this node.
pub enum Resolved {
    Ready(Arc<Compiled>),
    /// Not here yet (it travels through the log separately): the partition waits for it.
    Missing,
    /// Never usable: not a digest, or the stored module is invalid. Deterministic.
    Invalid(String),
}

/// The host plus the store modules are loaded from.
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

    /// The compiled plugin an entry's digest names.
    pub fn resolve(&self, digest_hex: &str) -> Resolved {
        let digest: Digest = match digest_hex.parse() {
            Ok(d) => d,
            Err(e) => return Resolved::Invalid(e),
        };
        if let Some(compiled) = self.host.get(&digest) {
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
