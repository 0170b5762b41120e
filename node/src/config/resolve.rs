//! Resolution: flags and environment over the TOML file over the defaults.

use super::{Config, HttpLimits, LogFormat, Settings};
use crate::api::resp::{FrameLimits, RespConfig};
use crate::cluster::ClusterSettings;
use crate::engine::EngineConfig;
use crate::log::kafka::{KafkaSettings, SaslMechanism};
use crate::plugins::PluginLimits;
use crate::service::{Limits, ServiceConfig, Tokens};
use anyhow::{Context, bail};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A path setting from flags/env, else the file; an empty value is unset (`TLS_CERT_PATH=`).
fn pick_path(given: &Option<PathBuf>, file: &Option<PathBuf>) -> Option<PathBuf> {
    given
        .clone()
        .or(file.clone())
        .filter(|p| !p.as_os_str().is_empty())
}

/// Arguments of one Redis command at most (unless one write may hold more): an `MGET`, `DEL`
/// or `HSET` past MAX_RECORDS_PER_REQUEST is answered with that limit's error, not a closed
/// connection.
const MAX_RESP_ARGS: u64 = 1 << 18;
use std::time::Duration;

impl Config {
    /// Merges `given` (flags/env) over its TOML file over the defaults, and validates.
    pub fn resolve(given: Settings) -> anyhow::Result<Config> {
        Self::resolve_with_fly(given, super::fly::FlyEnv::from_process())
    }

    /// [`Config::resolve`] as on a Fly machine with `fly`'s variables (or off Fly with `None`).
    pub fn resolve_with_fly(
        mut given: Settings,
        fly: Option<super::fly::FlyEnv>,
    ) -> anyhow::Result<Config> {
        let file = match &given.config {
            None => Settings::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("config file {}: cannot read it", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("config file {}: invalid", path.display()))?
            }
        };
        let from_fly = fly
            .map(|fly| fly.fill(&mut given, &file))
            .unwrap_or_default();
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
        let engine_defaults = EngineConfig::default();
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
                    // Far above what one write may hold (HSET's field-value pairs): a command
                    // over that gets the write's own error ("the limit is N
                    // (MAX_RECORDS_PER_REQUEST)") and the connection stays open, where an
                    // argument count over this closes it. The bound keeps the arguments' list
                    // (32 bytes each) near the bytes buffered for one command.
                    max_args: (2 * pick!(max_records_per_request, defaults.max_records) as u64 + 8)
                        .max(MAX_RESP_ARGS),
                    max_buffered: pick!(max_body_bytes, defaults.max_body_bytes),
                },
            },
            tls: match (
                pick_path(&given.tls_cert_path, &file.tls_cert_path),
                pick_path(&given.tls_key_path, &file.tls_key_path),
                pick_path(&given.tls_client_ca_path, &file.tls_client_ca_path),
            ) {
                (Some(cert_path), Some(key_path), client_ca_path) => {
                    Some(crate::api::tls::TlsSettings {
                        cert_path,
                        key_path,
                        client_ca_path,
                    })
                }
                (None, None, None) => None,
                (None, None, Some(_)) => bail!(
                    "TLS_CLIENT_CA_PATH: client certificates need TLS on: set TLS_CERT_PATH and TLS_KEY_PATH too"
                ),
                _ => bail!(
                    "TLS_CERT_PATH and TLS_KEY_PATH: set both (the certificate and its key) for TLS, or neither"
                ),
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
                watch_bookmark: Duration::from_millis(pick!(
                    watch_bookmark_ms,
                    service_defaults.watch_bookmark.as_millis() as u64
                )),
                // Decided below, once the log is known.
                entry_write_version: crate::model::ENTRY_VERSION,
            },
            log_segment_bytes: pick!(log_segment_bytes, 16 << 20),
            checkpoint_interval: Duration::from_millis(pick!(
                checkpoint_interval_ms,
                engine_defaults.checkpoint_interval.as_millis() as u64
            )),
            drop_released_partitions: pick!(drop_released_partitions, false),
            read_index_max_bytes: pick!(read_index_max_bytes, 512 << 20),
            client_memory_max_bytes: pick!(client_memory_max_bytes, 256 << 20),
            min_free_disk_bytes: pick!(
                min_free_disk_bytes,
                crate::service::DEFAULT_MIN_FREE_BYTES
            ),
            outcome_retention: pick!(outcome_retention, engine_defaults.outcome_retention),
            expiry_tick: Duration::from_millis(pick!(expiry_tick_ms, 1_000)),
            watch_history_bytes: pick!(watch_history_bytes, 32 << 20),
            watch_lag_batches: pick!(watch_lag_batches, 1024),
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
            stall_threshold: Duration::from_millis(pick!(
                stall_threshold_ms,
                engine_defaults.stall_threshold.as_millis() as u64
            )),
            reject_entries_at: pick!(reject_entries_at, Vec::new())
                .iter()
                .map(|p| parse_position(p))
                .collect::<anyhow::Result<_>>()?,
            apply_threads: pick!(apply_threads, 0),
            http: HttpLimits {
                header_timeout: Duration::from_millis(pick!(http_header_timeout_ms, 10_000)),
                body_timeout: Duration::from_millis(pick!(http_body_timeout_ms, 30_000)),
                max_connections: pick!(http_max_connections, 4096),
            },
            s3: None,
            namespace: pick!(namespace, "default".to_string()),
            node_name: String::new(),
            from_fly,
            print_only: given.print_config,
        };
        let mut config = config;
        if let Some(seeds) = given.kafka_seeds.clone().or(file.kafka_seeds.clone()) {
            // Set but empty (a template whose variable was unset): librdkafka would wait for
            // brokers forever without a word, and guessing the embedded log instead could split
            // a cluster's data without anyone noticing.
            if seeds.split(',').all(|seed| seed.trim().is_empty()) {
                bail!(
                    "KAFKA_SEEDS is set but names no broker: name them (host:port,host:port), \
                     or unset it for the embedded log"
                );
            }
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
            let hostname = hostname();
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
            // With TLS on the API port, peers ask each other over HTTPS: they must know whom
            // to trust.
            let peer_tls = match (
                &config.tls,
                pick_path(&given.peer_tls_ca_path, &file.peer_tls_ca_path),
            ) {
                (None, _) => None,
                (Some(_), Some(ca_path)) => Some(crate::cluster::PeerTlsSettings {
                    ca_path,
                    name: given.peer_tls_name.clone().or(file.peer_tls_name.clone()),
                }),
                (Some(_), None) => bail!(
                    "PEER_TLS_CA_PATH: with TLS_CERT_PATH and ADVERTISE_ADDR the nodes of a region \
                     ask each other for reads over HTTPS; name the CA that issues their \
                     certificates (a PEM file), so each can check the others'"
                ),
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
            let auth = crate::cluster::GossipAuth::new(&pick!(gossip_keys, Vec::new()))?;
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
                // A peer answers at most a request's worth of records, each at most an entry:
                // anything longer is not a FireScroll answer.
                max_answer_bytes: config
                    .service
                    .limits
                    .max_records
                    .saturating_mul(config.service.limits.max_entry_bytes)
                    .saturating_add(1 << 20),
                max_keys_per_request: config.service.limits.max_records,
                auth,
                tls: peer_tls,
            });
        }
        // Nodes reading a Kafka log may run an older release during a rolling upgrade: they
        // get entries of v2 and later only once told every node applies them (docs/log-entry-v1.md).
        config.service.entry_write_version = pick!(
            entry_write_version,
            if config.kafka.is_some() {
                1
            } else {
                crate::model::ENTRY_VERSION
            }
        );
        if !(1..=crate::model::ENTRY_VERSION).contains(&config.service.entry_write_version) {
            bail!(
                "ENTRY_WRITE_VERSION: {} is not a log entry format this release writes; use 1 to \
                 {} (the newest, once every node of every region runs a release that applies \
                 it)",
                config.service.entry_write_version,
                crate::model::ENTRY_VERSION
            );
        }
        config.node_name = match &config.kafka {
            Some(kafka) => kafka.instance_id.clone(),
            None => pick!(instance_id, format!("{}-{}", hostname(), config.api_port)),
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(bucket) = given
            .s3_bucket
            .clone()
            .or(file.s3_bucket.clone())
            .or_else(|| env("BUCKET_NAME"))
        {
            let interval_text = pick!(snapshot_interval, "10m".to_string());
            let interval = humantime::parse_duration(&interval_text).map_err(|e| {
                anyhow::anyhow!(
                    "SNAPSHOT_INTERVAL: {interval_text:?} is not a duration like 10m: {e}"
                )
            })?;
            let grace_text = pick!(snapshot_orphan_grace, "1h".to_string());
            let orphan_grace = humantime::parse_duration(&grace_text).map_err(|e| {
                anyhow::anyhow!(
                    "SNAPSHOT_ORPHAN_GRACE: {grace_text:?} is not a duration like 1h: {e}"
                )
            })?;
            let log_retention = match given.log_retention.clone().or(file.log_retention.clone()) {
                None => None,
                Some(text) => Some(humantime::parse_duration(&text).map_err(|e| {
                    anyhow::anyhow!("LOG_RETENTION: {text:?} is not a duration like 7d: {e}")
                })?),
            };
            let checksums = pick!(s3_checksums, "when_required".to_string());
            let checksums_when_required = match checksums.as_str() {
                "when_required" => true,
                "when_supported" => false,
                other => bail!("S3_CHECKSUMS: {other:?} is not when_required or when_supported"),
            };
            config.s3 = Some(crate::backup::S3Settings {
                bucket,
                prefix: pick!(s3_prefix, "firescroll/{namespace}".to_string()),
                endpoint: given
                    .s3_endpoint
                    .clone()
                    .or(file.s3_endpoint.clone())
                    .or_else(|| env("AWS_ENDPOINT_URL_S3")),
                region: given
                    .s3_region
                    .clone()
                    .or(file.s3_region.clone())
                    .or_else(|| env("AWS_REGION"))
                    .unwrap_or_else(|| "us-east-1".to_string()),
                access_key: env("AWS_ACCESS_KEY_ID"),
                secret_key: env("AWS_SECRET_ACCESS_KEY"),
                checksums_when_required,
                interval,
                min_entries: pick!(snapshot_min_entries, 1),
                keep: pick!(snapshot_keep, 3),
                part_bytes: pick!(snapshot_part_bytes, 8 << 20),
                orphan_grace,
                log_retention,
            });
        }
        config.validate()?;
        Ok(config)
    }
}

/// This machine's host name (HOSTNAME, /etc/hostname), or `firescroll`.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "firescroll".to_string())
}

/// ADVERTISE_ADDR as host and optional port: `host`, `host:port`, `1.2.3.4`, `fdaa::3`,
/// `[fdaa::3]:8190`.
pub(super) fn split_advertise(value: &str) -> anyhow::Result<(String, Option<u16>)> {
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

/// One `partition:offset` of REJECT_ENTRIES_AT.
fn parse_position(text: &str) -> anyhow::Result<crate::model::Position> {
    let parsed = text.trim().split_once(':').and_then(|(partition, offset)| {
        Some(crate::model::Position {
            partition: partition.trim().parse().ok()?,
            offset: offset.trim().parse().ok()?,
        })
    });
    parsed.ok_or_else(|| {
        anyhow::anyhow!(
            "REJECT_ENTRIES_AT: {text:?} is not a log position; write partition:offset, e.g. 2:1050"
        )
    })
}
