//! FireScroll: a config database to deploy everywhere.
//!
//! A partitioned log ([`log`]) is the single source of truth; the [`engine`] applies each owned
//! partition in offset order into a local fjall [`store`], and the [`service`] answers reads from
//! it and turns writes into log entries for the frontends ([`api`]): the JSON HTTP API, the Redis
//! protocol and the peer API of a region's nodes ([`cluster`] finds them). See
//! `docs/architecture.md` for the module map, the way a write and a read travel, and the
//! invariants.

#![forbid(unsafe_code)]

pub mod api;
pub mod backup;
pub mod cluster;
pub mod cond;
pub mod config;
pub mod copy;
pub mod engine;
pub mod log;
pub mod metrics;
pub mod model;
pub mod node;
pub mod plugins;
pub mod service;
pub mod store;
pub mod tls_files;
