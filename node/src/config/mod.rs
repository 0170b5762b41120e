//! Configuration: command-line flags, then environment variables (FireScroll's names where it had
//! one), then a TOML file (`--config`), then defaults. A bad setting stops the node with a message
//! naming the setting and what is wrong with it.

pub mod fly;
mod resolve;
mod settings;
mod validate;

pub use settings::Settings;

use crate::api::resp::RespConfig;
use crate::cluster::ClusterSettings;
use crate::log::kafka::KafkaSettings;
use crate::plugins::PluginLimits;
use crate::service::ServiceConfig;
use anyhow::bail;
use clap::Parser;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub db_path: PathBuf,
    pub partitions: u32,
    pub listen_addr: IpAddr,
    pub api_port: u16,
    pub internal_port: u16,
    pub resp_port: u16,
    pub resp: RespConfig,
    /// Set when the HTTP API and Redis ports speak TLS (TLS_CERT_PATH and TLS_KEY_PATH).
    pub tls: Option<crate::api::tls::TlsSettings>,
    /// Set when the node uses the Kafka log.
    pub kafka: Option<KafkaSettings>,
    /// Set when gossip is on (ADVERTISE_ADDR or GOSSIP_PEERS).
    pub cluster: Option<ClusterSettings>,
    pub service: ServiceConfig,
    pub log_segment_bytes: u64,
    pub checkpoint_interval: Duration,
    pub drop_released_partitions: bool,
    pub read_index_max_bytes: usize,
    /// CLIENT_MEMORY_MAX_BYTES: requests arriving and answers not yet taken, node-wide.
    pub client_memory_max_bytes: usize,
    /// MIN_FREE_DISK_BYTES: writes are refused while DB_PATH's volume has less free (0: off).
    pub min_free_disk_bytes: u64,
    pub outcome_retention: u64,
    /// EXPIRY_TICK_MS: how often quiet partitions with due deadlines get a tick (zero: never).
    pub expiry_tick: Duration,
    /// WATCH_HISTORY_BYTES: the node's in-memory change history for watches.
    pub watch_history_bytes: usize,
    /// WATCH_LAG_BATCHES: how far behind a watch may fall before it is cut off.
    pub watch_lag_batches: usize,
    pub plugin_limits: PluginLimits,
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
    pub shutdown_sleep: Duration,
    pub shutdown_timeout: Duration,
    pub stall_threshold: Duration,
    /// REJECT_ENTRIES_AT: entries rejected unread, by position.
    pub reject_entries_at: std::collections::BTreeSet<crate::model::Position>,
    /// APPLY_THREADS: threads applying the owned partitions (0: one per core).
    pub apply_threads: usize,
    pub http: HttpLimits,
    /// Set when S3 snapshots are on (S3_BUCKET).
    pub s3: Option<crate::backup::S3Settings>,
    /// Settings taken from Fly.io's `FLY_*` variables (setting, value), logged at start.
    pub from_fly: Vec<(&'static str, String)>,
    /// The namespace (NAMESPACE; also on the embedded log, where it names snapshots).
    pub namespace: String,
    /// This node's name in snapshot keys: INSTANCE_ID, else host and API port.
    pub node_name: String,
    /// `--print-config`: print [`Config::summary`] and exit.
    pub print_only: bool,
}

/// Limits of the HTTP API's connections.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Longest wait for a request's headers (also for the next request on an idle connection).
    pub header_timeout: Duration,
    /// Longest a request body may take to arrive.
    pub body_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
}

impl Config {
    /// Reads flags and environment, then the TOML file they name, and applies defaults.
    /// `--help` and `--version` print and exit; an invalid flag or variable is one line.
    pub fn load() -> anyhow::Result<Config> {
        let settings = match Settings::try_parse() {
            Ok(settings) => settings,
            Err(e) if !e.use_stderr() => e.exit(),
            Err(e) => {
                let rendered = e.to_string();
                let line = rendered.lines().next().unwrap_or_default();
                bail!("{}", line.trim_start_matches("error: "));
            }
        };
        Self::resolve(settings)
    }
}

impl Config {
    /// Where this node listens, stores and gossips, as JSON (`--print-config`): what a
    /// deployment template must agree with.
    pub fn summary(&self) -> serde_json::Value {
        let kafka = self.kafka.as_ref();
        let cluster = self.cluster.as_ref();
        serde_json::json!({
            "listen_addr": self.listen_addr.to_string(),
            "api_port": self.api_port,
            "internal_port": self.internal_port,
            "resp_port": self.resp_port,
            "tls": self.tls.is_some(),
            "gossip_port": cluster.map(|c| c.gossip_port),
            "db_path": self.db_path,
            "log": if kafka.is_some() { "kafka" } else { "embedded" },
            "namespace": self.namespace,
            "region": kafka.map(|k| &k.region),
            "replica_group": kafka.map(|k| &k.replica_group),
            "instance_id": kafka.map(|k| &k.instance_id),
            "advertise_host": cluster.map(|c| &c.advertise_host),
            "gossip_peers": cluster.map(|c| &c.peers),
            "s3_bucket": self.s3.as_ref().map(|s| &s.bucket),
            "reject_entries_at": self.reject_entries_at.iter().map(|p| format!("{}:{}", p.partition, p.offset)).collect::<Vec<_>>(),
            "from_fly": self.from_fly.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        })
    }
}

#[cfg(test)]
mod tests;
