//! The plugin registry as clients use it: upload (validated), list, fetch, unbind; names pinned
//! to digests on writes; read-time transforms.

use super::{ErrorKind, Service, ServiceError};
use crate::engine::Resolved;
use crate::model::{PluginRef, Record};
use crate::plugins::{Binding, Input, PluginError, PluginFailure, check_name};
use bytes::Bytes;
use serde_json::value::RawValue;

/// Fuel the transforms of one read may burn together, in calls' worth of PLUGIN_FUEL.
const READ_TRANSFORM_CALLS: u64 = 10;

fn not_found(name: &str) -> ServiceError {
    ServiceError::new(
        ErrorKind::NotFound,
        "unknown_plugin",
        format!("no plugin named {name:?}: upload it with PUT /plugins/{name}"),
    )
}

impl Service {
    /// Validates `bytes` as a plugin, stores it under its digest and binds `name` to it. The
    /// binding and module reach every node through the log.
    pub async fn put_plugin(&self, name: &str, bytes: Bytes) -> Result<Binding, ServiceError> {
        check_name(name).map_err(|e| ServiceError::bad_request("bad_plugin_name", e))?;
        let host = self.plugins.host().clone();
        let module = bytes.clone();
        let compiled = tokio::task::spawn_blocking(move || host.load(&module))
            .await
            .map_err(|e| ServiceError::internal(e.to_string()))?
            .map_err(|e| match e {
                PluginError::Invalid(reason) => ServiceError::bad_request("invalid_plugin", reason),
                e @ PluginError::Host(_) => ServiceError::internal(e.to_string()),
            })?;
        let binding = Binding {
            name: name.to_string(),
            digest: compiled.digest,
            kind: compiled.kind,
            size: compiled.size,
            uploaded_at_ms: super::now_ms(),
        };
        self.publish_plugin(&binding, Some(&bytes)).await?;
        Ok(binding)
    }

    /// Unbinds `name`. Entries already pinned to its digest still apply.
    pub async fn delete_plugin(&self, name: &str) -> Result<Binding, ServiceError> {
        let binding = self.plugin(name)?;
        self.unpublish_plugin(name).await?;
        Ok(binding)
    }

    /// Every binding this node knows.
    pub fn plugins(&self) -> Vec<Binding> {
        self.registry.list()
    }

    /// `name`'s binding.
    pub fn plugin(&self, name: &str) -> Result<Binding, ServiceError> {
        self.registry.get(name).ok_or_else(|| not_found(name))
    }

    /// The module bytes `name` is bound to.
    pub fn plugin_module(&self, name: &str) -> Result<Vec<u8>, ServiceError> {
        let binding = self.plugin(name)?;
        self.plugins
            .store()
            .module(&binding.digest.to_string())
            .map_err(|e| ServiceError::internal(format!("reading plugin {name:?} failed: {e}")))?
            .ok_or_else(|| not_found(name))
    }

    /// The digest (hex) `name` is bound to now, checked to be usable as a condition
    /// (`condition`) or a transform. For record `index` of a write.
    pub(super) fn pin_plugin(
        &self,
        index: usize,
        plugin: &PluginRef,
        condition: bool,
    ) -> Result<PluginRef, ServiceError> {
        let name = match plugin {
            PluginRef::Name(name) => name,
            // Already pinned (an internal caller): kept as given.
            PluginRef::Digest(_) => return Ok(plugin.clone()),
        };
        let binding = self.registry.get(name).ok_or_else(|| {
            ServiceError::bad_request(
                "unknown_plugin",
                format!(
                    "record {index}: no plugin named {name:?} (upload it with PUT /plugins/{name})"
                ),
            )
        })?;
        let fits = if condition {
            binding.kind.is_condition()
        } else {
            binding.kind.is_transform()
        };
        if !fits {
            return Err(ServiceError::bad_request(
                "wrong_plugin_kind",
                format!(
                    "record {index}: plugin {name:?} is a {:?} plugin; `{}` needs a {} plugin",
                    binding.kind,
                    if condition { "if_plugin" } else { "transform" },
                    if condition { "condition" } else { "transform" }
                ),
            ));
        }
        Ok(PluginRef::Digest(binding.digest))
    }

    /// Reshapes read records with the transform plugin `name` (the latest version of the name):
    /// each record's data becomes the plugin's output for `{op: "read", ...}`.
    pub async fn read_transform(
        &self,
        name: &str,
        args: Option<Box<RawValue>>,
        records: Vec<Record>,
    ) -> Result<Vec<Record>, ServiceError> {
        let binding = self.plugin(name)?;
        if !binding.kind.is_transform() {
            return Err(ServiceError::bad_request(
                "wrong_plugin_kind",
                format!(
                    "plugin {name:?} is a {:?} plugin, not a transform",
                    binding.kind
                ),
            ));
        }
        let plugins = self.plugins.clone();
        let name = name.to_string();
        // Plugins are CPU work (and a first use compiles the module): off the async threads, a
        // few requests at once, and one fuel budget per request, not per record.
        let slot = self.eval_slot().await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let plugin = match plugins.resolve(&binding.digest) {
                Resolved::Ready(plugin) => plugin,
                _ => return Err(not_found(&name)),
            };
            let host = plugins.host();
            let mut fuel_left = host.limits().fuel.saturating_mul(READ_TRANSFORM_CALLS);
            records
                .into_iter()
                .map(|mut record| {
                    let input = Input {
                        op: "read",
                        pk: &record.pk,
                        sk: &record.sk,
                        data: Some(&record.data_json),
                        current: Some(record.stored()),
                        args: args.as_ref().map(|a| a.get()),
                    };
                    let budget_before = fuel_left;
                    let (output, spent) =
                        host.transform_with_fuel(&plugin, &input.to_json(), fuel_left);
                    fuel_left -= spent.min(fuel_left);
                    let output = output.map_err(|e| match e {
                        PluginFailure::OutOfFuel if budget_before < host.limits().fuel => {
                            ServiceError::bad_request(
                                "transform_budget_exceeded",
                                format!(
                                    "transform {name:?} used up the fuel of one read ({READ_TRANSFORM_CALLS} \
                                     times PLUGIN_FUEL) before pk {:?}, sk {:?}: read fewer records at once",
                                    record.pk, record.sk
                                ),
                            )
                        }
                        e => ServiceError::bad_request(
                            "transform_failed",
                            format!(
                                "transform {name:?} {e} for pk {:?}, sk {:?}",
                                record.pk, record.sk
                            ),
                        ),
                    })?;
                    record.data_json = String::from_utf8(output).map_err(|_| {
                        ServiceError::bad_request(
                            "transform_failed",
                            format!("transform {name:?} returned output that is not UTF-8"),
                        )
                    })?;
                    Ok(record)
                })
                .collect()
        })
        .await
        .map_err(|e| ServiceError::internal(e.to_string()))?
    }

    /// Makes `binding` (and its module) known: on disk here, and to every node through the log.
    async fn publish_plugin(
        &self,
        binding: &Binding,
        module: Option<&[u8]>,
    ) -> Result<(), ServiceError> {
        let store = self.plugins.store();
        let failed = |e: crate::store::StoreError| {
            ServiceError::internal(format!("storing plugin {:?} failed: {e}", binding.name))
        };
        if let Some(bytes) = module {
            store
                .put_module(&binding.digest.to_string(), bytes)
                .map_err(failed)?;
        }
        if let Some(feed) = &self.log.plugin_feed() {
            let unavailable = |e: crate::log::LogError| {
                ServiceError::new(ErrorKind::Unavailable, "log_unavailable", e.to_string())
            };
            // The module first: a node that learns the name can always find the bytes.
            if let Some(bytes) = module {
                feed.publish(format!("wasm:{}", binding.digest), Some(bytes.to_vec()))
                    .await
                    .map_err(unavailable)?;
            }
            let json = serde_json::to_vec(binding).expect("bindings serialize");
            feed.publish(format!("name:{}", binding.name), Some(json))
                .await
                .map_err(unavailable)?;
        }
        let json = serde_json::to_vec(binding).expect("bindings serialize");
        store.put_binding(&binding.name, &json).map_err(failed)?;
        self.registry.bind(binding.clone());
        Ok(())
    }

    async fn unpublish_plugin(&self, name: &str) -> Result<(), ServiceError> {
        if let Some(feed) = &self.log.plugin_feed() {
            feed.publish(format!("name:{name}"), None)
                .await
                .map_err(|e| {
                    ServiceError::new(ErrorKind::Unavailable, "log_unavailable", e.to_string())
                })?;
        }
        self.plugins
            .store()
            .remove_binding(name)
            .map_err(|e| ServiceError::internal(format!("unbinding {name:?} failed: {e}")))?;
        self.registry.unbind(name);
        Ok(())
    }
}
