//! Wiring one node together: log, store, engine, service, HTTP servers, and an orderly shutdown.

use crate::api;
use crate::cond::Conditions;
use crate::config::Config;
use crate::engine::{Engine, EngineConfig};
use crate::log::MutationLog;
use crate::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use crate::metrics::Metrics;
use crate::service::Service;
use crate::store::Store;
use anyhow::{Context, bail};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Runs the node until `shutdown` resolves, then stops accepting requests, finishes those in
/// flight, stops applying and flushes the store and log.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if config.kafka_seeds.is_some() {
        bail!(
            "KAFKA_SEEDS: this build only has the embedded log; the Kafka log is not implemented yet. \
             Unset KAFKA_SEEDS to run a single node"
        );
    }
    std::fs::create_dir_all(&config.db_path)
        .with_context(|| format!("DB_PATH: cannot create {}", config.db_path.display()))?;

    // The store first: fjall locks its directory, so a second node on the same DB_PATH stops here.
    let store =
        Store::open(&config.db_path.join("store"), config.partitions).with_context(|| {
            format!(
                "DB_PATH: cannot open the store in {}",
                config.db_path.display()
            )
        })?;
    let log = Arc::new(
        EmbeddedLog::open(EmbeddedLogConfig {
            dir: config.db_path.join("log"),
            partitions: config.partitions,
            segment_bytes: config.log_segment_bytes,
            max_entry_bytes: config.service.limits.max_entry_bytes,
        })
        .context("cannot open the embedded log")?,
    );
    let metrics = Arc::new(Metrics::new());
    let (engine, engine_tasks) = Engine::start(
        store,
        log.clone() as Arc<dyn MutationLog>,
        Arc::new(Conditions::new()),
        metrics.clone(),
        EngineConfig {
            checkpoint_interval: config.checkpoint_interval,
            ..EngineConfig::default()
        },
    );
    let service = Service::new(engine.clone(), metrics, config.service.clone());

    let api_addr = SocketAddr::new(config.listen_addr, config.api_port);
    let internal_addr = SocketAddr::new(config.listen_addr, config.internal_port);
    let api_listener = TcpListener::bind(api_addr)
        .await
        .with_context(|| format!("API_PORT: cannot listen on {api_addr}"))?;
    let internal_listener = TcpListener::bind(internal_addr)
        .await
        .with_context(|| format!("INTERNAL_PORT: cannot listen on {internal_addr}"))?;

    tracing::info!(
        api = %api_listener.local_addr()?,
        internal = %internal_listener.local_addr()?,
        db_path = %config.db_path.display(),
        partitions = config.partitions,
        log = "embedded",
        "firescroll is serving"
    );
    tracing::warn!(
        "no auth token is configured: anyone who can reach the API port can read and write (a dev node)"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sleep = config.shutdown_sleep;
    tokio::spawn(async move {
        shutdown.await;
        if !sleep.is_zero() {
            tracing::info!(
                seconds = sleep.as_secs(),
                "shutdown requested; draining before closing"
            );
            tokio::time::sleep(sleep).await;
        }
        tracing::info!("shutting down: no new requests");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&stop| stop).await;
    };
    let public = axum::serve(api_listener, api::http::router(service.clone()))
        .with_graceful_shutdown(stopped(stop_rx.clone()));
    let internal = axum::serve(internal_listener, api::internal::router(service))
        .with_graceful_shutdown(stopped(stop_rx));
    let (public, internal) = tokio::join!(public, internal);
    public.context("the API server failed")?;
    internal.context("the internal server failed")?;

    for task in engine_tasks {
        task.abort();
    }
    let (engine, log) = (engine.clone(), log.clone());
    tokio::task::spawn_blocking(move || {
        engine.shutdown();
        log.shutdown();
    })
    .await
    .context("flushing on shutdown failed")?;
    tracing::info!("stopped cleanly");
    Ok(())
}
