//! A partition on a new disk whose only past is in S3 (`engine/new_disk.rs`): with S3 away it
//! is neither served nor written to, so nothing is numbered before the snapshot it must
//! restore; a disk that holds entries is not held back.

use super::*;

/// Snapshots to an S3 endpoint nobody listens on: every listing fails.
fn unreachable_snapshots() -> Arc<crate::backup::Snapshots> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = crate::backup::S3Settings {
        bucket: "snaps".into(),
        prefix: "firescroll/{namespace}".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        access_key: Some("key".into()),
        secret_key: Some("secret".into()),
        checksums_when_required: true,
        interval: Duration::from_secs(3600),
        min_entries: 1,
        keep: 3,
        part_bytes: 8 << 20,
        orphan_grace: Duration::from_secs(3600),
        log_retention: None,
    };
    Arc::new(crate::backup::Snapshots::new(
        settings, "default", PARTITIONS, "node-a",
    ))
}

fn config_with_s3(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        snapshots: Some(unreachable_snapshots()),
        snapshot_download_dir: dir.join("downloads"),
        ..EngineConfig::default()
    }
}

/// Waits (bounded) until no partition is opening any more.
async fn opened(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !engine.opening().is_empty() {
        assert!(Instant::now() < deadline, "partitions still opening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_disk_with_s3_away_serves_nothing_and_takes_no_writes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let store = Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let metrics = Arc::new(Metrics::new());
    let (engine, _tasks) =
        start_engine_with(store, log.clone(), metrics, config_with_s3(dir.path()));
    opened(&engine).await;
    for id in 0..PARTITIONS {
        let runtime = engine.partition(id).expect("an unserved runtime in place");
        match runtime.health() {
            Health::Unrestored { reason } => {
                assert!(reason.contains("S3 unreachable"), "{reason}")
            }
            other => panic!("partition {id}: {other:?}"),
        }
        assert!(!runtime.serving() && !runtime.readable());
        let held = engine.write_hold(id).expect("writes held");
        assert!(held.contains("delete its snapshots"), "{held}");
        // Nothing reached the log: a snapshot can still be continued.
        assert_eq!(log.bounds(id).unwrap(), (0, 0));
    }
    // Retried with the gaps, and still unrestored while S3 is away.
    engine.retry_gaps();
    assert!(matches!(
        engine.partition(0).unwrap().health(),
        Health::Unrestored { .. }
    ));
    // The download folder a restore makes goes with the engine when it is empty.
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    engine.shutdown();
    assert!(!downloads.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_holds_entries_serves_with_s3_away() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    for id in 0..PARTITIONS {
        let pk = pks_in(id, 1).remove(0);
        let entry = LogEntry::new(1, vec![put(&pk, "s", "1", None)]);
        log.append(id, vec![append(&entry)]).await.unwrap();
    }
    let store = Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let metrics = Arc::new(Metrics::new());
    let (engine, _tasks) = start_engine_with(store, log, metrics, config_with_s3(dir.path()));
    opened(&engine).await;
    for id in 0..PARTITIONS {
        let runtime = engine.partition(id).unwrap();
        assert_eq!(runtime.health(), Health::Serving, "partition {id}");
        assert_eq!(engine.write_hold(id), None);
    }
    engine.shutdown();
}

#[test]
fn a_gap_says_whether_the_log_starts_after_the_partition_or_ends_before_it() {
    let retention = super::super::partition::gap_words(0, 30);
    assert!(
        retention.contains("starts at 30 (retention removed them)"),
        "{retention}"
    );
    // A log that starts before the offset but has no entry there ended before it.
    let lost = super::super::partition::gap_words(9, 0);
    assert!(lost.contains("ends before it"), "{lost}");
    assert!(!lost.contains("starts at"), "{lost}");
}
