//! The settings schema: one struct for flags, environment variables and the TOML file.

use super::LogFormat;
use clap::Parser;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;

/// Settings as given, before defaults. One struct serves flags, environment and the TOML file
/// (whose keys are these field names, e.g. `api_port = 8190`).
#[derive(Debug, Default, Parser, Deserialize)]
#[command(
    name = "firescroll",
    version,
    about = "FireScroll: a config database to deploy everywhere. With no settings, runs one dev \
             node on the embedded log with data in ./data.",
    after_help = "Copy a namespace into another (more partitions, another region): \
                  firescroll copy --help"
)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with settings (keys are the long flag names with `_`, e.g. `api_port = 8190`).
    #[arg(long, env = "FIRESCROLL_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the settings this node would run with (after flags, environment, file, Fly.io and
    /// defaults) as JSON, and exit without starting.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
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
    /// PEM certificate chain (leaf first): with TLS_KEY_PATH, the HTTP API and the Redis port
    /// speak TLS only (HTTPS, `rediss://`). Read again when the file changes or on SIGHUP.
    #[arg(long, env = "TLS_CERT_PATH")]
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key of TLS_CERT_PATH's certificate (PKCS#8, RSA or EC).
    #[arg(long, env = "TLS_KEY_PATH")]
    pub tls_key_path: Option<PathBuf>,
    /// PEM CA certificates: with TLS on, every client must present a certificate one of them
    /// signed (mutual TLS), as Redis's `tls-auth-clients yes`.
    #[arg(long, env = "TLS_CLIENT_CA_PATH")]
    pub tls_client_ca_path: Option<PathBuf>,
    /// With TLS and gossip: PEM certificates of the CA that issues the nodes' certificates,
    /// which a node trusts when it asks its peers (over HTTPS) for reads.
    #[arg(long, env = "PEER_TLS_CA_PATH")]
    pub peer_tls_ca_path: Option<PathBuf>,
    /// With TLS and gossip: the name every node's certificate carries, checked when a node asks
    /// its peers for reads [default: the first DNS name of this node's certificate, else the
    /// peer's IP address].
    #[arg(long, env = "PEER_TLS_NAME")]
    pub peer_tls_name: Option<String>,
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
    /// Keys that sign gossip, `key,...` (at most 8, each at least 16 bytes: `openssl rand
    /// -base64 32`).
    /// The first signs what this node sends; any listed key is accepted; `none` stands for
    /// unsigned (first: send unsigned; anywhere: accept unsigned). The same list on every
    /// node of a region; rotate by adding a key second, then first, then dropping the old
    /// [default: unset, unsigned gossip].
    #[arg(
        long,
        env = "GOSSIP_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub gossip_keys: Option<Vec<String>>,
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
    /// Memory for client connections (Redis and HTTP), node-wide: requests still arriving and
    /// answers their clients have not taken yet; past it, the connections holding the most are
    /// closed, as Redis 7 closes clients past `maxmemory-clients`. At least 67108864 (one
    /// answer's most) [default: 268435456].
    #[arg(long, env = "CLIENT_MEMORY_MAX_BYTES")]
    pub client_memory_max_bytes: Option<usize>,
    /// Free space, bytes, the volume of DB_PATH keeps: below it the node refuses writes (not
    /// deletes) until space is freed, so that it keeps applying and serving reads instead of
    /// failing mid-write; 0 turns the floor off [default: 134217728].
    #[arg(long, env = "MIN_FREE_DISK_BYTES")]
    pub min_free_disk_bytes: Option<u64>,
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
    /// How often this node looks for partitions it serves whose record deadlines are due but
    /// that no entry has reached (a quiet partition), and appends a small tick entry to each so
    /// the expired records are removed; also how long a deadline may stay due before a tick is
    /// sent. 0 sends no ticks (records are then removed by the next write) [default: 1000].
    #[arg(long, env = "EXPIRY_TICK_MS")]
    pub expiry_tick_ms: Option<u64>,
    /// Bytes of recent changes the node keeps in memory (split evenly across partitions) so a
    /// watch can resume from a token; older tokens answer 410 [default: 33554432].
    #[arg(long, env = "WATCH_HISTORY_BYTES")]
    pub watch_history_bytes: Option<usize>,
    /// The newest log entry format this node writes: 2 lets a field that Redis `HSET` (and
    /// `HSETNX`, `HINCRBY`, `SADD`, ...) adds to a key with a deadline take the key's deadline;
    /// 3 keeps a field's own deadline (`HEXPIRE`, `HSETEX`) apart from its key's, so fields
    /// added later do not take it; 4 computes `INCRBYFLOAT` and `HINCRBYFLOAT` as Redis does
    /// (80-bit `long double`: `0.1` + `0.2` is `0.3`, not `0.30000000000000004`) and lets `SET
    /// ... NX`, `SETNX` and `HSETNX` inside `MULTI` skip alone; 5 keeps a hash field's TTL
    /// apart from its key's in `HEXPIRE ... NX|XX|GT|LT`, `HPERSIST` and `HTTL`; 6 edits JSON
    /// documents at a path (`JSON.SET doc $.a 1`, `JSON.NUMINCRBY`, ...); 7 lets those paths'
    /// filters call functions and test patterns (`length()`, `=~`). Raise it on a Kafka log
    /// only once every node of every region runs a release that applies the format: an older
    /// node stops the partition at the first such entry until upgraded [default: 7 on the
    /// embedded log, 1 on Kafka].
    #[arg(long, env = "ENTRY_WRITE_VERSION")]
    pub entry_write_version: Option<u32>,
    /// How often a quiet watch gets a bookmark event that moves its token on, ms
    /// [default: 10000].
    #[arg(long, env = "WATCH_BOOKMARK_MS")]
    pub watch_bookmark_ms: Option<u64>,
    /// Committed batches a watch may fall behind (its client reading too slowly) before it is
    /// cut off with an error event; apply never waits for a watch [default: 1024].
    #[arg(long, env = "WATCH_LAG_BATCHES")]
    pub watch_lag_batches: Option<usize>,
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
    /// Log positions (`partition:offset`, comma-separated) whose entries are rejected as
    /// `malformed_entry` without being applied, whatever they hold: the way past an entry that
    /// stopped its partition on every node (a log format no release applies). Set the same list
    /// on every node of every region and keep it set (see docs/log-entry-v1.md).
    #[arg(long, env = "REJECT_ENTRIES_AT", value_delimiter = ',')]
    pub reject_entries_at: Option<Vec<String>>,
    /// Threads that apply the partitions this node owns, taking turns [default: one per core].
    #[arg(long, env = "APPLY_THREADS")]
    pub apply_threads: Option<usize>,
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
    /// S3 bucket for partition snapshots; setting it turns snapshots on (Fly's `BUCKET_NAME`
    /// is used when unset). Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Key prefix of the snapshots [default: firescroll/{namespace}].
    #[arg(long, env = "S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// An S3-compatible endpoint (MinIO, R2, Tigris), addressed path-style; Fly's
    /// `AWS_ENDPOINT_URL_S3` is used when unset [default: AWS S3].
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (`AWS_REGION` when unset) [default: us-east-1].
    #[arg(long, env = "S3_REGION")]
    pub s3_region: Option<String>,
    /// Request checksums: `when_required` (works with every S3-compatible store) or
    /// `when_supported` (the AWS SDK's default) [default: when_required].
    #[arg(long, env = "S3_CHECKSUMS")]
    pub s3_checksums: Option<String>,
    /// How often each owned partition is snapshotted, e.g. `10m`, `1h` [default: 10m].
    #[arg(long, env = "SNAPSHOT_INTERVAL")]
    pub snapshot_interval: Option<String>,
    /// Skip a partition that applied fewer entries than this since its last snapshot
    /// [default: 1].
    #[arg(long, env = "SNAPSHOT_MIN_ENTRIES")]
    pub snapshot_min_entries: Option<u64>,
    /// Snapshots kept per partition [default: 3].
    #[arg(long, env = "SNAPSHOT_KEEP")]
    pub snapshot_keep: Option<usize>,
    /// A snapshot object without a manifest (its upload died) is deleted once this old; longer
    /// than any upload takes [default: 1h].
    #[arg(long, env = "SNAPSHOT_ORPHAN_GRACE")]
    pub snapshot_orphan_grace: Option<String>,
    /// A snapshot object is uploaded while it is made, in parts of this size (at least 5 MiB)
    /// [default: 8388608].
    #[arg(long, env = "SNAPSHOT_PART_BYTES")]
    pub snapshot_part_bytes: Option<usize>,
    /// How long the log keeps entries (the topic's `retention.ms`; not every broker answers
    /// DescribeConfigs, so it is a setting), e.g. `7d`. With it, a partition whose newest
    /// snapshot is older than half of it is snapshotted even below SNAPSHOT_MIN_ENTRIES, and a
    /// warning says when snapshots fall behind [default: unset, no such check].
    #[arg(long, env = "LOG_RETENTION")]
    pub log_retention: Option<String>,
}
