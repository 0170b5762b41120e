#!/usr/bin/env python3
"""Regenerates murmur2_kafka_python.json: partition test vectors from an independent implementation.

The vectors come from kafka-python's DefaultPartitioner murmur2 (`pip install kafka-python`), which is
Kafka's own keyed partitioner ported to Python. `partition_of` must agree with it for every key and count.
"""
import json
from kafka.partitioner.default import murmur2

KEYS = [b"", b"a", b"pk1", b"pk2", b"pk3", b"blah", b"hello world", b"\x00", b"a\x00b",
        "ünïcödé".encode(), "日本語キー".encode(), b"user:12345", b"abcd", b"abcde", b"abcdef",
        b"abcdefg", b"\xff\xfe\xfd", b"x" * 100]
COUNTS = [1, 2, 3, 4, 7, 8, 16, 100, 256]

vectors = []
for key in KEYS:
    h = murmur2(key) & 0xFFFFFFFF
    vectors.append({
        "key_hex": key.hex(),
        "murmur2": h,
        "partitions": {str(n): (h & 0x7FFFFFFF) % n for n in COUNTS},
    })
with open("murmur2_kafka_python.json", "w") as f:
    json.dump(vectors, f, indent=1)
    f.write("\n")
