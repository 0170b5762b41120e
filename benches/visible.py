#!/usr/bin/env python3
"""Write-to-visible latency: ack of a write -> the same node answers a read that includes it.

For each sample: PUT one record (no wait) and time the ack; then GET it with min_offsets set to
the write's position (the node answers as soon as it has applied the entry) and time that. The
second figure is the visibility delay plus one HTTP round trip on loopback.
"""
import json, sys, time, urllib.request

url, samples = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 500

def post(path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)

ack, visible = [], []
for i in range(samples):
    t0 = time.perf_counter()
    reply = post("/records/put", {"Records": [{"pk": f"vis-{i}", "sk": "", "data": {"i": i}}]})
    t1 = time.perf_counter()
    got = post("/records/get", {"Records": [{"pk": f"vis-{i}", "sk": ""}], "min_offsets": reply["Positions"]})
    t2 = time.perf_counter()
    assert got["Records"], got
    ack.append(t1 - t0)
    visible.append(t2 - t1)

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] * 1000

print(f"ack p50 {pct(ack, .5):.2f} ms p99 {pct(ack, .99):.2f} ms | "
      f"ack->visible p50 {pct(visible, .5):.2f} ms p99 {pct(visible, .99):.2f} ms")
