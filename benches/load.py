#!/usr/bin/env python3
"""Loads RECORDS records (pk key-%012d, sk "", ~100-byte JSON data) into a node over HTTP."""
import json, os, sys, urllib.request

url = sys.argv[1]
records = int(os.environ.get("RECORDS", "100000"))
batch = 1000
for start in range(0, records, batch):
    body = {"Records": [
        {"pk": f"key-{i:012d}", "sk": "", "data": {"id": i, "enabled": True, "version": 3, "pad": "x" * 54}}
        for i in range(start, min(start + batch, records))
    ], "wait": start + batch >= records}
    req = urllib.request.Request(url + "/records/put", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        reply = json.load(r)
print(f"loaded {records} records; last reply {json.dumps(reply)[:200]}")
