use super::*;
use crate::log::LogRecord;
use std::io::Write as _;
use std::time::Duration;

fn entries(payloads: &[&[u8]]) -> Vec<Append> {
    payloads
        .iter()
        .map(|p| Append {
            key: String::new(),
            payload: p.to_vec(),
        })
        .collect()
}

fn one(payload: Vec<u8>) -> Vec<Append> {
    vec![Append {
        key: String::new(),
        payload,
    }]
}

fn config(dir: &Path, segment_bytes: u64) -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        dir: dir.to_path_buf(),
        partitions: 2,
        segment_bytes,
        max_entry_bytes: 1 << 20,
        journal_bytes: 1 << 20,
    }
}

fn read_all(log: &EmbeddedLog, partition: u32, from: u64) -> Vec<LogRecord> {
    let mut reader = log.reader(partition, from).unwrap();
    let mut out = Vec::new();
    loop {
        let batch = reader.read(7, Duration::from_millis(10)).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

#[tokio::test]
async fn appends_are_ordered_contiguous_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(config(dir.path(), 100)).unwrap();
        assert_eq!(
            log.append(0, entries(&[b"a", b"b"])).await.unwrap(),
            vec![0, 1]
        );
        assert_eq!(log.append(0, entries(&[b"c"])).await.unwrap(), vec![2]);
        assert_eq!(log.append(1, entries(&[b"x"])).await.unwrap(), vec![0]);
        for i in 0..50u32 {
            log.append(0, one(i.to_string().into_bytes()))
                .await
                .unwrap();
        }
    }
    let log = EmbeddedLog::open(config(dir.path(), 100)).unwrap();
    assert_eq!(log.bounds(0).unwrap(), (0, 53));
    let records = read_all(&log, 0, 0);
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..53).collect::<Vec<_>>());
    assert_eq!(records[2].payload, b"c");
    assert_eq!(records[52].payload, b"49");
    // Reading from the middle, across segment boundaries (segments are ~100 bytes here).
    let from_middle = read_all(&log, 0, 20);
    assert_eq!(from_middle.first().unwrap().offset, 20);
    assert_eq!(from_middle.len(), 33);
    assert_eq!(read_all(&log, 1, 0).len(), 1);
}

#[tokio::test]
async fn concurrent_appends_are_group_committed_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..100 {
                offsets.extend(
                    log.append(0, one(format!("{t}-{i}").into_bytes()))
                        .await
                        .unwrap(),
                );
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..800).collect::<Vec<_>>());
    assert_eq!(read_all(&log, 0, 0).len(), 800);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
        log.append(0, entries(&[b"one", b"two"])).await.unwrap();
    }
    // A crash in the middle of writing a third frame leaves half a frame behind.
    let seg = segment::segment_path(&dir.path().join("p0"), 0);
    let mut file = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    file.write_all(&[50, 0, 0, 0, 1, 2]).unwrap();
    drop(file);

    let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.bounds(0).unwrap(), (0, 2));
    assert_eq!(log.append(0, entries(&[b"three"])).await.unwrap(), vec![2]);
    let payloads: Vec<Vec<u8>> = read_all(&log, 0, 0)
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(
        payloads,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

#[tokio::test]
async fn released_segments_are_deleted_and_reading_below_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path(), 64)).unwrap();
    for i in 0..40u32 {
        log.append(0, one(format!("entry-{i:04}").into_bytes()))
            .await
            .unwrap();
    }
    let segments_before = segment::list_segments(&dir.path().join("p0"))
        .unwrap()
        .len();
    assert!(
        segments_before > 3,
        "small segments roll: {segments_before}"
    );
    log.release(0, 30);
    let (start, end) = log.bounds(0).unwrap();
    assert!(start > 0 && start <= 30, "start {start}");
    assert_eq!(end, 40);
    assert!(
        segment::list_segments(&dir.path().join("p0"))
            .unwrap()
            .len()
            < segments_before
    );
    assert!(matches!(log.reader(0, 0), Err(LogError::Truncated { start: s, .. }) if s == start));
    let rest = read_all(&log, 0, 30);
    assert_eq!(rest.len(), 10);
    assert_eq!(rest[0].payload, b"entry-0030");
    // Releasing everything keeps the active segment, so the end survives a reopen.
    log.release(0, 40);
    drop(log);
    let log = EmbeddedLog::open(config(dir.path(), 64)).unwrap();
    assert_eq!(log.bounds(0).unwrap().1, 40);
}

#[tokio::test]
async fn partition_count_is_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedLog::open(config(dir.path(), 1024)).unwrap());
    let mut other = config(dir.path(), 1024);
    other.partitions = 3;
    let err = EmbeddedLog::open(other).err().unwrap().to_string();
    assert!(
        err.contains("has 2 partitions but PARTITIONS is 3"),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1024);
    cfg.max_entry_bytes = 10;
    let log = EmbeddedLog::open(cfg).unwrap();
    let err = log.append(0, one(vec![0; 11])).await.unwrap_err();
    assert!(matches!(
        err,
        LogError::TooLarge {
            size: 11,
            limit: 10
        }
    ));
    assert_eq!(log.bounds(0).unwrap(), (0, 0));
}

/// Flips one byte of `payload`'s first occurrence in partition 0's first segment.
fn corrupt(dir: &Path, payload: &[u8]) {
    let seg = segment::segment_path(&dir.join("p0"), 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(payload.len())
        .position(|w| w == payload)
        .unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
}

#[tokio::test]
async fn a_reader_hands_out_what_it_read_before_reporting_damage() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
    log.append(0, entries(&[b"first", b"second", b"third"]))
        .await
        .unwrap();
    // Past the in-memory tail (1 MiB here), so that they are read from the file.
    for _ in 0..20 {
        log.append(0, one(vec![0; 64 << 10])).await.unwrap();
    }
    let mut reader = log.reader(0, 0).unwrap();
    corrupt(dir.path(), b"third");
    let records = reader.read(10, Duration::from_millis(10)).unwrap();
    let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(payloads, vec![b"first".as_slice(), b"second".as_slice()]);
    let err = reader.read(10, Duration::from_millis(10)).unwrap_err();
    assert!(err.to_string().contains("offset 2 is corrupt"), "{err}");
}

#[tokio::test]
async fn damage_before_the_tail_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
        log.append(0, entries(&[b"first", b"second", b"third"]))
            .await
            .unwrap();
    }
    corrupt(dir.path(), b"second");
    let err = EmbeddedLog::open(config(dir.path(), 1 << 20))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("this is damage, not an interrupted write"),
        "{err}"
    );
    // Nothing was cut: the damaged file keeps all three entries' bytes.
    let seg = segment::segment_path(&dir.path().join("p0"), 0);
    assert!(
        std::fs::read(&seg)
            .unwrap()
            .windows(5)
            .any(|w| w == b"third")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_partition_continues_at_a_chosen_offset_and_a_full_one_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.resume_at(0, 100).await.unwrap(), vec![100]);
    assert_eq!(log.bounds(0).unwrap(), (100, 100));
    assert_eq!(
        log.append(0, entries(&[b"a", b"b"])).await.unwrap(),
        vec![100, 101]
    );
    let read = read_all(&log, 0, 100);
    assert_eq!(
        read.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![100, 101]
    );
    // A partition holding entries keeps its numbering.
    assert!(log.resume_at(0, 500).await.is_err());
    log.append(1, entries(&[b"x"])).await.unwrap();
    assert!(log.resume_at(1, 50).await.is_err());
    // After a restart the numbering is where it was.
    log.shutdown();
    drop(log);
    let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.bounds(0).unwrap(), (100, 102));
    assert_eq!(log.append(0, one(b"c".to_vec())).await.unwrap(), vec![102]);
}

/// Stops a log the way a crash would: no final sync, nothing written after the last
/// acknowledged group. (Its idle writer thread is left behind.)
fn crash(log: EmbeddedLog) {
    std::mem::forget(log);
}

fn payloads(log: &EmbeddedLog, partition: u32) -> Vec<Vec<u8>> {
    read_all(log, partition, 0)
        .into_iter()
        .map(|r| r.payload)
        .collect()
}

#[tokio::test]
async fn acknowledged_entries_lost_from_unsynced_segments_come_back_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
    log.append(0, entries(&[b"a0", b"a1", b"a2"]))
        .await
        .unwrap();
    log.append(1, entries(&[b"b0"])).await.unwrap();
    log.append(0, entries(&[b"a3"])).await.unwrap();
    crash(log);
    // Only the journal was synced: a power cut can leave the segment files short, or full of
    // zeros where the kernel had not written them yet.
    let seg0 = segment::segment_path(&dir.path().join("p0"), 0);
    let seg1 = segment::segment_path(&dir.path().join("p1"), 0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg0)
        .unwrap()
        .set_len(5)
        .unwrap();
    let len1 = std::fs::metadata(&seg1).unwrap().len() as usize;
    std::fs::write(&seg1, vec![0u8; len1]).unwrap();

    let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.bounds(0).unwrap(), (0, 4));
    assert_eq!(log.bounds(1).unwrap(), (0, 1));
    assert_eq!(payloads(&log, 0), vec![b"a0", b"a1", b"a2", b"a3"]);
    assert_eq!(payloads(&log, 1), vec![b"b0"]);
    assert_eq!(log.append(0, one(b"a4".to_vec())).await.unwrap(), vec![4]);
}

#[tokio::test]
async fn an_entry_in_a_segment_but_not_in_the_journal_was_never_acknowledged_and_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
    log.append(0, entries(&[b"kept"])).await.unwrap();
    crash(log);
    // A crash between writing a group to its segment and syncing it to the journal.
    let seg = segment::segment_path(&dir.path().join("p0"), 0);
    let mut file = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    segment::write_frame(&mut file, b"never acknowledged").unwrap();
    drop(file);

    let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(payloads(&log, 0), vec![b"kept"]);
    assert_eq!(log.append(0, one(b"next".to_vec())).await.unwrap(), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_reused_many_times_over_recovers_exactly_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // A journal of 4 KiB wraps every few dozen entries, and 256-byte segments roll often, so
    // recovery meets frames of older generations past the current one; a group larger than the
    // whole journal is made durable by syncing the segment files instead.
    let small = |dir: &Path| EmbeddedLogConfig {
        journal_bytes: 4096,
        ..config(dir, 256)
    };
    let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
    for round in 0..3 {
        let log = EmbeddedLog::open(small(dir.path())).unwrap();
        for i in 0..150u32 {
            let partition = i % 2;
            let payload = format!("r{round}-{i:04}-{}", "x".repeat((i % 37) as usize));
            log.append(partition, one(payload.clone().into_bytes()))
                .await
                .unwrap();
            expected[partition as usize].push(payload.into_bytes());
        }
        let big = vec![b'y'; 6000 + round];
        log.append(1, one(big.clone())).await.unwrap();
        expected[1].push(big);
        crash(log);
    }
    let log = EmbeddedLog::open(small(dir.path())).unwrap();
    assert_eq!(payloads(&log, 0), expected[0]);
    assert_eq!(payloads(&log, 1), expected[1]);
}

#[tokio::test]
async fn a_journal_that_skips_offsets_is_refused_not_guessed_at() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
    log.append(0, entries(&[b"a0", b"a1"])).await.unwrap();
    log.shutdown();
    drop(log);
    // A journal whose checkpoint says partition 0 ends at 2, holding an entry at offset 5:
    // offsets 2..5 are lost, and recovery must say so rather than number entries anew.
    let (mut journal, _) = super::journal::Journal::open(dir.path(), 1 << 20, 2).unwrap();
    journal.start_generation(&[2, 0]).unwrap();
    journal.add(0, 5, b"a5");
    journal.commit().unwrap();
    drop(journal);
    let err = EmbeddedLog::open(config(dir.path(), 1 << 20))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("entries are missing"), "{err}");
    // Nothing was cut or renumbered: the two acknowledged entries are still there.
    let seg = segment::segment_path(&dir.path().join("p0"), 0);
    let bytes = std::fs::read(&seg).unwrap();
    assert!(bytes.windows(2).any(|w| w == b"a1"));
}

#[tokio::test]
async fn appends_are_refused_once_the_log_directory_is_deleted_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let log = EmbeddedLog::open(config(&log_dir, 1 << 20)).unwrap();
    assert_eq!(log.append(0, entries(&[b"kept"])).await.unwrap(), vec![0]);
    assert_eq!(log.refuses_writes(), None);
    // What an operator's `rm -rf` of the data directory does to a running node: the open files
    // live on, unlinked, and syncs into them still succeed.
    std::fs::remove_dir_all(&log_dir).unwrap();
    let error = log.append(0, entries(&[b"lost"])).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("was deleted while the node ran"),
        "unexpected error: {message}"
    );
    // The log stays refused (it cannot know what is on disk any more), and says so (`/ready`).
    assert!(log.append(1, entries(&[b"also lost"])).await.is_err());
    let refused = log
        .refuses_writes()
        .expect("the log says it refuses writes");
    assert!(
        refused.contains("was deleted while the node ran"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_readers_waker_is_called_for_its_partitions_appends_and_failures_until_dropped() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let log = EmbeddedLog::open(config(&log_dir, 1 << 20)).unwrap();
    log.append(0, entries(&[b"before"])).await.unwrap();
    let mut reader = log.reader(0, 0).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    reader.set_waker(Arc::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
    }));
    // What was there before is read without a wake-up.
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(reader.read(10, Duration::ZERO).unwrap().len(), 1);
    // Another partition's append does not wake this reader; its own does, once it is durable.
    log.append(1, entries(&[b"other"])).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    log.append(0, entries(&[b"a", b"b"])).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let read: Vec<Vec<u8>> = reader
        .read(10, Duration::ZERO)
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(read, vec![b"a".to_vec(), b"b".to_vec()]);
    // A failed log wakes it too (the read then reports the failure).
    std::fs::remove_dir_all(&log_dir).unwrap();
    assert!(log.append(1, entries(&[b"lost"])).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A dropped reader's waker is forgotten.
    drop(reader);
    assert_eq!(log.reader_wakers(0), 0);
}

/// A reader blocked in `read` is woken by its partition's next append, not by its timeout: the
/// writer notifies only when a reader is blocked, so a miscount would leave it asleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_read_returns_when_its_partition_is_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path(), 1 << 20)).unwrap();
    let mut reader = log.reader(0, 0).unwrap();
    let (sent, received) = std::sync::mpsc::channel();
    let blocked = std::thread::spawn(move || {
        // Far longer than the test allows: only a notification ends this wait in time.
        let records = reader.read(10, Duration::from_secs(600)).unwrap();
        sent.send(records.len()).unwrap();
        reader
    });
    // Until the reader is counted as blocked, an append would be read without waiting.
    while log.blocked_readers(0) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    log.append(0, entries(&[b"wake"])).await.unwrap();
    let read = received
        .recv_timeout(Duration::from_secs(30))
        .expect("the blocked read was not woken by the append");
    assert_eq!(read, 1);
    drop(blocked.join().unwrap());
    assert_eq!(log.blocked_readers(0), 0);
}

/// A log whose tails hold 16 KiB each (512 partitions: less than the writer's 64 KiB file
/// buffer, so entries leave a tail while the buffer still holds them), with a journal that
/// never fills (its sync would write the files too).
fn small_tails(dir: &Path, segment_bytes: u64) -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        partitions: 512,
        journal_bytes: 64 << 20,
        ..config(dir, segment_bytes)
    }
}

/// A 1 KiB entry that says which it is.
fn numbered(i: u32) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; 1 << 10];
    p[..4].copy_from_slice(&i.to_le_bytes());
    p
}

/// Readers take the latest entries from memory and older ones from the segment files: entries
/// that left the in-memory tail before the writer had handed them to the file are there for a
/// reader that starts behind, and a reader that starts inside the tail needs no file at all.
#[tokio::test]
async fn readers_behind_the_tail_find_every_entry_in_the_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let roomy = || small_tails(dir.path(), 64 << 20);
    let log = EmbeddedLog::open(roomy()).unwrap();
    let payload = numbered;
    for i in 0..100u32 {
        log.append(0, one(payload(i))).await.unwrap();
    }
    let read = read_all(&log, 0, 0);
    assert_eq!(read.len(), 100);
    for (i, record) in read.iter().enumerate() {
        assert_eq!(record.offset, i as u64);
        assert_eq!(record.payload, payload(i as u32), "entry {i}");
    }
    // Starting inside the tail, and following new appends from there.
    let mut reader = log.reader(0, 95).unwrap();
    let tail: Vec<u64> = reader
        .read(100, Duration::ZERO)
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(tail, (95..100).collect::<Vec<_>>());
    log.append(0, one(payload(100))).await.unwrap();
    let next = reader.read(100, Duration::ZERO).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].payload, payload(100));
    drop(reader);
    drop(log);
    // After a restart every entry is read from the files.
    let log = EmbeddedLog::open(roomy()).unwrap();
    let again = read_all(&log, 0, 0);
    assert_eq!(again.len(), 101);
    assert!(
        again
            .iter()
            .enumerate()
            .all(|(i, r)| r.payload == payload(i as u32))
    );
}

/// Appends numbered entries `range` to partition 0.
async fn append_numbered(log: &EmbeddedLog, range: std::ops::Range<u32>) {
    for i in range {
        log.append(0, one(numbered(i))).await.unwrap();
    }
}

/// A log of small tails (segments of `segment_bytes`) whose partition 0 holds 40 numbered
/// entries, and a reader of it at 0 that has read the files up to the tail: the log, the
/// reader, what it read, and where the tail starts.
async fn read_up_to_the_tail(
    dir: &Path,
    segment_bytes: u64,
) -> (
    EmbeddedLog,
    super::reader::EmbeddedReader,
    Vec<LogRecord>,
    u64,
) {
    let log = EmbeddedLog::open(small_tails(dir, segment_bytes)).unwrap();
    append_numbered(&log, 0..40).await;
    let shared = log.shared(0).unwrap().clone();
    // A tail holds ~16 of these entries.
    let tail_start = shared.tail.lock().unwrap().start();
    assert!(tail_start > 10 && tail_start < 40, "{tail_start}");
    let mut reader = super::reader::EmbeddedReader::new(shared, 0).unwrap();
    let read = reader.read(tail_start as usize, Duration::ZERO).unwrap();
    assert_eq!(read.len() as u64, tail_start);
    (log, reader, read, tail_start)
}

/// Reads on until `read` holds 80 entries, and checks each is the numbered entry at its offset.
fn read_all_80(reader: &mut super::reader::EmbeddedReader, mut read: Vec<LogRecord>) {
    while read.len() < 80 {
        read.extend(reader.read(100, Duration::ZERO).unwrap());
    }
    for (i, record) in read.iter().enumerate() {
        assert_eq!(record.offset, i as u64);
        assert_eq!(record.payload, numbered(i as u32), "entry {i}");
    }
}

/// A reader that took entries from the tail and then fell behind it again goes on in the segment
/// file from where it left it, instead of reading the segment from its start again each time.
#[tokio::test]
async fn a_reader_that_falls_behind_the_tail_again_goes_on_where_it_left_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut reader, mut read, tail_start) = read_up_to_the_tail(dir.path(), 64 << 20).await;
    read.extend(reader.read(3, Duration::ZERO).unwrap());
    // Enough new entries that the reader's next one left the tail.
    append_numbered(&log, 40..80).await;
    assert!(log.shared(0).unwrap().tail.lock().unwrap().start() > tail_start + 3);
    read_all_80(&mut reader, read);
    // Only the three entries it took from the tail were passed over in the file; reopening
    // the segment would pass over all `tail_start + 3` before them.
    assert_eq!(reader.skipped, 3);
}

/// A reader taking entries from the tail holds no segment file open (a deleted segment's disk
/// space comes back), and after its segment was deleted it goes on in the next one.
#[tokio::test]
async fn a_reader_in_the_tail_holds_no_segment_file_open() {
    let dir = tempfile::tempdir().unwrap();
    // Segments of ~4 entries.
    let (log, mut reader, mut read, tail_start) = read_up_to_the_tail(dir.path(), 4 << 10).await;
    assert!(reader.open_segment().is_some(), "reading the files");
    read.extend(reader.read(2, Duration::ZERO).unwrap());
    assert_eq!(reader.open_segment(), None, "taking entries from the tail");
    // Everything it read is applied: the segments before it go; then it falls behind the tail.
    log.release(0, tail_start + 2);
    append_numbered(&log, 40..80).await;
    read_all_80(&mut reader, read);
}
