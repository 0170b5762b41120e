//! The one partition function (docs/architecture.md invariant 1): Kafka's default keyed partitioner.

/// Kafka's murmur2 hash (seed `0x9747b28c`), bit-for-bit as in the Java client's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition that owns `pk`: `(murmur2(pk) & 0x7fffffff) % partitions`, exactly what Kafka's
/// murmur2 partitioner picks for message key `pk` (the Java client's default; librdkafka clients
/// call it `murmur2_random`). Writes set the partition explicitly with it and reads route with it,
/// so the two can never disagree (FireScroll's bug; docs/architecture.md, invariant 1).
///
/// # Panics
/// If `partitions` is zero; configuration rejects that long before.
pub fn partition_of(pk: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "partition count must be positive");
    (murmur2(pk.as_bytes()) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors produced by kafka-python's port of Kafka's partitioner
    /// (`node/tests/data/gen_murmur2_vectors.py`), not by this code.
    const VECTORS: &str = include_str!("../../tests/data/murmur2_kafka_python.json");

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn matches_kafka_python() {
        let vectors: Vec<serde_json::Value> = serde_json::from_str(VECTORS).unwrap();
        assert!(vectors.len() >= 15);
        for v in vectors {
            let key = unhex(v["key_hex"].as_str().unwrap());
            assert_eq!(
                u64::from(murmur2(&key)),
                v["murmur2"].as_u64().unwrap(),
                "{key:?}"
            );
            let Ok(pk) = std::str::from_utf8(&key) else {
                continue;
            };
            for (count, partition) in v["partitions"].as_object().unwrap() {
                let count: u32 = count.parse().unwrap();
                assert_eq!(
                    u64::from(partition_of(pk, count)),
                    partition.as_u64().unwrap(),
                    "pk {pk:?} with {count} partitions"
                );
            }
        }
    }
}
