//! Wiring one node together: log, store, engine, service, HTTP servers, and an orderly shutdown.

use crate::api;
use crate::cluster::{Cluster, Served, ServedNow};
use crate::cond::Conditions;
use crate::config::Config;
use crate::engine::{Engine, EngineConfig, Plugins};
use crate::log::MutationLog;
use crate::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use crate::log::kafka::{KafkaLog, StartAt, StartOffsets};
use crate::metrics::Metrics;
use crate::service::{DiskSpace, Service};
use crate::store::Store;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// How often, at most, partitions stopped by a gap in the log try a snapshot again.
const GAP_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest a node with gossip on waits, before opening its ports, to hear from another member
/// of its region (see `Cluster::wait_for_region`).
const REGION_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Longest a node with an empty store waits at start for S3 to give back its plugins.
const PLUGIN_RESTORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the node until `shutdown` resolves, then stops accepting requests, finishes those in
/// flight, stops applying and flushes the store and log.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    for (setting, value) in &config.from_fly {
        tracing::info!(setting, %value, "setting taken from Fly.io");
    }
    std::fs::create_dir_all(&config.db_path)
        .with_context(|| format!("DB_PATH: cannot create {}", config.db_path.display()))?;
    // Before anything slow: a certificate that does not load stops the node at once.
    let tls = match &config.tls {
        None => None,
        Some(settings) => Some(api::tls::Tls::load(settings.clone())?),
    };

    // The store first: fjall locks its directory, so a second node on the same DB_PATH stops here.
    let store_path = config.db_path.join("store");
    let store = Store::open(&store_path, config.partitions).with_context(|| {
        format!(
            "DB_PATH: cannot open the store in {}",
            config.db_path.display()
        )
    })?;
    let log = open_log(&config, &store, &store_path).await?;
    let metrics = Arc::new(Metrics::new());
    if let Some(tls) = &tls {
        tls.spawn_reloader(metrics.clone());
    }
    let snapshots = config.s3.as_ref().map(|s3| {
        Arc::new(crate::backup::Snapshots::new(
            s3.clone(),
            &config.namespace,
            config.partitions,
            &config.node_name,
        ))
    });
    if let (Some(snapshots), None) = (&snapshots, log.plugin_feed()) {
        // The embedded log has no plugins topic: an empty store takes them from the bucket.
        // Bounded: an S3 that hangs must not keep the node from serving for minutes.
        let restored = tokio::time::timeout(
            PLUGIN_RESTORE_TIMEOUT,
            crate::engine::restore_plugins(&store, snapshots),
        )
        .await;
        match restored {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(bindings = n, "plugins restored from S3"),
            Ok(Err(e)) => tracing::warn!(error = %e, "plugins could not be restored from S3"),
            Err(_) => tracing::warn!(
                waited_s = PLUGIN_RESTORE_TIMEOUT.as_secs(),
                "plugins could not be restored from S3: it did not answer; starting without"
            ),
        }
    }
    let plugins = Plugins::open(&store, &log, config.plugin_limits.clone(), &metrics)
        .context("plugins cannot be set up")?;
    let conds = Arc::new(Conditions::new());
    let (engine, engine_tasks) = Engine::start(
        store,
        log.clone(),
        conds.clone(),
        plugins.resolver.clone(),
        metrics.clone(),
        EngineConfig {
            checkpoint_interval: config.checkpoint_interval,
            drop_released: config.drop_released_partitions,
            // A node-wide budget, so the index's memory does not grow with the partition count.
            read_index_max_bytes: config.read_index_max_bytes / config.partitions as usize,
            outcome_retention: config.outcome_retention,
            watch_history_bytes: config.watch_history_bytes / config.partitions as usize,
            watch_lag_batches: config.watch_lag_batches,
            watch_history_dir: Some(config.db_path.join("watch-history")),
            stall_threshold: config.stall_threshold,
            apply_threads: config.apply_threads,
            reject_entries_at: Arc::new(config.reject_entries_at.clone()),
            stop_patience: config.shutdown_timeout / 2,
            snapshots: snapshots.clone(),
            snapshot_download_dir: config.db_path.join("snapshot-downloads"),
            min_free_disk_bytes: config.min_free_disk_bytes,
            standby_until_served_elsewhere: config.cluster.is_some(),
            ..EngineConfig::default()
        },
    );
    let mut service = Service::new(
        engine.clone(),
        log.clone(),
        conds,
        plugins,
        metrics.clone(),
        config.service.clone(),
    );
    // Looks once now (and warns if the disk is already under its floor).
    let disk = DiskSpace::new(&config.db_path, config.min_free_disk_bytes);
    if disk.min_free() > 0 {
        service = service.with_disk_space(disk);
    }
    let cluster = match &config.cluster {
        None => None,
        Some(settings) => {
            let serving = engine.clone();
            // The card tells the region what this node can answer: serving partitions only, so
            // a partition stopped by a gap or a disk failure is read from another replica; and
            // those on standby (asked when nobody serves them) until another member serves them.
            let served: Served = Arc::new(move |served_elsewhere: &dyn Fn(u32) -> bool| {
                let mut standby = Vec::new();
                for runtime in serving.standby_partitions() {
                    if served_elsewhere(runtime.id()) {
                        serving.end_standby(runtime.id());
                    } else {
                        standby.push(runtime.id());
                    }
                }
                ServedNow {
                    serving: serving
                        .partitions()
                        .iter()
                        .filter(|p| p.serving())
                        .map(|p| (p.id(), p.next_offset()))
                        .collect(),
                    standby,
                }
            });
            let identity = tls.as_ref().map(|tls| tls.peer_identity());
            let cluster = Cluster::start(settings.clone(), served, metrics.clone(), identity)
                .await
                .context("cannot start gossip")?;
            // Reads of partitions served elsewhere need the region's cards: the ports open
            // once every member SWIM knows has sent its card (a moment), or after a bound.
            if !cluster.wait_for_region(REGION_WAIT).await {
                tracing::info!(
                    waited = ?REGION_WAIT,
                    "the cards of the region's members (which partitions each serves) have not all arrived yet; serving anyway"
                );
            }
            service = service.with_cluster(cluster.clone());
            Some(cluster)
        }
    };
    if let (Some(s3), Some(snapshots)) = (&config.s3, snapshots) {
        tracing::info!(
            bucket = %s3.bucket,
            endpoint = s3.endpoint.as_deref().unwrap_or("AWS"),
            interval = ?s3.interval,
            "S3 snapshots on"
        );
        let interval = s3.interval;
        service = service.with_snapshots(snapshots);
        let retrying = service.clone();
        tokio::spawn(async move {
            // A partition not served for a gap in the log is retried often: S3 may be back.
            let mut tick = tokio::time::interval(interval.min(GAP_RETRY));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                retrying.retry_unserved().await;
            }
        });
        let periodic = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                periodic.snapshot_due().await;
            }
        });
    }

    if !config.expiry_tick.is_zero() {
        let ticking = service.clone();
        let interval = config.expiry_tick;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sent = std::collections::HashMap::new();
            loop {
                tick.tick().await;
                ticking.tick_due_partitions(interval, &mut sent).await;
            }
        });
    }

    let api_addr = SocketAddr::new(config.listen_addr, config.api_port);
    let internal_addr = SocketAddr::new(config.listen_addr, config.internal_port);
    let api_listener = TcpListener::bind(api_addr)
        .await
        .with_context(|| format!("API_PORT: cannot listen on {api_addr}"))?;
    let internal_listener = TcpListener::bind(internal_addr)
        .await
        .with_context(|| format!("INTERNAL_PORT: cannot listen on {internal_addr}"))?;
    let resp_addr = SocketAddr::new(config.listen_addr, config.resp_port);
    let resp_listener = TcpListener::bind(resp_addr)
        .await
        .with_context(|| format!("RESP_PORT: cannot listen on {resp_addr}"))?;

    tracing::info!(
        tls = tls.is_some(),
        api = %api_listener.local_addr()?,
        internal = %internal_listener.local_addr()?,
        resp = %resp_listener.local_addr()?,
        db_path = %config.db_path.display(),
        partitions = config.partitions,
        log = if config.kafka.is_some() { "kafka" } else { "embedded" },
        "firescroll is serving"
    );
    match (
        config.service.tokens.required(),
        config.listen_addr.is_loopback(),
    ) {
        (true, _) => {}
        (false, true) => tracing::warn!(
            "no auth token is configured (READ_TOKENS, WRITE_TOKENS, ADMIN_TOKENS): a dev node, \
             reachable from this machine only (LISTEN_ADDR={})",
            config.listen_addr
        ),
        (false, false) => tracing::warn!(
            "NO AUTH TOKEN IS CONFIGURED and LISTEN_ADDR={} accepts other hosts: anyone who can reach \
             the HTTP or Redis port can read and write. Set READ_TOKENS / WRITE_TOKENS / ADMIN_TOKENS",
            config.listen_addr
        ),
    }
    if let Some(cluster) = &config.cluster
        && !cluster.auth.is_keyed()
        && !config.listen_addr.is_loopback()
    {
        tracing::warn!(
            "gossip is unsigned and LISTEN_ADDR={} accepts other hosts: anyone who can send UDP \
             to GOSSIP_PORT {} can join this region and be sent its reads. Set GOSSIP_KEYS (the \
             same on every node) unless only the region's nodes can reach that port",
            config.listen_addr,
            cluster.gossip_port
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sleep = config.shutdown_sleep;
    tokio::spawn(async move {
        shutdown.await;
        // Leave first: the region stops routing reads here while this node still answers them.
        if let Some(cluster) = &cluster {
            cluster.leave().await;
        }
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
    // Requests arriving and answers not yet taken, over every port (see `api::client_memory`).
    let client_memory = api::client_memory::ClientMemory::new(
        config.client_memory_max_bytes,
        metrics.client_memory_bytes.clone(),
        metrics.clients_evicted.clone(),
    );
    metrics.register(Box::new(api::client_memory::StalledBytes::new(
        &client_memory,
    )));
    // A macro, not a closure: the two routers are different service types.
    macro_rules! serve_http {
        ($listener:expr, $router:expr, $tls:expr) => {
            api::http::serve(
                $listener,
                $router,
                config.service.limits.max_body_bytes,
                config.http.clone(),
                metrics.clone(),
                $tls,
                client_memory.clone(),
                stop_rx.clone(),
                config.shutdown_timeout,
            )
        };
    }
    let public = serve_http!(
        api_listener,
        api::http::router(service.clone()),
        tls.clone()
    );
    // The region's own nodes talk here: plaintext, on the private network.
    let internal = serve_http!(
        internal_listener,
        api::internal::router(service.clone()),
        None
    );
    let resp = {
        let mut stop = stop_rx.clone();
        let grace = config.shutdown_timeout;
        let serving = api::resp::serve(
            resp_listener,
            service,
            config.resp.clone(),
            tls,
            client_memory,
            stop_rx,
        );
        async move {
            let deadline = async {
                let _ = stop.wait_for(|&s| s).await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                () = serving => {}
                () = deadline => tracing::warn!(
                    "Redis connections still open after {} ms (SHUTDOWN_TIMEOUT_MS); closing anyway",
                    grace.as_millis()
                ),
            }
        }
    };
    tokio::join!(public, internal, resp);

    for task in engine_tasks {
        task.abort();
    }
    let (engine, log) = (engine.clone(), log.clone());
    let unflushed = tokio::task::spawn_blocking(move || {
        let unflushed = engine.shutdown();
        log.shutdown();
        unflushed
    })
    .await
    .context("flushing on shutdown failed")?;
    match unflushed {
        None => tracing::info!("stopped cleanly"),
        Some(e) => tracing::warn!(
            error = %e,
            "stopped, but the store's last writes were not flushed: the next start applies them again from the log"
        ),
    }
    Ok(())
}

/// The embedded log, or the Kafka log when KAFKA_SEEDS is set.
async fn open_log(
    config: &Config,
    store: &Store,
    store_path: &std::path::Path,
) -> anyhow::Result<Arc<dyn MutationLog>> {
    let Some(kafka) = &config.kafka else {
        store.check_log_identity(store_path, "embedded")?;
        let log = EmbeddedLog::open(EmbeddedLogConfig {
            dir: config.db_path.join("log"),
            partitions: config.partitions,
            segment_bytes: config.log_segment_bytes,
            max_entry_bytes: config.service.limits.max_entry_bytes,
            journal_bytes: crate::log::embedded::DEFAULT_JOURNAL_BYTES,
        })
        .context("cannot open the embedded log")?;
        return Ok(Arc::new(log));
    };
    store.check_log_identity(store_path, &format!("kafka:{}", kafka.namespace))?;
    let offsets = store.clone();
    // A partition this node gains starts where this node's store left off (at the last entry
    // it applied, which the engine checks the log still holds).
    let start_offsets: StartOffsets = Arc::new(move |partition| {
        offsets
            .partition(partition)
            .and_then(|p| {
                Ok(StartAt {
                    next: p.next_offset()?,
                    last_applied: p.last_entry()?.map(|last| last.offset),
                })
            })
            .unwrap_or_else(|e| {
                tracing::error!(partition, error = %e, "cannot read the applied offset; the engine will report it");
                StartAt {
                    next: 0,
                    last_applied: None,
                }
            })
    });
    let log = KafkaLog::connect(kafka.clone(), start_offsets).await?;
    Ok(Arc::new(log))
}
