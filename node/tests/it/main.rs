//! The integration tests: real `firescroll` processes, a real Kafka-protocol broker, real HTTP
//! and Redis clients. One test binary (linking wasmtime and rdkafka once), one module per area.

mod common;

mod auth;
mod bad_input;
mod client_memory;
mod cluster;
mod consistent_reads;
mod copy;
mod crash_recovery;
mod disk_space;
mod expiry;
mod fly;
mod hostile;
mod http_compat;
mod kafka;
mod log_truncation;
mod metrics;
mod plugins;
mod records_http;
mod resp;
mod scan;
mod snapshots;
mod tls;
mod tracking;
mod watch;
