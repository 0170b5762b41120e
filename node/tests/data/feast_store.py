# Feast (the ML feature store) with FireScroll as its Redis online store, as Feast's users set it
# up: a feature view over a parquet file, materialized into the online store, read back by
# entity. Feast keys entities by protobuf bytes and features by 4-byte hashes (neither UTF-8) and
# stores protobuf values. Prints "ok" when every assertion held.
# Usage: python feast_store.py <redis port> <empty directory>
import contextlib
import os
import sys
from datetime import datetime, timedelta, timezone

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float32, Int64

port, repo = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(repo, "data"), exist_ok=True)
with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
    f.write(
        f"""project: rides
registry: data/registry.db
provider: local
online_store:
  type: redis
  connection_string: "127.0.0.1:{port}"
offline_store:
  type: file
entity_key_serialization_version: 3
"""
    )
now = datetime.now(timezone.utc)
rows = {1001: (0.5, 10), 1002: (0.25, 20), 1003: (0.75, 30)}
pd.DataFrame(
    {
        "driver_id": list(rows),
        "conv_rate": [r[0] for r in rows.values()],
        "avg_daily_trips": [r[1] for r in rows.values()],
        "event_timestamp": [now - timedelta(hours=1)] * len(rows),
    }
).to_parquet(os.path.join(repo, "data", "driver_stats.parquet"))

driver = Entity(name="driver", join_keys=["driver_id"])
stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[Field(name="conv_rate", dtype=Float32), Field(name="avg_daily_trips", dtype=Int64)],
    source=FileSource(
        path=os.path.join(repo, "data", "driver_stats.parquet"), timestamp_field="event_timestamp"
    ),
)
store = FeatureStore(repo_path=repo)
# Feast reports its progress on stdout; this script's stdout is only its verdict.
with contextlib.redirect_stdout(sys.stderr):
    store.apply([driver, stats])
    store.materialize_incremental(end_date=now)
online = store.get_online_features(
    features=["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
    entity_rows=[{"driver_id": 1001}, {"driver_id": 1003}, {"driver_id": 9999}],
).to_dict()
assert online["driver_id"] == [1001, 1003, 9999], online
assert online["conv_rate"] == [0.5, 0.75, None], online
assert online["avg_daily_trips"] == [10, 30, None], online
print("ok")
