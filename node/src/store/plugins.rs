//! Plugin modules and name bindings, kept with the records so a node restarts with every plugin
//! it had: `wasm/<digest hex>` → module bytes, `name/<name>` → the binding (JSON, owned by the
//! service). Modules are never removed: entries in the log stay pinned to their digest.

use super::Result;
use fjall::{Database, Keyspace, PersistMode};

const MODULE_PREFIX: &str = "wasm/";
const NAME_PREFIX: &str = "name/";

/// The plugins keyspace.
#[derive(Clone)]
pub struct PluginStore {
    db: Database,
    keyspace: Keyspace,
}

impl PluginStore {
    pub(super) fn new(db: Database, keyspace: Keyspace) -> Self {
        PluginStore { db, keyspace }
    }

    /// Stores a module under its digest, durably.
    pub fn put_module(&self, digest_hex: &str, bytes: &[u8]) -> Result<()> {
        self.keyspace
            .insert(format!("{MODULE_PREFIX}{digest_hex}"), bytes)?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// The module with this digest, if stored.
    pub fn module(&self, digest_hex: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .keyspace
            .get(format!("{MODULE_PREFIX}{digest_hex}"))?
            .map(|v| v.to_vec()))
    }

    /// Binds `name` (replacing any binding), durably.
    pub fn put_binding(&self, name: &str, binding: &[u8]) -> Result<()> {
        self.keyspace
            .insert(format!("{NAME_PREFIX}{name}"), binding)?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Removes `name`'s binding, durably.
    pub fn remove_binding(&self, name: &str) -> Result<()> {
        self.keyspace.remove(format!("{NAME_PREFIX}{name}"))?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Every binding, by name.
    pub fn bindings(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.keyspace
            .prefix(NAME_PREFIX)
            .map(|guard| {
                let (key, value) = guard.into_inner()?;
                let name = String::from_utf8_lossy(&key[NAME_PREFIX.len()..]).into_owned();
                Ok((name, value.to_vec()))
            })
            .collect()
    }
}
