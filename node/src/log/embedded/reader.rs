//! Reading one partition of the embedded log in offset order, following its durable end.

use super::PartitionShared;
use super::segment::{Frame, read_frame, segment_path, skip_frame};
use crate::log::{LogError, LogRecord, PartitionReader};
use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

struct OpenSegment {
    base: u64,
    input: BufReader<File>,
    /// Offset of the entry `input` reads next.
    next: u64,
}

/// A reader of one partition (see [`PartitionReader`]).
pub struct EmbeddedReader {
    shared: Arc<PartitionShared>,
    next: u64,
    current: Option<OpenSegment>,
    /// An error met after some records were read: those go out first, the error on the next call.
    pending: Option<LogError>,
    /// The waker this reader registered with the partition, removed when it is dropped.
    waker: Option<crate::log::Waker>,
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
        let mut reader = EmbeddedReader {
            shared,
            next: from,
            current: None,
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

    /// Moves the open segment's reader to `offset` when that segment holds it and the reader is
    /// not past it; otherwise closes it, to be reopened at `offset`. A reader that was taking
    /// entries from the tail and fell behind it again goes on from where it left the file,
    /// rather than reading the segment again from its start (up to LOG_SEGMENT_BYTES each time
    /// it falls behind).
    fn catch_up(&mut self, offset: u64) -> Result<(), LogError> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        if current.next > offset || self.segment_of(offset)? != current.base {
            self.current = None;
            return Ok(());
        }
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
                // The segment reader stays where it was, to go on from there if this reader
                // falls behind the tail again, unless its segment was deleted meanwhile.
                if self
                    .current
                    .as_ref()
                    .is_some_and(|c| c.base < self.shared.first_segment.load(Ordering::Acquire))
                {
                    self.current = None;
                }
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
            self.catch_up(self.next)?;
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
