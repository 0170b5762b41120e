//! Validation: a bad setting stops the node with a message naming it and what to fix.

use super::Config;
use anyhow::bail;
use std::time::Duration;

impl Config {
    /// Checks the resolved settings together.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        let limits = &self.service.limits;
        if !(1..=100_000).contains(&self.partitions) {
            bail!(
                "PARTITIONS: {} is out of range; use 1 to 100000",
                self.partitions
            );
        }
        for (a, b, pa, pb) in [
            (
                "API_PORT",
                "INTERNAL_PORT",
                self.api_port,
                self.internal_port,
            ),
            ("API_PORT", "RESP_PORT", self.api_port, self.resp_port),
            (
                "INTERNAL_PORT",
                "RESP_PORT",
                self.internal_port,
                self.resp_port,
            ),
        ] {
            if pa == pb && pa != 0 {
                bail!("{a} and {b} are both {pa}: give them different ports");
            }
        }
        if self.apply_threads > 1024 {
            bail!(
                "APPLY_THREADS: {} is too many; use 1 to 1024 (or leave it unset: one per core)",
                self.apply_threads
            );
        }
        if self.resp.max_clients == 0 {
            bail!("RESP_MAX_CLIENTS: must be greater than 0");
        }
        for (name, value) in [
            ("MAX_BODY_BYTES", limits.max_body_bytes),
            ("MAX_RECORDS_PER_REQUEST", limits.max_records),
            ("MAX_KEY_BYTES", limits.max_key_bytes),
            ("MAX_VALUE_BYTES", limits.max_value_bytes),
            ("MAX_ENTRY_BYTES", limits.max_entry_bytes),
            ("MAX_LIST_RECORDS", limits.max_list_records),
        ] {
            if value == 0 {
                bail!("{name}: must be greater than 0");
            }
        }
        if limits.max_value_bytes >= limits.max_entry_bytes {
            bail!(
                "MAX_VALUE_BYTES ({}) must be below MAX_ENTRY_BYTES ({}): a record must fit in a log entry",
                limits.max_value_bytes,
                limits.max_entry_bytes
            );
        }
        if limits.max_value_bytes >= crate::model::READ_ANSWER_BYTES {
            bail!(
                "MAX_VALUE_BYTES ({}) must be below {} (64 MiB), the most one answer holds",
                limits.max_value_bytes,
                crate::model::READ_ANSWER_BYTES
            );
        }
        if self.log_segment_bytes < 1024 {
            bail!(
                "LOG_SEGMENT_BYTES: {} is too small; use at least 1024",
                self.log_segment_bytes
            );
        }
        if let Some(kafka) = &self.kafka {
            for (name, value) in [
                ("NAMESPACE", &kafka.namespace),
                ("REGION", &kafka.region),
                ("REPLICA_GROUP", &kafka.replica_group),
            ] {
                if value.is_empty()
                    || !value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    bail!(
                        "{name}: {value:?} must be letters, digits, '-' or '.' (it becomes part of topic and group names, joined by '_')"
                    );
                }
            }
            if kafka.session_timeout < Duration::from_millis(500) {
                bail!(
                    "KAFKA_SESSION_MS: {} is too small; use at least 500",
                    kafka.session_timeout.as_millis()
                );
            }
        }
        if self.plugin_limits.fuel == 0 || self.plugin_limits.memory_bytes < 65536 {
            bail!(
                "PLUGIN_FUEL must be above 0 and PLUGIN_MEMORY_BYTES at least 65536 (one wasm page)"
            );
        }
        if self.checkpoint_interval.is_zero() {
            bail!("CHECKPOINT_INTERVAL_MS: must be greater than 0");
        }
        for (name, value) in [
            ("STALL_THRESHOLD_MS", self.stall_threshold),
            ("HTTP_HEADER_TIMEOUT_MS", self.http.header_timeout),
            ("HTTP_BODY_TIMEOUT_MS", self.http.body_timeout),
        ] {
            if value.is_zero() {
                bail!("{name}: must be greater than 0");
            }
        }
        if let Some(s3) = &self.s3 {
            if s3.interval < std::time::Duration::from_secs(1) {
                bail!("SNAPSHOT_INTERVAL: use at least 1s");
            }
            if s3.keep == 0 {
                bail!("SNAPSHOT_KEEP: keep at least 1 snapshot");
            }
            if s3.part_bytes < crate::backup::upload::MIN_PART_BYTES {
                bail!(
                    "SNAPSHOT_PART_BYTES: {} is below S3's smallest part, {} bytes (5 MiB)",
                    s3.part_bytes,
                    crate::backup::upload::MIN_PART_BYTES
                );
            }
        }
        if self.client_memory_max_bytes < crate::model::READ_ANSWER_BYTES {
            bail!(
                "CLIENT_MEMORY_MAX_BYTES: {} is below {} (64 MiB), the most one answer holds: \
                 a client reading such an answer would be closed for it",
                self.client_memory_max_bytes,
                crate::model::READ_ANSWER_BYTES
            );
        }
        if self.http.max_connections == 0 {
            bail!("HTTP_MAX_CONNECTIONS: must be at least 1");
        }
        Ok(())
    }
}
