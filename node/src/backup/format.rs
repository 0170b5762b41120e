//! The snapshot object: one partition's records at one applied offset, gzip-compressed.
//!
//! Inside the gzip stream: the magic line `FIRESCROLL-SNAPSHOT 1\n`, a header (JSON, one line:
//! namespace, partition, partition count, the offset to apply next), then each record as
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

/// A decoded snapshot: its header, records and verified trailer.
pub struct Decoded {
    pub header: Header,
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    pub trailer: Trailer,
}

/// Reads and verifies a snapshot: the records must hash to what the trailer says.
pub fn decode(bytes: &[u8]) -> Result<Decoded, FormatError> {
    let mut raw = Vec::new();
    GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .map_err(|e| FormatError::Corrupt(format!("gzip: {e}")))?;
    let rest = raw.strip_prefix(MAGIC).ok_or(FormatError::NotASnapshot)?;
    let line_end = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| FormatError::Corrupt("no header".into()))?;
    let header: Header = serde_json::from_slice(&rest[..line_end])
        .map_err(|e| FormatError::Corrupt(format!("header: {e}")))?;
    let mut at = line_end + 1;
    let mut take = |n: usize, what: &str| -> Result<&[u8], FormatError> {
        let slice = rest
            .get(at..at + n)
            .ok_or_else(|| FormatError::Corrupt(format!("cut short in {what}")))?;
        at += n;
        Ok(slice)
    };
    let mut records = Vec::new();
    let mut hasher = Sha256::new();
    loop {
        let len = u32::from_be_bytes(take(4, "a length")?.try_into().expect("4 bytes"));
        if len == END {
            break;
        }
        let key = take(len as usize, "a key")?.to_vec();
        let vlen = u32::from_be_bytes(take(4, "a length")?.try_into().expect("4 bytes"));
        let value = take(vlen as usize, "a value")?.to_vec();
        for part in [&key, &value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        records.push((key, value));
    }
    let trailer: Trailer = serde_json::from_slice(&rest[at..])
        .map_err(|e| FormatError::Corrupt(format!("trailer: {e}")))?;
    let actual = Digest::from(hasher).to_string();
    if actual != trailer.sha256 || trailer.records != records.len() as u64 {
        return Err(FormatError::Mismatch {
            expected: trailer.sha256,
            actual,
        });
    }
    Ok(Decoded {
        header,
        records,
        trailer,
    })
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
        }
    }

    #[test]
    fn round_trips_and_hashes_like_the_partition_digest() {
        let records = vec![
            (b"a\0\x01".to_vec(), b"\x01value".to_vec()),
            (b"b\0\x01x".to_vec(), vec![0u8; 1000]),
        ];
        let (bytes, trailer) =
            encode::<_, _, ()>(&header(), records.iter().cloned().map(Ok)).unwrap();
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.header, header());
        assert_eq!(decoded.records, records);
        assert_eq!(decoded.trailer, trailer);
        // The same framing as the store's digest, which `model::pk_version` shares.
        let expected =
            crate::model::pk_version(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(trailer.sha256, expected);
        let (empty, t) = encode::<Vec<u8>, Vec<u8>, ()>(&header(), []).unwrap();
        assert_eq!(t.records, 0);
        assert_eq!(decode(&empty).unwrap().records.len(), 0);
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
        assert!(matches!(decode(b"not gzip"), Err(FormatError::Corrupt(_))));
    }
}
