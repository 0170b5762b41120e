//! The snapshot object: one partition's records at one applied offset, gzip-compressed.
//!
//! Inside the gzip stream: the magic line `FIRESCROLL-SNAPSHOT 1\n`, a header (JSON, one line:
//! namespace, partition, partition count, the offset to apply next, and — since 2026-12-07, a
//! field older readers skip — the last entry applied, `model/lineage.rs`), then each record as
//! `u32 key length, key, u32 value length, value` (big-endian; key and value exactly as stored),
//! in key order, then the end marker `u32 0xFFFFFFFF` and a trailer (JSON: record count, content
//! SHA-256). The content SHA-256 is computed exactly as the partition digest
//! (`/debug/partitions`), so a snapshot also proves that the replica it came from agreed with
//! every other replica at that offset.

use crate::model::Digest;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};

const MAGIC: &[u8] = b"FIRESCROLL-SNAPSHOT 1\n";
const END: u32 = u32::MAX;
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What a snapshot is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub namespace: String,
    pub partition: u32,
    pub partitions: u32,
    /// The log offset the partition applies next: the snapshot holds every entry below it.
    pub next_offset: u64,
    /// The last entry the partition applied: a node restoring the snapshot checks that its
    /// log holds that entry there before it applies more (absent in snapshots made before
    /// 2026-12-07, and of a partition that applied nothing since its own restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_entry: Option<crate::model::AppliedEntry>,
}

/// What the trailer says of the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub records: u64,
    /// Equal to the partition digest at `next_offset`.
    pub sha256: String,
}

/// Why bytes are not a snapshot this build can read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a FireScroll snapshot (bad magic or version)")]
    NotASnapshot,
    #[error("the snapshot is cut short or corrupt: {0}")]
    Corrupt(String),
    #[error("the records hash to {actual}, but the snapshot says {expected}")]
    Mismatch { expected: String, actual: String },
}

/// Why encoding stopped: the records could not be read, or the sink refused the bytes.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError<E> {
    #[error("reading the records: {0}")]
    Records(E),
    #[error("writing the snapshot: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes a snapshot of `records` (stored key, stored value, in key order) under `header`
/// into `out` as it goes (nothing is held beyond the compressor's window); returns `out` and
/// the trailer.
pub fn encode_into<W: Write, K: AsRef<[u8]>, V: AsRef<[u8]>, E>(
    header: &Header,
    records: impl IntoIterator<Item = Result<(K, V), E>>,
    out: W,
) -> Result<(W, Trailer), EncodeError<E>> {
    let mut out = GzEncoder::new(out, Compression::fast());
    out.write_all(MAGIC)?;
    serde_json::to_writer(&mut out, header).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    for record in records {
        let (key, value) = record.map_err(EncodeError::Records)?;
        let (key, value) = (key.as_ref(), value.as_ref());
        for part in [key, value] {
            out.write_all(&(part.len() as u32).to_be_bytes())?;
            out.write_all(part)?;
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        count += 1;
    }
    out.write_all(&END.to_be_bytes())?;
    let trailer = Trailer {
        records: count,
        sha256: Digest::from(hasher).to_string(),
    };
    serde_json::to_writer(&mut out, &trailer).map_err(std::io::Error::from)?;
    Ok((out.finish()?, trailer))
}

/// [`encode_into`] memory: the compressed bytes and the trailer.
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>, E>(
    header: &Header,
    records: impl IntoIterator<Item = Result<(K, V), E>>,
) -> Result<(Vec<u8>, Trailer), E> {
    encode_into(header, records, Vec::new()).map_err(|e| match e {
        EncodeError::Records(e) => e,
        EncodeError::Io(e) => unreachable!("writing to memory cannot fail: {e}"),
    })
}

/// A record as stored: its encoded key and its stored value.
pub type StoredRecord = (Vec<u8>, Vec<u8>);

/// The longest key or value a snapshot may hold: stored values stay below 64 MiB
/// (`MAX_VALUE_BYTES` must, and edits at apply keep a document within its size or 1 MiB) plus
/// their header, so anything longer is damage (a gzip stream of zeros decompresses to any
/// length), refused before it is held.
const MAX_PART_BYTES: u32 = 2 * crate::model::READ_ANSWER_BYTES as u32;

/// Bytes the header line and the trailer may take: far more than either needs, so a damaged
/// object cannot make the reader hold an unbounded line.
const MAX_LINE_BYTES: u64 = 64 << 10;

/// Reads a snapshot as it goes, one record at a time: the header first, then the records, and
/// at the end the trailer, against which the records' hash and count are checked. Memory stays
/// at one record (and gzip's window) whatever the snapshot's size, and a length that lies
/// allocates only what the stream really holds.
pub struct Reader<R: Read> {
    input: std::io::BufReader<GzDecoder<R>>,
    header: Header,
    hasher: Sha256,
    records: u64,
    /// The last key read: each must sort after it, as the store's keys do (a restore writes
    /// the key index one pk at a time, and a digest is over keys in order).
    last_key: Vec<u8>,
    /// Set once the end marker was read and the trailer verified.
    trailer: Option<Trailer>,
}

impl<R: Read> Reader<R> {
    /// Starts reading the compressed snapshot `input`: checks the magic line and reads the
    /// header.
    pub fn new(input: R) -> Result<Self, FormatError> {
        let mut input = std::io::BufReader::new(GzDecoder::new(input));
        let mut magic = [0u8; MAGIC.len()];
        input.read_exact(&mut magic).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FormatError::NotASnapshot,
            _ => gzip(e),
        })?;
        if magic != MAGIC {
            return Err(FormatError::NotASnapshot);
        }
        let mut line = Vec::new();
        std::io::BufRead::read_until(&mut (&mut input).take(MAX_LINE_BYTES), b'\n', &mut line)
            .map_err(gzip)?;
        if line.pop() != Some(b'\n') {
            return Err(FormatError::Corrupt("no header".into()));
        }
        let header: Header = serde_json::from_slice(&line)
            .map_err(|e| FormatError::Corrupt(format!("header: {e}")))?;
        Ok(Reader {
            input,
            header,
            hasher: Sha256::new(),
            records: 0,
            last_key: Vec::new(),
            trailer: None,
        })
    }

    /// What the snapshot is of.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The trailer, once every record was read and matched it.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// The next record (stored key, stored value), or `None` after the last one, once the
    /// trailer is read and the records hash and count to what it says.
    pub fn next_record(&mut self) -> Result<Option<StoredRecord>, FormatError> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        let len = self.length("a length")?;
        if len == END {
            self.finish()?;
            return Ok(None);
        }
        let key = self.part(len, "a key")?;
        if self.records > 0 && key <= self.last_key {
            return Err(FormatError::Corrupt(format!(
                "record {} is not in key order",
                self.records
            )));
        }
        self.last_key.clone_from(&key);
        let len = self.length("a length")?;
        let value = self.part(len, "a value")?;
        for part in [&key, &value] {
            self.hasher.update((part.len() as u64).to_be_bytes());
            self.hasher.update(part);
        }
        self.records += 1;
        Ok(Some((key, value)))
    }

    fn length(&mut self, what: &str) -> Result<u32, FormatError> {
        let mut bytes = [0u8; 4];
        self.input
            .read_exact(&mut bytes)
            .map_err(|e| cut_short(e, what))?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn part(&mut self, len: u32, what: &str) -> Result<Vec<u8>, FormatError> {
        if len > MAX_PART_BYTES {
            return Err(FormatError::Corrupt(format!(
                "{what} of {len} bytes, longer than any stored record"
            )));
        }
        // Grown as the bytes arrive, not allocated from the length up front.
        let mut part = Vec::new();
        (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut part)
            .map_err(gzip)?;
        if part.len() != len as usize {
            return Err(FormatError::Corrupt(format!("cut short in {what}")));
        }
        Ok(part)
    }

    fn finish(&mut self) -> Result<(), FormatError> {
        let mut text = Vec::new();
        (&mut self.input)
            .take(MAX_LINE_BYTES)
            .read_to_end(&mut text)
            .map_err(gzip)?;
        let trailer: Trailer = serde_json::from_slice(&text)
            .map_err(|e| FormatError::Corrupt(format!("trailer: {e}")))?;
        let actual = Digest::from(std::mem::take(&mut self.hasher)).to_string();
        if actual != trailer.sha256 || trailer.records != self.records {
            return Err(FormatError::Mismatch {
                expected: trailer.sha256,
                actual,
            });
        }
        self.trailer = Some(trailer);
        Ok(())
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<StoredRecord, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

fn gzip(e: std::io::Error) -> FormatError {
    FormatError::Corrupt(format!("gzip: {e}"))
}

fn cut_short(e: std::io::Error, what: &str) -> FormatError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FormatError::Corrupt(format!("cut short in {what}")),
        _ => gzip(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            namespace: "ns".into(),
            partition: 3,
            partitions: 4,
            next_offset: 42,
            last_entry: Some(crate::model::AppliedEntry::of(41, b"entry")),
        }
    }

    /// Every record of a snapshot, read to its end (the trailer checked).
    fn decode(bytes: &[u8]) -> Result<(Header, Vec<StoredRecord>, Trailer), FormatError> {
        let mut reader = Reader::new(bytes)?;
        let records = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
        let trailer = reader.trailer().cloned().expect("read to the end");
        Ok((reader.header().clone(), records, trailer))
    }

    #[test]
    fn round_trips_and_hashes_like_the_partition_digest() {
        let records = vec![
            (b"a\0\x01".to_vec(), b"\x01value".to_vec()),
            (b"b\0\x01x".to_vec(), vec![0u8; 1000]),
        ];
        let (bytes, trailer) =
            encode::<_, _, ()>(&header(), records.iter().cloned().map(Ok)).unwrap();
        let (read_header, read, read_trailer) = decode(&bytes).unwrap();
        assert_eq!(read_header, header());
        assert_eq!(read, records);
        assert_eq!(read_trailer, trailer);
        // The same framing as the store's digest, which `model::pk_version` shares.
        let expected =
            crate::model::pk_version(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(trailer.sha256, expected);
        let (empty, t) = encode::<Vec<u8>, Vec<u8>, ()>(&header(), []).unwrap();
        assert_eq!(t.records, 0);
        assert_eq!(decode(&empty).unwrap().1.len(), 0);
    }

    #[test]
    fn damage_is_detected() {
        let records = (0..100).map(|i| Ok::<_, ()>((format!("k{i}"), format!("v{i}"))));
        let (bytes, _) = encode(&header(), records).unwrap();
        // A flipped byte anywhere fails gzip's CRC or the content hash; never decodes quietly.
        for at in [10, bytes.len() / 2, bytes.len() - 9] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {at} went unnoticed");
        }
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        assert!(matches!(
            decode(b"not gzip"),
            Err(FormatError::Corrupt(_) | FormatError::NotASnapshot)
        ));
        // A length that lies (4 GiB in a tiny object) is an error, not a 4 GiB allocation.
        let lying = |length: u32| {
            let mut raw = MAGIC.to_vec();
            raw.extend_from_slice(
                b"{\"namespace\":\"ns\",\"partition\":3,\"partitions\":4,\"next_offset\":42}\n",
            );
            raw.extend_from_slice(&length.to_be_bytes());
            raw.extend_from_slice(b"short");
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(&raw).unwrap();
            gz.finish().unwrap()
        };
        let e = decode(&lying(u32::MAX - 1)).expect_err("a length past any record");
        assert!(
            e.to_string().contains("longer than any stored record"),
            "{e}"
        );
        // Below the bound, only the bytes there are held.
        let e = decode(&lying(MAX_PART_BYTES)).expect_err("a lying length");
        assert!(e.to_string().contains("cut short in a key"), "{e}");
        // Records out of key order (their own hash matching) would build a wrong key index.
        let unordered = [("b", "1"), ("a", "2")].map(|(k, v)| Ok::<_, ()>((k, v)));
        let (bytes, _) = encode(&header(), unordered).unwrap();
        let e = decode(&bytes).expect_err("records out of order");
        assert!(e.to_string().contains("not in key order"), "{e}");
        let twice = [("a", "1"), ("a", "2")].map(|(k, v)| Ok::<_, ()>((k, v)));
        let (bytes, _) = encode(&header(), twice).unwrap();
        assert!(decode(&bytes).is_err(), "a key twice");
    }
}
