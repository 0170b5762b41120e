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
    pub fn run(mut self, mut requests: mpsc::Receiver<AppendRequest>) {
        while let Some(first) = requests.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match requests.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
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
                continue;
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
