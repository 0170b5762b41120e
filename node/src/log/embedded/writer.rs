//! The per-partition writer thread: group commit into the active segment.

use super::segment::{create_segment, list_segments, recover_segment, segment_path, write_frame};
use super::{AppendRequest, PartitionShared};
use crate::log::LogError;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Most append requests taken into one group (one fsync).
const MAX_GROUP: usize = 1024;

/// A partition's files after crash recovery, ready to become a [`Writer`].
pub struct Recovered {
    pub segments: Vec<u64>,
    pub end: u64,
    dir: PathBuf,
    active: File,
    active_len: u64,
    segment_bytes: u64,
}

/// Owns the active segment of one partition.
pub struct Writer {
    shared: Arc<PartitionShared>,
    dir: PathBuf,
    out: BufWriter<File>,
    active_len: u64,
    next: u64,
    segment_bytes: u64,
}

impl Writer {
    /// Finds the partition's segments, cuts a torn tail off the last one, and works out the end.
    pub fn recover(dir: &Path, segment_bytes: u64) -> io::Result<Recovered> {
        let mut segments = list_segments(dir)?;
        if segments.is_empty() {
            create_segment(dir, 0)?;
            segments.push(0);
        }
        let last = *segments.last().expect("at least one segment");
        let (frames, valid_len) = recover_segment(&segment_path(dir, last))?;
        let active = OpenOptions::new()
            .append(true)
            .open(segment_path(dir, last))?;
        Ok(Recovered {
            end: last + frames,
            segments,
            dir: dir.to_path_buf(),
            active,
            active_len: valid_len,
            segment_bytes,
        })
    }

    fn write_group(&mut self, group: &[AppendRequest]) -> io::Result<Vec<u64>> {
        let mut firsts = Vec::with_capacity(group.len());
        for request in group {
            firsts.push(self.next);
            for entry in &request.entries {
                if self.active_len >= self.segment_bytes {
                    self.roll()?;
                }
                self.active_len += write_frame(&mut self.out, entry)? as u64;
                self.next += 1;
            }
        }
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        Ok(firsts)
    }

    /// Seals the active segment and starts a new one at the next offset.
    fn roll(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
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

    /// Serves appends until every sender is gone.
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
        let mut state = self.shared.state.lock().expect("partition lock");
        state.segments = vec![offset];
        state.end = offset;
        Ok(offset)
    }

    pub fn run(mut self, mut requests: mpsc::Receiver<AppendRequest>) {
        while let Some(first) = requests.blocking_recv() {
            if let Some(offset) = first.resume_at {
                let _ = first.reply.send(self.resume(offset));
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
                let offset = request.resume_at.expect("a resume request");
                let _ = request.reply.send(self.resume(offset));
            }
        }
    }

    /// Writes one group (one fsync) and answers each of its requests.
    fn write_and_reply(&mut self, group: Vec<AppendRequest>) {
        let failed = self
            .shared
            .state
            .lock()
            .expect("partition lock")
            .failed
            .clone();
        if let Some(reason) = failed {
            for request in group {
                let _ = request
                    .reply
                    .send(Err(LogError::Unavailable(reason.clone())));
            }
            return;
        }
        match self.write_group(&group) {
            Ok(firsts) => {
                self.shared.state.lock().expect("partition lock").end = self.next;
                self.shared.appended.notify_all();
                for (request, first) in group.into_iter().zip(firsts) {
                    let _ = request.reply.send(Ok(first));
                }
            }
            Err(e) => {
                let reason = format!(
                    "writing partition {} of the embedded log failed ({e}); restart the node to recover its files",
                    self.shared.id
                );
                tracing::error!(partition = self.shared.id, error = %e, "embedded log write failed");
                self.shared.state.lock().expect("partition lock").failed = Some(reason.clone());
                for request in group {
                    let _ = request
                        .reply
                        .send(Err(LogError::Unavailable(reason.clone())));
                }
            }
        }
    }
}

impl Recovered {
    pub fn into_writer(self, shared: Arc<PartitionShared>) -> Writer {
        Writer {
            shared,
            dir: self.dir,
            out: BufWriter::with_capacity(1 << 16, self.active),
            active_len: self.active_len,
            next: self.end,
            segment_bytes: self.segment_bytes,
        }
    }
}
