//! Plugin modules and bindings in the bucket, next to the snapshots. On the Kafka log the
//! compacted plugins topic keeps every module and binding for as long as the topic lives, so a
//! new replica needs nothing from here; on the embedded log a lost data directory takes the
//! plugins with it, and a disaster recovery from snapshots must bring them back too.
//!
//! Keys: `{prefix}/plugins/{digest}.wasm` (content-addressed, written once) and
//! `{prefix}/plugins/bindings.json` (written after every module it names, so it never names
//! one that is missing).

use super::{BackupError, Snapshots};
use serde::{Deserialize, Serialize};

/// One plugin binding as backed up: its name, its module's digest, and the binding as the
/// node stores it (opaque here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackedUpBinding {
    pub name: String,
    /// SHA-256 of the module, hex.
    pub digest: String,
    pub binding: serde_json::Value,
}

/// A binding and the module it names.
#[derive(Debug, Clone)]
pub struct BackedUpPlugin {
    pub binding: BackedUpBinding,
    pub module: Vec<u8>,
}

impl Snapshots {
    pub(super) fn plugins_prefix(&self) -> String {
        format!("{}/plugins/", self.prefix)
    }

    /// Uploads the modules the bucket lacks, then the bindings (replacing the previous set).
    pub async fn upload_plugins(&self, plugins: &[BackedUpPlugin]) -> Result<(), BackupError> {
        let prefix = self.plugins_prefix();
        let present: std::collections::HashSet<String> = self
            .keys(&prefix)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        for plugin in plugins {
            let key = format!("{prefix}{}.wasm", plugin.binding.digest);
            if !present.contains(&key) {
                self.put(&key, plugin.module.clone()).await?;
            }
        }
        let bindings: Vec<&BackedUpBinding> = plugins.iter().map(|p| &p.binding).collect();
        let json = serde_json::to_vec_pretty(&bindings).expect("bindings serialize");
        self.put(&format!("{prefix}bindings.json"), json).await
    }

    /// The backed-up bindings with their modules, each module checked against its digest;
    /// none when the bucket holds no bindings.
    pub async fn fetch_plugins(&self) -> Result<Vec<BackedUpPlugin>, BackupError> {
        let prefix = self.plugins_prefix();
        let bindings_key = format!("{prefix}bindings.json");
        let listed = self.keys(&prefix).await?;
        if !listed.iter().any(|(key, _)| *key == bindings_key) {
            return Ok(Vec::new());
        }
        let bindings: Vec<BackedUpBinding> =
            serde_json::from_slice(&self.get(&bindings_key).await?).map_err(|e| {
                BackupError::Invalid {
                    key: bindings_key.clone(),
                    reason: format!("not a list of bindings: {e}"),
                }
            })?;
        let mut plugins = Vec::with_capacity(bindings.len());
        for binding in bindings {
            let key = format!("{prefix}{}.wasm", binding.digest);
            let module = self.get(&key).await?;
            if crate::model::Digest::of(&module).to_string() != binding.digest {
                return Err(BackupError::Invalid {
                    key,
                    reason: "the module does not match its digest".into(),
                });
            }
            plugins.push(BackedUpPlugin { binding, module });
        }
        Ok(plugins)
    }
}
