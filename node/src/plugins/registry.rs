//! Names → plugins. A name is a binding to a digest; rebinding a name never changes entries
//! already in the log, which carry the digest they were accepted with.

use super::{Digest, PluginKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::RwLock;

/// One name's binding: what `GET /plugins` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub name: String,
    pub digest: Digest,
    pub kind: PluginKind,
    /// Module size in bytes.
    pub size: usize,
    /// Unix milliseconds of the upload.
    pub uploaded_at_ms: i64,
}

/// The bindings this node knows.
#[derive(Default)]
pub struct Registry {
    bindings: RwLock<BTreeMap<String, Binding>>,
}

impl Registry {
    /// Binds `binding.name`, replacing an older binding of it.
    pub fn bind(&self, binding: Binding) {
        self.bindings
            .write()
            .expect("registry lock")
            .insert(binding.name.clone(), binding);
    }

    /// Unbinds `name`; the binding it had, if any.
    pub fn unbind(&self, name: &str) -> Option<Binding> {
        self.bindings.write().expect("registry lock").remove(name)
    }

    /// `name`'s binding.
    pub fn get(&self, name: &str) -> Option<Binding> {
        self.bindings
            .read()
            .expect("registry lock")
            .get(name)
            .cloned()
    }

    /// Every binding, by name.
    pub fn list(&self) -> Vec<Binding> {
        self.bindings
            .read()
            .expect("registry lock")
            .values()
            .cloned()
            .collect()
    }
}

/// Checks a plugin name: 1 to 64 of letters, digits, `-`, `_`, `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "plugin name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}
