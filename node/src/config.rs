//! Configuration: command-line flags, then environment variables (FireScroll's names where it had
//! one), then a TOML file (`--config`), then defaults. A bad setting stops the node with a message
//! naming the setting and what is wrong with it.

use crate::api::resp::{FrameLimits, RespConfig};
use crate::cluster::ClusterSettings;
use crate::log::kafka::{KafkaSettings, SaslMechanism};
use crate::plugins::PluginLimits;
use crate::service::{Limits, ServiceConfig, Tokens};
use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Settings as given, before defaults. One struct serves flags, environment and the TOML file
/// (whose keys are these field names, e.g. `api_port = 8190`).
#[derive(Debug, Default, Parser, Deserialize)]
#[command(
    name = "firescroll",
    version,
    about = "FireScroll: a config database to deploy everywhere. With no settings, runs one dev \
             node on the embedded log with data in ./data."
)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with settings (keys are the long flag names with `_`, e.g. `api_port = 8190`).
    #[arg(long, env = "FIRESCROLL_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory for the store and the embedded log [default: ./data].
    #[arg(long, env = "DB_PATH")]
    pub db_path: Option<PathBuf>,
    /// Number of partitions, fixed when the namespace is created [default: 4].
    #[arg(long, env = "PARTITIONS")]
    pub partitions: Option<u32>,
    /// Address the HTTP and Redis servers listen on; set 0.0.0.0 (or ::) to accept other hosts
    /// [default: 127.0.0.1].
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<IpAddr>,
    /// Public HTTP API port [default: 8190].
    #[arg(long, env = "API_PORT")]
    pub api_port: Option<u16>,
    /// Internal port: /metrics and /debug [default: 8191].
    #[arg(long, env = "INTERNAL_PORT")]
    pub internal_port: Option<u16>,
    /// Tokens that may read, comma-separated. With no tokens at all, the node is open.
    #[arg(
        long,
        env = "READ_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub read_tokens: Option<Vec<String>>,
    /// Tokens that may read and write, comma-separated.
    #[arg(
        long,
        env = "WRITE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub write_tokens: Option<Vec<String>>,
    /// Tokens that may do everything, comma-separated.
    #[arg(
        long,
        env = "ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_tokens: Option<Vec<String>>,
    /// Redis protocol port [default: 6379].
    #[arg(long, env = "RESP_PORT")]
    pub resp_port: Option<u16>,
    /// Redis connections served at once [default: 10000].
    #[arg(long, env = "RESP_MAX_CLIENTS")]
    pub resp_max_clients: Option<usize>,
    /// Close Redis connections idle this many seconds; 0 never [default: 300].
    #[arg(long, env = "RESP_IDLE_TIMEOUT_SEC")]
    pub resp_idle_timeout_sec: Option<u64>,
    /// Gossip (SWIM, UDP) port, for nodes of one region to find each other [default: 8192].
    #[arg(long, env = "GOSSIP_PORT")]
    pub gossip_port: Option<u16>,
    /// The host (or FireScroll's `host:api_port`) other nodes reach this one at. Set: gossip is
    /// on and this node answers any read, asking owners for partitions it does not serve.
    #[arg(long, env = "ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Gossip seeds, `host:gossip_port,...`; a DNS name stands for all its addresses.
    #[arg(long, env = "GOSSIP_PEERS", value_delimiter = ',')]
    pub gossip_peers: Option<Vec<String>>,
    /// How often this node re-sends its card (addresses, served partitions), ms [default: 1000].
    #[arg(long, env = "GOSSIP_BROADCAST_MS")]
    pub gossip_broadcast_ms: Option<u64>,
    /// Bound of one read proxied to another node, ms, beyond any min_offsets wait [default: 2000].
    #[arg(long, env = "PROXY_TIMEOUT_MS")]
    pub proxy_timeout_ms: Option<u64>,
    /// Kafka seed brokers (host:port,...). Set: the Kafka log; unset: the embedded log.
    #[arg(long, env = "KAFKA_SEEDS")]
    pub kafka_seeds: Option<String>,
    /// Namespace: topic names and the consumer group derive from it [default: default].
    #[arg(long, env = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Region of this node; one consumer group per region and replica group [default: local].
    #[arg(long, env = "REGION")]
    pub region: Option<String>,
    /// Replica group: each holds a full copy of every partition [default: default].
    #[arg(long, env = "REPLICA_GROUP")]
    pub replica_group: Option<String>,
    /// Static group membership id, unique per node (default: `<hostname>-<API_PORT>`).
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Group session timeout, ms: how long a dead node keeps its partitions [default: 10000].
    #[arg(long, env = "KAFKA_SESSION_MS")]
    pub kafka_session_ms: Option<u64>,
    /// Group heartbeat interval, ms [default: a third of KAFKA_SESSION_MS].
    #[arg(long, env = "KAFKA_HEARTBEAT_MS")]
    pub kafka_heartbeat_ms: Option<u64>,
    /// Longest a consumer fetch waits at the broker for new entries, ms [default: 50].
    #[arg(long, env = "KAFKA_FETCH_WAIT_MS")]
    pub kafka_fetch_wait_ms: Option<u64>,
    /// SASL user (with KAFKA_PASS).
    #[arg(long, env = "KAFKA_USER")]
    pub kafka_user: Option<String>,
    /// SASL password (with KAFKA_USER).
    #[arg(long, env = "KAFKA_PASS", hide_env_values = true)]
    pub kafka_pass: Option<String>,
    /// SASL mechanism: SCRAM-SHA-256 or SCRAM-SHA-512 [default: SCRAM-SHA-256].
    #[arg(long, env = "KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,
    /// TLS to the brokers (FireScroll's KAFKA_TLS=1).
    #[arg(long, env = "KAFKA_TLS", value_parser = clap::builder::BoolishValueParser::new())]
    pub kafka_tls: Option<bool>,
    /// CA bundle for KAFKA_TLS.
    #[arg(long, env = "KAFKA_TLS_CA_PATH")]
    pub kafka_tls_ca_path: Option<PathBuf>,
    /// How long a write waits for Kafka before failing with 503, ms [default: 5000].
    #[arg(long, env = "KAFKA_PRODUCE_TIMEOUT_MS")]
    pub kafka_produce_timeout_ms: Option<u64>,
    /// Producer linger, ms [default: 1].
    #[arg(long, env = "KAFKA_LINGER_MS")]
    pub kafka_linger_ms: Option<u64>,
    /// Producer compression: none, gzip, snappy, lz4 [default: lz4].
    #[arg(long, env = "KAFKA_COMPRESSION")]
    pub kafka_compression: Option<String>,
    /// Create missing topics at start (else refuse to start) [default: true].
    #[arg(long, env = "KAFKA_CREATE_TOPICS", value_parser = clap::builder::BoolishValueParser::new())]
    pub kafka_create_topics: Option<bool>,
    /// Replication factor of topics FireScroll creates [default: 1].
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR")]
    pub kafka_replication_factor: Option<i32>,
    /// Largest request body in bytes [default: 8388608].
    #[arg(long, env = "MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most records (or keys) in one request [default: 1000].
    #[arg(long, env = "MAX_RECORDS_PER_REQUEST")]
    pub max_records_per_request: Option<usize>,
    /// Largest pk or sk in bytes [default: 2048].
    #[arg(long, env = "MAX_KEY_BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Largest record data (JSON text) in bytes [default: 524288].
    #[arg(long, env = "MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Largest log entry in bytes [default: 1048576].
    #[arg(long, env = "MAX_ENTRY_BYTES")]
    pub max_entry_bytes: Option<usize>,
    /// Most records one list call returns [default: 10000].
    #[arg(long, env = "MAX_LIST_RECORDS")]
    pub max_list_records: Option<usize>,
    /// How long `"wait": true` writes wait for their outcome, ms [default: 10000].
    #[arg(long, env = "WRITE_WAIT_TIMEOUT_MS")]
    pub write_wait_timeout_ms: Option<u64>,
    /// How long reads wait for `min_offsets`, ms [default: 5000].
    #[arg(long, env = "READ_WAIT_TIMEOUT_MS")]
    pub read_wait_timeout_ms: Option<u64>,
    /// Embedded log segment size in bytes; applied segments are deleted whole [default: 16777216].
    #[arg(long, env = "LOG_SEGMENT_BYTES")]
    pub log_segment_bytes: Option<u64>,
    /// How often the store is made durable and applied log segments released, ms [default: 2000].
    #[arg(long, env = "CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// Log output: `text` (for terminals) or `json` [default: text].
    #[arg(long, env = "LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level: error, warn, info, debug, trace [default: info].
    #[arg(long, env = "LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Debug logging (FireScroll's DEBUG=1).
    #[arg(long, env = "DEBUG", value_parser = clap::builder::BoolishValueParser::new())]
    pub debug: Option<bool>,
    /// Delete a partition's local data when this node loses it [default: false: keep it, so
    /// getting it back is quick].
    #[arg(long, env = "DROP_RELEASED_PARTITIONS", value_parser = clap::builder::BoolishValueParser::new())]
    pub drop_released_partitions: Option<bool>,
    /// Memory for the in-memory read indexes of all partitions together, bytes; split evenly
    /// across the partitions, and a partition larger than its share is read from the store only;
    /// 0 turns the index off [default: 536870912].
    #[arg(long, env = "READ_INDEX_MAX_BYTES")]
    pub read_index_max_bytes: Option<usize>,
    /// Fuel (about one per wasm instruction) a plugin call may burn; the same on every node of a
    /// namespace [default: 50000000].
    #[arg(long, env = "PLUGIN_FUEL")]
    pub plugin_fuel: Option<u64>,
    /// Memory one plugin instance may grow to, bytes [default: 67108864].
    #[arg(long, env = "PLUGIN_MEMORY_BYTES")]
    pub plugin_memory_bytes: Option<usize>,
    /// Largest plugin module accepted, bytes [default: 4194304].
    #[arg(long, env = "PLUGIN_MAX_BYTES")]
    pub plugin_max_bytes: Option<usize>,
    /// Entries per partition whose outcomes are kept for `/records/outcomes` [default: 1000000].
    #[arg(long, env = "OUTCOME_RETENTION")]
    pub outcome_retention: Option<u64>,
    /// Seconds to keep serving after SIGTERM before closing, so load balancers can deregister
    /// the node [default: 0].
    #[arg(long, env = "SHUTDOWN_SLEEP_SEC")]
    pub shutdown_sleep_sec: Option<u64>,
    /// After SIGTERM (and SHUTDOWN_SLEEP_SEC), longest wait for open requests and appliers before
    /// the node exits anyway, ms [default: 10000].
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// A partition whose applier is on one batch of entries longer than this is reported stalled
    /// in /ready, /debug/partitions and metrics, ms [default: 10000].
    #[arg(long, env = "STALL_THRESHOLD_MS")]
    pub stall_threshold_ms: Option<u64>,
    /// HTTP: longest wait for a request's headers, and for the next request on an idle
    /// keep-alive connection, ms [default: 10000].
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_MS")]
    pub http_header_timeout_ms: Option<u64>,
    /// HTTP: longest a request body may take to arrive, ms [default: 30000].
    #[arg(long, env = "HTTP_BODY_TIMEOUT_MS")]
    pub http_body_timeout_ms: Option<u64>,
    /// HTTP: most open connections on the API port; more are closed at once [default: 4096].
    #[arg(long, env = "HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
}

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
    /// Set when the node uses the Kafka log.
    pub kafka: Option<KafkaSettings>,
    /// Set when gossip is on (ADVERTISE_ADDR or GOSSIP_PEERS).
    pub cluster: Option<ClusterSettings>,
    pub service: ServiceConfig,
    pub log_segment_bytes: u64,
    pub checkpoint_interval: Duration,
    pub drop_released_partitions: bool,
    pub read_index_max_bytes: usize,
    pub outcome_retention: u64,
    pub plugin_limits: PluginLimits,
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
    pub shutdown_sleep: Duration,
    pub shutdown_timeout: Duration,
    pub stall_threshold: Duration,
    pub http: HttpLimits,
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

    /// Merges `given` (flags/env) over its TOML file over the defaults, and validates.
    pub fn resolve(given: Settings) -> anyhow::Result<Config> {
        let file = match &given.config {
            None => Settings::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("config file {}: cannot read it", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("config file {}: invalid", path.display()))?
            }
        };
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                given
                    .$field
                    .clone()
                    .or(file.$field.clone())
                    .unwrap_or($default)
            };
        }
        let defaults = Limits::default();
        let service_defaults = ServiceConfig::default();
        let plugin_defaults = PluginLimits::default();
        let debug = pick!(debug, false);
        let level_name = pick!(log_level, if debug { "debug" } else { "info" }.to_string());
        let config = Config {
            db_path: pick!(db_path, PathBuf::from("./data")),
            partitions: pick!(partitions, 4),
            listen_addr: pick!(listen_addr, IpAddr::from([127, 0, 0, 1])),
            api_port: pick!(api_port, 8190),
            internal_port: pick!(internal_port, 8191),
            resp_port: pick!(resp_port, 6379),
            resp: RespConfig {
                max_clients: pick!(resp_max_clients, 10_000),
                idle_timeout: match pick!(resp_idle_timeout_sec, 300) {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
                limits: FrameLimits {
                    max_bulk: pick!(max_body_bytes, defaults.max_body_bytes) as u64,
                    max_args: 2 * pick!(max_records_per_request, defaults.max_records) as u64 + 8,
                    max_buffered: pick!(max_body_bytes, defaults.max_body_bytes),
                },
            },
            kafka: None,
            cluster: None,
            service: ServiceConfig {
                limits: Limits {
                    max_body_bytes: pick!(max_body_bytes, defaults.max_body_bytes),
                    max_records: pick!(max_records_per_request, defaults.max_records),
                    max_key_bytes: pick!(max_key_bytes, defaults.max_key_bytes),
                    max_value_bytes: pick!(max_value_bytes, defaults.max_value_bytes),
                    max_entry_bytes: pick!(max_entry_bytes, defaults.max_entry_bytes),
                    max_list_records: pick!(max_list_records, defaults.max_list_records),
                },
                write_wait_timeout: Duration::from_millis(pick!(
                    write_wait_timeout_ms,
                    service_defaults.write_wait_timeout.as_millis() as u64
                )),
                read_wait_timeout: Duration::from_millis(pick!(
                    read_wait_timeout_ms,
                    service_defaults.read_wait_timeout.as_millis() as u64
                )),
                tokens: Tokens::new(
                    &pick!(read_tokens, Vec::new()),
                    &pick!(write_tokens, Vec::new()),
                    &pick!(admin_tokens, Vec::new()),
                ),
            },
            log_segment_bytes: pick!(log_segment_bytes, 16 << 20),
            checkpoint_interval: Duration::from_millis(pick!(checkpoint_interval_ms, 2000)),
            drop_released_partitions: pick!(drop_released_partitions, false),
            read_index_max_bytes: pick!(read_index_max_bytes, 512 << 20),
            outcome_retention: pick!(outcome_retention, 1_000_000),
            plugin_limits: PluginLimits {
                fuel: pick!(plugin_fuel, plugin_defaults.fuel),
                memory_bytes: pick!(plugin_memory_bytes, plugin_defaults.memory_bytes),
                max_module_bytes: pick!(plugin_max_bytes, plugin_defaults.max_module_bytes),
                max_output_bytes: pick!(max_value_bytes, defaults.max_value_bytes),
                ..plugin_defaults
            },
            log_format: pick!(log_format, LogFormat::Text),
            log_level: level_name.parse().map_err(|_| {
                anyhow::anyhow!(
                    "LOG_LEVEL: {level_name:?} is not a level; use error, warn, info, debug or trace"
                )
            })?,
            shutdown_sleep: Duration::from_secs(pick!(shutdown_sleep_sec, 0)),
            shutdown_timeout: Duration::from_millis(pick!(shutdown_timeout_ms, 10_000)),
            stall_threshold: Duration::from_millis(pick!(stall_threshold_ms, 10_000)),
            http: HttpLimits {
                header_timeout: Duration::from_millis(pick!(http_header_timeout_ms, 10_000)),
                body_timeout: Duration::from_millis(pick!(http_body_timeout_ms, 30_000)),
                max_connections: pick!(http_max_connections, 4096),
            },
        };
        let mut config = config;
        if let Some(seeds) = given.kafka_seeds.clone().or(file.kafka_seeds.clone()) {
            let session = Duration::from_millis(pick!(kafka_session_ms, 10_000));
            let user = given.kafka_user.clone().or(file.kafka_user.clone());
            let pass = given.kafka_pass.clone().or(file.kafka_pass.clone());
            let sasl = match (user, pass) {
                (Some(u), Some(p)) => Some((u, p)),
                (None, None) => None,
                _ => bail!("KAFKA_USER and KAFKA_PASS: set both for SASL, or neither"),
            };
            let mechanism_name = pick!(kafka_sasl_mechanism, "SCRAM-SHA-256".to_string());
            let compression = pick!(kafka_compression, "lz4".to_string());
            if !["none", "gzip", "snappy", "lz4"].contains(&compression.as_str()) {
                bail!("KAFKA_COMPRESSION: {compression:?} is not one of none, gzip, snappy, lz4");
            }
            let hostname = std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "firescroll".to_string());
            config.kafka = Some(KafkaSettings {
                seeds,
                namespace: pick!(namespace, "default".to_string()),
                region: pick!(region, "local".to_string()),
                replica_group: pick!(replica_group, "default".to_string()),
                instance_id: pick!(instance_id, format!("{hostname}-{}", config.api_port)),
                partitions: config.partitions,
                session_timeout: session,
                heartbeat_interval: Duration::from_millis(pick!(
                    kafka_heartbeat_ms,
                    (session.as_millis() as u64 / 3).max(100)
                )),
                fetch_wait: Duration::from_millis(pick!(kafka_fetch_wait_ms, 50)),
                sasl,
                sasl_mechanism: SaslMechanism::parse(&mechanism_name).ok_or_else(|| {
                    anyhow::anyhow!(
                        "KAFKA_SASL_MECHANISM: {mechanism_name:?} is not SCRAM-SHA-256 or SCRAM-SHA-512"
                    )
                })?,
                tls: pick!(kafka_tls, false),
                tls_ca_path: given.kafka_tls_ca_path.clone().or(file.kafka_tls_ca_path.clone()),
                produce_timeout: Duration::from_millis(pick!(kafka_produce_timeout_ms, 5000)),
                linger: Duration::from_millis(pick!(kafka_linger_ms, 1)),
                compression,
                create_topics: pick!(kafka_create_topics, true),
                replication_factor: pick!(kafka_replication_factor, 1),
                max_entry_bytes: config.service.limits.max_entry_bytes,
            });
        }
        let advertise = given.advertise_addr.clone().or(file.advertise_addr.clone());
        let peers: Vec<String> = pick!(gossip_peers, Vec::new())
            .into_iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if advertise.is_some() || !peers.is_empty() {
            let Some(advertise) = advertise else {
                bail!(
                    "GOSSIP_PEERS is set but ADVERTISE_ADDR is not: set the address other nodes reach this one at"
                );
            };
            let Some(kafka) = &config.kafka else {
                bail!(
                    "ADVERTISE_ADDR/GOSSIP_PEERS need KAFKA_SEEDS: on the embedded log a node is alone and serves every partition"
                );
            };
            let (host, api_port) = split_advertise(&advertise)?;
            if let Some(port) = api_port
                && port != config.api_port
            {
                bail!(
                    "ADVERTISE_ADDR: port {port} is not API_PORT ({}); give the host alone, or host:API_PORT",
                    config.api_port
                );
            }
            for peer in &peers {
                if peer
                    .rsplit_once(':')
                    .is_none_or(|(_, port)| port.parse::<u16>().is_err())
                {
                    bail!("GOSSIP_PEERS: {peer:?} is not host:port");
                }
            }
            let gossip_port = pick!(gossip_port, 8192);
            let tokens = &config.service.tokens;
            config.cluster = Some(ClusterSettings {
                bind: SocketAddr::new(config.listen_addr, gossip_port),
                advertise_host: host,
                gossip_port,
                api_port: config.api_port,
                resp_port: config.resp_port,
                peers,
                broadcast_interval: Duration::from_millis(pick!(gossip_broadcast_ms, 1000).max(50)),
                read_timeout: Duration::from_millis(pick!(proxy_timeout_ms, 2000).max(1)),
                namespace: kafka.namespace.clone(),
                region: kafka.region.clone(),
                replica_group: kafka.replica_group.clone(),
                instance_id: kafka.instance_id.clone(),
                token: tokens.peer_token(),
            });
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
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
        if self.http.max_connections == 0 {
            bail!("HTTP_MAX_CONNECTIONS: must be at least 1");
        }
        Ok(())
    }
}

/// ADVERTISE_ADDR as host and optional port: `host`, `host:port`, `1.2.3.4`, `fdaa::3`,
/// `[fdaa::3]:8190`.
fn split_advertise(value: &str) -> anyhow::Result<(String, Option<u16>)> {
    let value = value.trim();
    if value.is_empty() {
        bail!("ADVERTISE_ADDR: empty; set the address other nodes reach this one at");
    }
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok((ip.to_string(), None));
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), Some(addr.port())));
    }
    match value.rsplit_once(':') {
        None => Ok((value.to_string(), None)),
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            let port = port.parse().map_err(|_| {
                anyhow::anyhow!("ADVERTISE_ADDR: {value:?}: {port:?} is not a port")
            })?;
            Ok((host.to_string(), Some(port)))
        }
        Some(_) => bail!("ADVERTISE_ADDR: {value:?} is not a host, host:port or [ipv6]:port"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        Settings::try_parse_from(std::iter::once("firescroll").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_are_a_dev_node() {
        let c = Config::resolve(Settings::default()).unwrap();
        assert_eq!(c.db_path, PathBuf::from("./data"));
        assert_eq!((c.api_port, c.internal_port, c.partitions), (8190, 8191, 4));
        assert_eq!(c.resp_port, 6379);
        assert!(
            c.listen_addr.is_loopback(),
            "an open dev node is reachable from this machine only"
        );
        assert!(c.kafka.is_none());
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fs.toml");
        std::fs::write(
            &file,
            "api_port = 9000\npartitions = 8\nlog_format = \"json\"\n",
        )
        .unwrap();
        let c = Config::resolve(settings(&[
            "--config",
            file.to_str().unwrap(),
            "--api-port",
            "9100",
        ]))
        .unwrap();
        assert_eq!(c.api_port, 9100);
        assert_eq!(c.partitions, 8);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.internal_port, 8191);
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let err = |s: Settings| Config::resolve(s).unwrap_err().to_string();
        assert!(err(settings(&["--partitions", "0"])).starts_with("PARTITIONS"));
        assert!(err(settings(&["--api-port", "1", "--internal-port", "1"])).contains("API_PORT"));
        assert!(err(settings(&["--log-level", "loud"])).starts_with("LOG_LEVEL"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fs.toml");
        std::fs::write(&file, "api_prot = 1\n").unwrap();
        let e = Config::resolve(settings(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown field `api_prot`"),
            "{e:#}"
        );
        assert!(Settings::try_parse_from(["firescroll", "--api-port", "http"]).is_err());
        let kafka = |extra: &[&str]| {
            let mut args = vec!["--kafka-seeds", "127.0.0.1:9092"];
            args.extend_from_slice(extra);
            err(settings(&args))
        };
        assert!(kafka(&["--namespace", "a_b"]).starts_with("NAMESPACE"));
        assert!(kafka(&["--kafka-user", "u"]).contains("KAFKA_USER and KAFKA_PASS"));
        assert!(kafka(&["--kafka-sasl-mechanism", "PLAIN"]).starts_with("KAFKA_SASL_MECHANISM"));
        assert!(kafka(&["--kafka-compression", "brotli"]).starts_with("KAFKA_COMPRESSION"));
    }

    #[test]
    fn kafka_settings_follow_firescroll_names() {
        let c = Config::resolve(settings(&[
            "--kafka-seeds",
            "b:9092",
            "--namespace",
            "prod",
            "--region",
            "iad",
            "--replica-group",
            "rg2",
            "--instance-id",
            "n1",
            "--kafka-session-ms",
            "6000",
            "--kafka-user",
            "u",
            "--kafka-pass",
            "p",
            "--kafka-tls",
            "1",
        ]))
        .unwrap();
        let k = c.kafka.unwrap();
        assert_eq!(k.group_id(), "firescroll_prod_iad_rg2");
        assert_eq!(k.instance_id, "n1");
        assert_eq!(k.heartbeat_interval, Duration::from_millis(2000));
        assert_eq!(k.base_config().get("security.protocol"), Some("sasl_ssl"));
    }

    #[test]
    fn gossip_is_on_with_an_advertise_address_and_needs_kafka() {
        let c = Config::resolve(settings(&["--kafka-seeds", "b:9092"])).unwrap();
        assert!(
            c.cluster.is_none(),
            "no ADVERTISE_ADDR/GOSSIP_PEERS: gossip off"
        );
        let c = Config::resolve(settings(&[
            "--kafka-seeds",
            "b:9092",
            "--advertise-addr",
            "fdaa::3",
            "--gossip-peers",
            "iad.app.internal:8192, 10.0.0.2:8192",
            "--read-tokens",
            "r1",
            "--write-tokens",
            "w1",
        ]))
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.advertise_host, "fdaa::3");
        assert_eq!(cluster.gossip_port, 8192);
        assert_eq!(cluster.peers, ["iad.app.internal:8192", "10.0.0.2:8192"]);
        assert_eq!(cluster.broadcast_interval, Duration::from_millis(1000));
        assert_eq!(
            cluster.token.as_deref(),
            Some("r1"),
            "the least powerful token"
        );

        let error = |args: &[&str]| Config::resolve(settings(args)).unwrap_err().to_string();
        assert!(error(&["--advertise-addr", "10.0.0.1"]).contains("need KAFKA_SEEDS"));
        assert!(
            error(&["--kafka-seeds", "b:9092", "--gossip-peers", "x:1"])
                .contains("ADVERTISE_ADDR is not")
        );
        assert!(
            error(&[
                "--kafka-seeds",
                "b:9092",
                "--advertise-addr",
                "h",
                "--gossip-peers",
                "x"
            ])
            .contains("is not host:port")
        );
        assert!(
            error(&["--kafka-seeds", "b:9092", "--advertise-addr", "h:9999"])
                .contains("is not API_PORT")
        );
    }

    #[test]
    fn plugin_limits_are_settings() {
        let c = Config::resolve(settings(&[
            "--plugin-fuel",
            "1000",
            "--plugin-memory-bytes",
            "131072",
            "--plugin-max-bytes",
            "2048",
            "--max-value-bytes",
            "4096",
        ]))
        .unwrap();
        let limits = &c.plugin_limits;
        assert_eq!(
            (limits.fuel, limits.memory_bytes, limits.max_module_bytes),
            (1000, 131072, 2048)
        );
        assert_eq!(
            limits.max_output_bytes, 4096,
            "a transform's output is a value"
        );
        let error = Config::resolve(settings(&["--plugin-fuel", "0"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("PLUGIN_FUEL"), "{error}");
    }

    #[test]
    fn advertise_addresses_in_every_form() {
        let split = |v: &str| split_advertise(v).unwrap();
        assert_eq!(split("node1"), ("node1".into(), None));
        assert_eq!(split("node1:8190"), ("node1".into(), Some(8190)));
        assert_eq!(split("10.1.2.3"), ("10.1.2.3".into(), None));
        assert_eq!(split("10.1.2.3:8190"), ("10.1.2.3".into(), Some(8190)));
        assert_eq!(split("fdaa:0:1::3"), ("fdaa:0:1::3".into(), None));
        assert_eq!(split("[fdaa::3]:8190"), ("fdaa::3".into(), Some(8190)));
        assert!(split_advertise("").is_err());
        assert!(split_advertise("host:http").is_err());
    }
}
