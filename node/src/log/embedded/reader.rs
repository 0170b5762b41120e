//! Reading one partition of the embedded log in offset order, following its durable end.

use super::PartitionShared;
use super::segment::{Frame, read_frame, segment_path, skip_frame};
use crate::log::{LogError, LogRecord, PartitionReader};
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

struct OpenSegment {
    base: u64,
    input: BufReader<File>,
    /// Offset of the entry `input` reads next.
    next: u64,
}

/// Where a reader left a segment file when it went on from the partition's tail.
struct LeftFile {
    base: u64,
    /// Byte position of the entry at `next`.
    position: u64,
    next: u64,
}

/// A reader of one partition (see [`PartitionReader`]).
pub struct EmbeddedReader {
    shared: Arc<PartitionShared>,
    next: u64,
    current: Option<OpenSegment>,
    /// Where it left the files for the tail: if it falls behind the tail again, it goes on
    /// from there rather than reading the segment from its start (up to LOG_SEGMENT_BYTES,
    /// each time). No file is held open meanwhile (nor a deleted segment's disk space).
    left: Option<LeftFile>,
    /// An error met after some records were read: those go out first, the error on the next call.
    pending: Option<LogError>,
    /// The waker this reader registered with the partition, removed when it is dropped.
    waker: Option<crate::log::Waker>,
    /// The partition's end when the reader opened.
    end_at_open: u64,
    /// Frames passed over in the segment files to reach an offset (what a test looks at).
    #[cfg(test)]
    pub(super) skipped: u64,
}

impl Drop for EmbeddedReader {
    fn drop(&mut self) {
        if let Some(waker) = self.waker.take() {
            let mut state = self.shared.state.lock().expect("partition lock");
            state.wakers.retain(|w| !Arc::ptr_eq(w, &waker));
        }
    }
}

impl EmbeddedReader {
    pub fn new(shared: Arc<PartitionShared>, from: u64) -> Result<Self, LogError> {
        let end_at_open = shared.state.lock().expect("partition lock").end;
        let mut reader = EmbeddedReader {
            end_at_open,
            shared,
            next: from,
            current: None,
            left: None,
            pending: None,
            waker: None,
            #[cfg(test)]
            skipped: 0,
        };
        // A reader starting within the tail reads nothing from the files (which may not have
        // those entries yet); only the offset is checked.
        let in_tail = from >= reader.shared.tail.lock().expect("tail lock").start();
        if in_tail {
            reader.segment_of(from)?;
        } else {
            reader.open_at(from)?;
        }
        Ok(reader)
    }

    fn storage(&self, what: String) -> LogError {
        LogError::Storage(format!("partition {}: {what}", self.shared.id))
    }

    /// The base of the segment holding `offset`; an error if the log does not hold it.
    fn segment_of(&self, offset: u64) -> Result<u64, LogError> {
        let state = self.shared.state.lock().expect("partition lock");
        let start = state.segments.first().copied().unwrap_or(state.end);
        if offset < start || offset > state.end {
            return Err(LogError::Truncated {
                partition: self.shared.id,
                requested: offset,
                start,
            });
        }
        Ok(*state
            .segments
            .iter()
            .rev()
            .find(|&&base| base <= offset)
            .expect("a segment starts at or below any offset at or above the start"))
    }

    /// Opens the segment holding `offset` and positions the reader on it.
    fn open_at(&mut self, offset: u64) -> Result<(), LogError> {
        let base = self.segment_of(offset)?;
        if self.current.as_ref().is_some_and(|c| c.base == base) {
            return Err(self.storage(format!(
                "segment {base} ends before offset {offset} although the log is durable past it"
            )));
        }
        let path = segment_path(&self.shared.dir, base);
        let file = File::open(&path)
            .map_err(|e| self.storage(format!("cannot open {}: {e}", path.display())))?;
        self.current = Some(OpenSegment {
            base,
            input: BufReader::with_capacity(1 << 16, file),
            next: base,
        });
        self.skip_to(offset)
    }

    /// The base of the segment file this reader holds open, if any.
    #[cfg(test)]
    pub(super) fn open_segment(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.base)
    }

    /// Notes where the open segment's reader is, and closes it: the reader goes on from the tail.
    fn leave_file(&mut self) -> Result<(), LogError> {
        if let Some(mut current) = self.current.take() {
            let position = current
                .input
                .stream_position()
                .map_err(|e| self.storage(format!("segment {}: {e}", current.base)))?;
            self.left = Some(LeftFile {
                base: current.base,
                position,
                next: current.next,
            });
        }
        Ok(())
    }

    /// Before reading the files at `offset` again: reopens the segment where the reader left
    /// it, when that segment holds `offset` and the reader had not passed it, and moves on to
    /// `offset`; otherwise the segment is opened (and read from its start) when needed.
    fn return_to_file(&mut self, offset: u64) -> Result<(), LogError> {
        // An open segment is always at the reader's offset; one that is not (never expected)
        // is closed rather than read from the wrong place.
        if self.current.as_ref().is_some_and(|c| c.next != offset) {
            self.current = None;
        }
        let Some(left) = self.left.take() else {
            return Ok(());
        };
        if self.current.is_some() || left.next > offset || self.segment_of(offset)? != left.base {
            return Ok(());
        }
        let path = segment_path(&self.shared.dir, left.base);
        let reopened = File::open(&path).and_then(|mut file| {
            file.seek(SeekFrom::Start(left.position))?;
            Ok(file)
        });
        // Deleted meanwhile (the log moved past it): opened again from the start, as before.
        let Ok(file) = reopened else {
            return Ok(());
        };
        self.current = Some(OpenSegment {
            base: left.base,
            input: BufReader::with_capacity(1 << 16, file),
            next: left.next,
        });
        self.skip_to(offset)
    }

    /// Passes over the open segment's entries up to `offset` (in that segment).
    fn skip_to(&mut self, offset: u64) -> Result<(), LogError> {
        let shared = &self.shared;
        let current = self.current.as_mut().expect("an open segment");
        let path = || segment_path(&shared.dir, current.base);
        while current.next < offset {
            let more = skip_frame(&mut current.input).map_err(|e| {
                LogError::Storage(format!(
                    "partition {}: cannot read {}: {e}",
                    shared.id,
                    path().display()
                ))
            })?;
            if !more {
                return Err(LogError::Storage(format!(
                    "partition {}: segment {} ends at offset {}, before offset {offset}",
                    shared.id, current.base, current.next
                )));
            }
            current.next += 1;
            #[cfg(test)]
            {
                self.skipped += 1;
            }
        }
        Ok(())
    }
}

impl PartitionReader for EmbeddedReader {
    fn set_waker(&mut self, waker: crate::log::Waker) {
        let mut state = self.shared.state.lock().expect("partition lock");
        if let Some(old) = self.waker.take() {
            state.wakers.retain(|w| !Arc::ptr_eq(w, &old));
        }
        state.wakers.push(waker.clone());
        self.waker = Some(waker);
    }

    fn end_at_open(&self) -> Option<u64> {
        Some(self.end_at_open)
    }

    fn read(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, LogError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let mut records = Vec::new();
        if let Err(e) = self.read_into(&mut records, max, wait) {
            if records.is_empty() {
                return Err(e);
            }
            self.pending = Some(e);
        }
        Ok(records)
    }
}

impl EmbeddedReader {
    /// Reads up to `max` records into `records`; on error, what was read so far stays there.
    fn read_into(
        &mut self,
        records: &mut Vec<LogRecord>,
        max: usize,
        wait: Duration,
    ) -> Result<(), LogError> {
        let next = self.next;
        let end = if wait.is_zero() {
            self.shared.published_end()
        } else {
            let mut state = self.shared.state.lock().expect("partition lock");
            if state.end <= next && state.failed.is_none() {
                // Counted, so that the writer notifies only when someone waits.
                state.blocked += 1;
                state = self
                    .shared
                    .appended
                    .wait_timeout_while(state, wait, |s| s.end <= next && s.failed.is_none())
                    .expect("partition lock")
                    .0;
                state.blocked -= 1;
            }
            state.end
        };
        while self.next < end && records.len() < max {
            let (copied, tail_start) = {
                let tail = self.shared.tail.lock().expect("tail lock");
                let copied = tail.copy_into(self.next, end, max - records.len(), records);
                (copied as u64, tail.start())
            };
            if copied > 0 {
                self.next += copied;
                self.leave_file()?;
                continue;
            }
            // Before the tail: from the segment files, which hold everything below its start.
            let file_end = end.min(tail_start);
            if self.next >= file_end {
                return Err(self.storage(format!(
                    "entry at offset {} is neither in memory nor in the segment files",
                    self.next
                )));
            }
            self.return_to_file(self.next)?;
            while self.next < file_end && records.len() < max {
                let Some(current) = self.current.as_mut() else {
                    self.open_at(self.next)?;
                    continue;
                };
                let frame = read_frame(&mut current.input)
                    .map_err(|e| LogError::Storage(format!("reading the log failed: {e}")))?;
                match frame {
                    Frame::Entry(payload) => {
                        records.push(LogRecord {
                            offset: self.next,
                            payload,
                        });
                        self.next += 1;
                        current.next += 1;
                    }
                    // This segment is done; the entry at `next` starts the following one.
                    Frame::End => self.open_at(self.next)?,
                    Frame::Torn => {
                        return Err(self.storage(format!(
                            "entry at offset {} is corrupt (checksum or length)",
                            self.next
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}
