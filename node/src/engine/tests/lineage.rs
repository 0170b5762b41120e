//! A partition's state never goes on with a log it was not applied from (`model/lineage.rs`):
//! a log that holds another entry where the state applied its last one stops the partition
//! before anything of it is applied, and the outcomes this state holds are not told for it.

use super::*;

/// Entries putting `pk`'s `s{i}` to `value`, for `i` in `range`, appended to `partition`.
async fn write(
    log: &EmbeddedLog,
    partition: u32,
    pk: &str,
    range: std::ops::Range<i64>,
    value: &str,
) {
    for i in range {
        let entry = LogEntry::new(i, vec![put(pk, &format!("s{i}"), value, None)]);
        log.append(partition, vec![append(&entry)]).await.unwrap();
    }
}

/// Waits (bounded) until partition `id` is not serving any more; its health then.
async fn stopped(engine: &Engine, id: u32) -> Health {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runtime = engine.partition(id).unwrap();
        if !runtime.serving() {
            return runtime.health();
        }
        assert!(Instant::now() < deadline, "partition {id} still serving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_holding_another_entry_where_the_state_applied_its_last_is_not_applied_on() {
    let dir = tempfile::tempdir().unwrap();
    let pk = pks_in(2, 1).remove(0);
    let start = |log: Arc<EmbeddedLog>| {
        let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
        let metrics = Arc::new(Metrics::new());
        let (engine, tasks) = start_engine(store, log, metrics.clone());
        (engine, tasks, metrics)
    };
    let stop = |engine: Engine, tasks: Vec<tokio::task::JoinHandle<()>>, log: Arc<EmbeddedLog>| {
        engine.shutdown();
        tasks.iter().for_each(|t| t.abort());
        log.shutdown();
    };
    let at = |offset| Position {
        partition: 2,
        offset,
    };

    // Five entries applied from the first log.
    let log = open_log(dir.path());
    write(&log, 2, &pk, 0..5, "\"first\"").await;
    let (engine, tasks, _) = start(log.clone());
    engine
        .wait_applied(at(4), Duration::from_secs(10))
        .await
        .unwrap();
    stop(engine, tasks, log);

    // The same log, reopened: its entry at 4 is the one applied there, so it goes on.
    let log = open_log(dir.path());
    write(&log, 2, &pk, 5..6, "\"first\"").await;
    let (engine, tasks, _) = start(log.clone());
    engine
        .wait_applied(at(5), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(engine.partition(2).unwrap().health(), Health::Serving);
    assert_eq!(
        engine.outcome(at(3)).unwrap(),
        Some(Outcome::Applied(vec![]))
    );
    stop(engine, tasks, log);

    // Another log in its place, longer than what the state applied: by offsets alone it goes
    // on at 6, and its entries 0..6 would never be applied here.
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    let log = open_log(dir.path());
    write(&log, 2, &pk, 0..9, "\"second\"").await;
    let (engine, _tasks, metrics) = start(log.clone());
    let health = stopped(&engine, 2).await;
    assert_eq!(
        health,
        Health::Diverged {
            offset: 5,
            snapshot: None
        }
    );
    let reason = health.reason().unwrap();
    assert!(
        reason.contains("another entry at offset 5") && reason.contains("remove its DB_PATH"),
        "{reason}"
    );
    let runtime = engine.partition(2).unwrap();
    assert!(!runtime.readable(), "a diverged partition is not served");
    assert_eq!(runtime.next_offset(), 6, "nothing of the other log applied");
    let kept = runtime.store.get(&pk, "s7").unwrap();
    assert!(
        kept.is_none(),
        "the other log's entry 7 was applied: {kept:?}"
    );
    assert_eq!(
        runtime.store.get(&pk, "s0").unwrap().unwrap().data_json,
        "\"first\""
    );
    // What this state holds at offset 3 is the first log's entry's outcome, not the one at 3
    // now: it is not told.
    assert_eq!(engine.outcome(at(3)).unwrap(), None);
    // Nor does the embedded log take writes for it: a write numbered in a log the operator
    // may then decide is the wrong one would be lost.
    let held = engine.write_hold(2).expect("writes refused");
    assert!(held.contains("another entry at offset 5"), "{held}");
    assert_eq!(engine.write_hold(0), None);
    assert!(
        metrics
            .render()
            .contains("firescroll_partition_healthy{partition=\"2\"} 0")
    );
    // Partitions whose state applied nothing are not held to any log.
    assert_eq!(engine.partition(0).unwrap().health(), Health::Serving);
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_entry_the_log_no_longer_holds_is_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log_in_segments_of(dir.path(), 64);
    let pk = pks_in(1, 1).remove(0);
    write(&log, 1, &pk, 0..10, "1").await;
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let (engine, tasks) = start_engine(store, log.clone(), Arc::new(Metrics::new()));
    let at = |offset| Position {
        partition: 1,
        offset,
    };
    engine
        .wait_applied(at(9), Duration::from_secs(10))
        .await
        .unwrap();
    engine.checkpoint();
    engine.shutdown();
    tasks.iter().for_each(|t| t.abort());
    drop(engine);
    // Retention took every entry the state applied (segments of 64 bytes: one entry each).
    write(&log, 1, &pk, 10..12, "1").await;
    log.release(1, 10);
    assert!(log.bounds(1).unwrap().0 > 9);
    let store = crate::store::Store::open(&dir.path().join("store"), PARTITIONS).unwrap();
    let (engine, _tasks) = start_engine(store, log.clone(), Arc::new(Metrics::new()));
    engine
        .wait_applied(at(11), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(engine.partition(1).unwrap().health(), Health::Serving);
    engine.shutdown();
}
