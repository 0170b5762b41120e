//! Segment files: `p{partition}/{base_offset:020}.seg`, each a run of frames
//! `[len: u32 LE][crc32: u32 LE][payload]`. A segment's entries have consecutive offsets from its
//! base; the next segment starts where it ends.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes before each payload.
pub const FRAME_HEADER: usize = 8;
/// No frame is larger than this; a longer length field means a torn or corrupt tail.
pub const MAX_FRAME: usize = 64 << 20;

/// The file of the segment starting at `base`.
pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The bases of the segments in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".seg")
            && let Ok(base) = stem.parse::<u64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Writes one frame.
pub fn write_frame(out: &mut impl Write, payload: &[u8]) -> io::Result<usize> {
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("frame too large"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&crc32fast::hash(payload).to_le_bytes())?;
    out.write_all(payload)?;
    Ok(FRAME_HEADER + payload.len())
}

/// What reading the next frame found.
pub enum Frame {
    Entry(Vec<u8>),
    /// Clean end of the file.
    End,
    /// A partial or corrupt frame: a torn write at the tail, or damage.
    Torn,
}

/// Reads the next frame.
pub fn read_frame(input: &mut BufReader<File>) -> io::Result<Frame> {
    if input.fill_buf()?.is_empty() {
        return Ok(Frame::End);
    }
    let mut header = [0u8; FRAME_HEADER];
    if read_fully(input, &mut header)? < FRAME_HEADER {
        return Ok(Frame::Torn);
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Ok(Frame::Torn);
    }
    let mut payload = vec![0u8; len];
    if read_fully(input, &mut payload)? < len || crc32fast::hash(&payload) != crc {
        return Ok(Frame::Torn);
    }
    Ok(Frame::Entry(payload))
}

/// Skips the next frame without reading its payload; false at the end of the file.
pub fn skip_frame(input: &mut BufReader<File>) -> io::Result<bool> {
    if input.fill_buf()?.is_empty() {
        return Ok(false);
    }
    let mut header = [0u8; FRAME_HEADER];
    if read_fully(input, &mut header)? < FRAME_HEADER {
        return Ok(false);
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    input.seek_relative(i64::from(len))?;
    Ok(true)
}

pub fn read_fully(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Scans a segment, cuts off a torn tail (a write that never finished before a crash, so it was
/// never acknowledged), and returns (valid frames, valid length in bytes).
///
/// Only the end of the file can be torn: a bad frame followed by more data is damage to entries
/// that were acknowledged, and is refused rather than cut.
pub fn recover_segment(path: &Path) -> io::Result<(u64, u64)> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let total = file.metadata()?.len();
    let mut input = BufReader::with_capacity(1 << 16, file);
    let (mut frames, mut valid_len) = (0u64, 0u64);
    loop {
        match read_frame(&mut input)? {
            Frame::Entry(payload) => {
                frames += 1;
                valid_len += (FRAME_HEADER + payload.len()) as u64;
            }
            Frame::End => break,
            Frame::Torn => {
                if !is_torn_tail(path, valid_len, total)? {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: entry {frames} of this segment (byte {valid_len}) is corrupt and more data follows it; \
                             this is damage, not an interrupted write. Restore the file or rebuild this node's data",
                            path.display()
                        ),
                    ));
                }
                tracing::warn!(
                    segment = %path.display(),
                    kept_bytes = valid_len,
                    dropped_bytes = total - valid_len,
                    "cutting a torn tail off the embedded log (an unacknowledged write interrupted by a crash)"
                );
                break;
            }
        }
    }
    let mut file = input.into_inner();
    if valid_len < total {
        file.set_len(valid_len)?;
        file.sync_all()?;
    }
    file.seek(SeekFrom::Start(valid_len))?;
    Ok((frames, valid_len))
}

/// Cuts a segment back to its first `frames` entries (the journal holds everything after them)
/// and returns its length in bytes. Those entries were synced, so a damaged or missing one is
/// refused, not cut.
pub fn cut_segment(path: &Path, frames: u64) -> io::Result<u64> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let total = file.metadata()?.len();
    let mut input = BufReader::with_capacity(1 << 16, file);
    let mut len = 0u64;
    for index in 0..frames {
        match read_frame(&mut input)? {
            Frame::Entry(payload) => len += (FRAME_HEADER + payload.len()) as u64,
            Frame::End | Frame::Torn => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: entry {index} of this segment (byte {len}) is missing or corrupt, \
                         although it was synced; this is damage, not an interrupted write. \
                         Restore the file or rebuild this node's data",
                        path.display()
                    ),
                ));
            }
        }
    }
    let mut file = input.into_inner();
    if len < total {
        file.set_len(len)?;
        file.sync_all()?;
    }
    file.seek(SeekFrom::Start(len))?;
    Ok(len)
}

/// Whether the bad frame at `at` is the file's last: its header is incomplete, or the length it
/// declares reaches to (or past) the end of the file.
fn is_torn_tail(path: &Path, at: u64, total: u64) -> io::Result<bool> {
    if total - at < FRAME_HEADER as u64 {
        return Ok(true);
    }
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(at))?;
    let mut header = [0u8; FRAME_HEADER];
    file.read_exact(&mut header)?;
    let len = u64::from(u32::from_le_bytes(header[..4].try_into().expect("4 bytes")));
    Ok(at + FRAME_HEADER as u64 + len >= total)
}

/// Creates an empty segment file and makes its existence durable.
pub fn create_segment(dir: &Path, base: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(segment_path(dir, base))?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}
