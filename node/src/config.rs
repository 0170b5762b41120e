//! Configuration: command-line flags, then environment variables (FireScroll's names where it had
//! one), then a TOML file (`--config`), then defaults. A bad setting stops the node with a message
//! naming the setting and what is wrong with it.

use crate::service::{Limits, ServiceConfig};
use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;
use std::net::IpAddr;
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
    /// Address the HTTP servers listen on [default: 0.0.0.0].
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<IpAddr>,
    /// Public HTTP API port [default: 8190].
    #[arg(long, env = "API_PORT")]
    pub api_port: Option<u16>,
    /// Internal port: /metrics and /debug [default: 8191].
    #[arg(long, env = "INTERNAL_PORT")]
    pub internal_port: Option<u16>,
    /// Kafka seed brokers (host:port,...). Not supported by this build yet.
    #[arg(long, env = "KAFKA_SEEDS")]
    pub kafka_seeds: Option<String>,
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
    /// Seconds to keep serving after SIGTERM before closing, so load balancers can deregister
    /// the node [default: 0].
    #[arg(long, env = "SHUTDOWN_SLEEP_SEC")]
    pub shutdown_sleep_sec: Option<u64>,
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
    pub kafka_seeds: Option<String>,
    pub service: ServiceConfig,
    pub log_segment_bytes: u64,
    pub checkpoint_interval: Duration,
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
    pub shutdown_sleep: Duration,
}

impl Config {
    /// Reads flags and environment, then the TOML file they name, and applies defaults.
    pub fn load() -> anyhow::Result<Config> {
        Self::resolve(Settings::parse())
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
        let debug = pick!(debug, false);
        let level_name = pick!(log_level, if debug { "debug" } else { "info" }.to_string());
        let config = Config {
            db_path: pick!(db_path, PathBuf::from("./data")),
            partitions: pick!(partitions, 4),
            listen_addr: pick!(listen_addr, IpAddr::from([0, 0, 0, 0])),
            api_port: pick!(api_port, 8190),
            internal_port: pick!(internal_port, 8191),
            kafka_seeds: given.kafka_seeds.clone().or(file.kafka_seeds.clone()),
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
            },
            log_segment_bytes: pick!(log_segment_bytes, 16 << 20),
            checkpoint_interval: Duration::from_millis(pick!(checkpoint_interval_ms, 2000)),
            log_format: pick!(log_format, LogFormat::Text),
            log_level: level_name.parse().map_err(|_| {
                anyhow::anyhow!(
                    "LOG_LEVEL: {level_name:?} is not a level; use error, warn, info, debug or trace"
                )
            })?,
            shutdown_sleep: Duration::from_secs(pick!(shutdown_sleep_sec, 0)),
        };
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
        if self.api_port == self.internal_port && self.api_port != 0 {
            bail!(
                "API_PORT and INTERNAL_PORT are both {}: give them different ports",
                self.api_port
            );
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
        if self.checkpoint_interval.is_zero() {
            bail!("CHECKPOINT_INTERVAL_MS: must be greater than 0");
        }
        Ok(())
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
        assert!(c.kafka_seeds.is_none());
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
    }
}
