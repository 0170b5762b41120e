//! The writer thread: group commit of every partition's appends with one journal sync.

use super::journal::{Journal, Replay};
use super::segment::{
    create_segment, cut_segment, list_segments, recover_segment, segment_path, write_frame,
};
use super::{AppendRequest, PartitionShared};
use crate::log::LogError;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Most append requests taken into one group (one sync).
const MAX_GROUP: usize = 1024;

/// A partition's files after crash recovery, ready to become a [`PartitionWriter`].
pub struct Recovered {
    pub segments: Vec<u64>,
    pub end: u64,
    dir: PathBuf,
    active: File,
    active_len: u64,
    segment_bytes: u64,
}

impl Recovered {
    /// Finds the partition's segments and works out its end.
    ///
    /// With a journal `checkpoint` (the partition's end when its files were last synced), the
    /// files are cut back to it: what follows may be a partial write, and the journal holds it
    /// whole. Without one, the segments were synced at every append, and only a torn tail (a write
    /// that never finished before a crash, so it was never acknowledged) is cut off.
    pub fn recover(dir: &Path, segment_bytes: u64, checkpoint: Option<u64>) -> io::Result<Self> {
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            create_segment(dir, 0)?;
            segments.push(0);
        }
        let last = *segments.last().expect("at least one segment");
        let (end, active_len) = match checkpoint {
            // Segments before the last were synced when the next one began, so only the last
            // is cut: back to the checkpoint, or to nothing if it began after the checkpoint
            // (or after an empty partition moved its numbering past it).
            Some(at) => {
                let end = at.max(last);
                let len = cut_segment(&segment_path(dir, last), end - last)?;
                (end, len)
            }
            None => {
                let (frames, len) = recover_segment(&segment_path(dir, last))?;
                (last + frames, len)
            }
        };
        let active = OpenOptions::new()
            .append(true)
            .open(segment_path(dir, last))?;
        Ok(Recovered {
            end,
            segments,
            dir: dir.to_path_buf(),
            active,
            active_len,
            segment_bytes,
        })
    }

    pub fn into_writer(self, shared: Arc<PartitionShared>) -> PartitionWriter {
        PartitionWriter {
            shared,
            dir: self.dir,
            out: BufWriter::with_capacity(1 << 16, self.active),
            active_len: self.active_len,
            next: self.end,
            flushed: self.end,
            segment_bytes: self.segment_bytes,
            unsynced: false,
        }
    }
}

/// Owns the active segment of one partition.
pub struct PartitionWriter {
    shared: Arc<PartitionShared>,
    dir: PathBuf,
    out: BufWriter<File>,
    active_len: u64,
    /// Offset of the next entry.
    next: u64,
    /// Entries below this offset are in the segment files (handed to the OS, maybe not
    /// synced); later ones may still be in `out`'s buffer, and are in the partition's tail.
    flushed: u64,
    segment_bytes: u64,
    /// Whether the active segment holds writes not yet synced.
    unsynced: bool,
}

impl PartitionWriter {
    /// Writes one entry (into the file's buffer), starting a new segment first when the active
    /// one is full.
    fn write(&mut self, entry: &[u8]) -> io::Result<()> {
        if self.active_len >= self.segment_bytes {
            self.roll()?;
        }
        self.active_len += write_frame(&mut self.out, entry)? as u64;
        self.next += 1;
        self.unsynced = true;
        self.remember(entry)
    }

    /// Keeps `entry` (just written) in the partition's tail, for readers to take from memory.
    /// Entries that leave the tail are in the segment file first: a reader that misses the
    /// tail reads them there.
    fn remember(&mut self, entry: &[u8]) -> io::Result<()> {
        let mut tail = self.shared.tail.lock().expect("tail lock");
        tail.push(entry);
        if let Some(start) = tail.start_after_trim() {
            if start > self.flushed {
                // Not across the syscall: readers take the same lock.
                drop(tail);
                self.flush()?;
                tail = self.shared.tail.lock().expect("tail lock");
            }
            tail.trim();
        }
        Ok(())
    }

    /// Hands everything written to the segment file (not synced).
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.flushed = self.next;
        Ok(())
    }

    /// Syncs the active segment if it has unsynced writes.
    fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        if self.unsynced {
            self.out.get_ref().sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Seals the active segment (synced, so the journal never needs to rewrite it) and starts a
    /// new one at the next offset.
    fn roll(&mut self) -> io::Result<()> {
        self.sync()?;
        let file = create_segment(&self.dir, self.next)?;
        self.out = BufWriter::with_capacity(1 << 16, file);
        self.active_len = 0;
        self.shared
            .state
            .lock()
            .expect("partition lock")
            .segments
            .push(self.next);
        Ok(())
    }

    /// Moves an empty partition's numbering to `offset`: a fresh segment based there replaces
    /// the empty one. Refused when the partition holds entries.
    fn resume(&mut self, offset: u64) -> Result<u64, LogError> {
        let (segments, end) = {
            let state = self.shared.state.lock().expect("partition lock");
            (state.segments.clone(), state.end)
        };
        let empty = segments.len() == 1 && segments[0] == end && self.active_len == 0;
        if !empty || offset < end {
            return Err(LogError::Storage(format!(
                "partition {} holds entries (up to offset {end}): it cannot continue at {offset}",
                self.shared.id
            )));
        }
        if offset == end {
            return Ok(offset);
        }
        let storage = |e: io::Error| LogError::Storage(format!("resuming at {offset}: {e}"));
        let file = create_segment(&self.dir, offset).map_err(storage)?;
        std::fs::remove_file(segment_path(&self.dir, segments[0])).map_err(storage)?;
        self.out = BufWriter::with_capacity(1 << 16, file);
        self.active_len = 0;
        self.next = offset;
        self.flushed = offset;
        self.shared
            .tail
            .lock()
            .expect("tail lock")
            .restart_at(offset);
        let mut state = self.shared.state.lock().expect("partition lock");
        state.segments = vec![offset];
        self.shared.set_end(&mut state, offset);
        Ok(offset)
    }

    /// Makes what was written visible to readers.
    fn publish(&self) {
        let mut state = self.shared.state.lock().expect("partition lock");
        self.shared.set_end(&mut state, self.next);
        self.shared.announce(&state);
    }
}

/// Owns every partition's active segment and the journal.
pub struct Writer {
    partitions: Vec<PartitionWriter>,
    journal: Journal,
    /// Set once a write or sync failed: no more appends until a restart recovers the files
    /// (after a failed sync the files' state is unknown).
    failed: Option<String>,
}

impl Writer {
    /// Completes recovery: appends the entries the journal holds past each partition's
    /// checkpoint, syncs everything and starts a new journal generation.
    pub fn new(
        partitions: Vec<PartitionWriter>,
        journal: Journal,
        replay: Replay,
    ) -> Result<Writer, LogError> {
        let mut writer = Writer {
            partitions,
            journal,
            failed: None,
        };
        let mut replayed = 0usize;
        for frame in replay.frames {
            let partition = &mut writer.partitions[frame.partition as usize];
            if frame.offset < partition.next {
                continue;
            }
            replayed += 1;
            if frame.offset > partition.next {
                return Err(LogError::Storage(format!(
                    "{}: partition {} continues at offset {} but the journal's next entry for it is {}; \
                     entries are missing. Restore the log directory or rebuild this node's data",
                    writer.journal.path().display(),
                    frame.partition,
                    partition.next,
                    frame.offset
                )));
            }
            partition
                .write(&frame.payload)
                .map_err(|e| LogError::Storage(format!("replaying the journal failed: {e}")))?;
        }
        if replayed > 0 {
            tracing::info!(
                entries = replayed,
                "embedded log: re-appended the journal's entries after an unclean stop"
            );
        }
        writer
            .checkpoint()
            .map_err(|e| LogError::Storage(format!("syncing the recovered log failed: {e}")))?;
        for partition in &writer.partitions {
            partition.publish();
        }
        Ok(writer)
    }

    /// Syncs every segment file and starts a new journal generation from their ends.
    fn checkpoint(&mut self) -> io::Result<()> {
        for partition in &mut self.partitions {
            partition.sync()?;
        }
        let ends: Vec<u64> = self.partitions.iter().map(|p| p.next).collect();
        self.journal.start_generation(&ends)
    }

    /// Serves appends until every sender is gone, then syncs everything so that the next start
    /// has nothing to replay.
    pub fn run(mut self, mut requests: mpsc::Receiver<AppendRequest>) {
        while let Some(first) = requests.blocking_recv() {
            if first.resume_at.is_some() {
                self.resume(first);
                continue;
            }
            let mut group = vec![first];
            // A resume request ends the group; it runs after the group's appends.
            let mut resume: Option<AppendRequest> = None;
            while group.len() < MAX_GROUP {
                match requests.try_recv() {
                    Ok(request) if request.resume_at.is_some() => {
                        resume = Some(request);
                        break;
                    }
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.write_and_reply(group);
            if let Some(request) = resume {
                self.resume(request);
            }
        }
        if self.failed.is_none()
            && let Err(e) = self.checkpoint()
        {
            tracing::warn!(error = %e, "embedded log: the final sync failed; the next start replays the journal");
        }
    }

    fn resume(&mut self, request: AppendRequest) {
        let offset = request.resume_at.expect("a resume request");
        if let Some(reason) = &self.failed {
            let _ = request
                .reply
                .send(Err(LogError::Unavailable(reason.clone())));
            return;
        }
        let result = self.partitions[request.partition as usize]
            .resume(offset)
            .and_then(|at| {
                // The checkpoint must know the new numbering: recovery cuts back to it.
                self.checkpoint()
                    .map(|()| at)
                    .map_err(|e| LogError::Storage(format!("resuming at {offset}: {e}")))
            });
        let _ = request.reply.send(result);
    }

    /// Writes one group, makes it durable with one sync, and answers each of its requests.
    fn write_and_reply(&mut self, group: Vec<AppendRequest>) {
        if self.failed.is_none() {
            match self.write_group(&group) {
                Ok(firsts) => {
                    // Once per partition the group touched: a condvar notify is a syscall.
                    let mut touched = vec![false; self.partitions.len()];
                    for request in &group {
                        touched[request.partition as usize] = true;
                    }
                    for (partition, _) in self.partitions.iter().zip(touched).filter(|(_, t)| *t) {
                        partition.publish();
                    }
                    for (request, first) in group.into_iter().zip(firsts) {
                        let _ = request.reply.send(Ok(first));
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "embedded log write failed");
                    let reason = format!(
                        "writing the embedded log failed ({e}); restart the node to recover its files"
                    );
                    for partition in &self.partitions {
                        let mut state = partition.shared.state.lock().expect("partition lock");
                        state.failed = Some(reason.clone());
                        partition.shared.announce(&state);
                    }
                    self.failed = Some(reason);
                }
            }
        }
        let reason = self.failed.clone().expect("failed");
        for request in group {
            let _ = request
                .reply
                .send(Err(LogError::Unavailable(reason.clone())));
        }
    }

    fn write_group(&mut self, group: &[AppendRequest]) -> io::Result<Vec<u64>> {
        let mut firsts = Vec::with_capacity(group.len());
        for request in group {
            let partition = &mut self.partitions[request.partition as usize];
            firsts.push(partition.next);
            for entry in &request.entries {
                self.journal.add(request.partition, partition.next, entry);
                partition.write(entry)?;
            }
        }
        // The segment files get the group when their buffers fill (or an entry leaves a tail
        // unwritten, or they are synced): readers find it in the partitions' tails meanwhile,
        // and the journal makes it durable.
        if self.journal.pending_fits() {
            self.journal.commit()?;
        } else {
            // The journal is full: sync the segment files instead (this group included) and
            // start the journal over.
            self.checkpoint()?;
        }
        Ok(firsts)
    }
}
