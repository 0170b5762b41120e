#!/usr/bin/env python3
"""Chaos against a local cluster (scripts/cluster.sh start 3): counters (INCR) and set members
(SADD) written through every node's Redis port, transfers between the fields of one hash in
WATCH/MULTI/EXEC transactions (their sum never changes), reads through node0 (one reader with
redis-py's client-side cache, which must hold nothing stale at the end), a watcher per
partition following the change feed (/records/watch) through any node and resuming with its last
event id wherever its stream ends, while nodes are killed
with SIGKILL and restarted, or (CHAOS_BROKER=1) the broker is killed and restarted. At the end
every node must hold every acknowledged write exactly once (an INCR whose reply was lost may or
may not count), the hash's fields must add up to what they started at, every acknowledged set member must have
come through the change feed exactly once, no counter read through node0 may be lower than one
read there over 2 s before (reads never go back in time), and the read errors are listed.

    scripts/cluster.sh start 3                         # or REPLICA_GROUPS=1 scripts/cluster.sh start 3
    CHAOS_BROKER=1 scripts/chaos.py 6 60               # seed, seconds
    REPLICA_GROUPS=1 CHAOS_BROKER=1 scripts/chaos.py 6 60
    CHAOS_BROKER=mixed scripts/chaos.py 6 60           # nodes and the broker, at random
    CHAOS_WIPE=1 scripts/chaos.py 6 60                 # a killed node loses its disk 1 time in 3

A node that lost its disk replays every partition it gets from the log when it comes back: its
reads of them wait for that (or go to a member serving them), never answering older data.

Nodes are restarted as cluster.sh starts them (REPLICA_GROUPS as given to it). Client retries
are off: redis-py 6+ retries a command whose connection died, which counts an INCR twice.
"""
import os, re, random, shutil, subprocess, threading, time, json, sys, urllib.request
import redis
from redis.retry import Retry
from redis.backoff import NoBackoff
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", f"{ROOT}/target")
rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
DURATION = float(sys.argv[2]) if len(sys.argv) > 2 else 60
procs = {}

def env_for(i):
    e = dict(os.environ)
    e.update(DB_PATH=f".cluster/node{i}", API_PORT=str(8190 + 10 * i), INTERNAL_PORT=str(8191 + 10 * i),
             RESP_PORT=str(6379 + i), LISTEN_ADDR="127.0.0.1", GOSSIP_PORT=str(8192 + 10 * i),
             ADVERTISE_ADDR="127.0.0.1", GOSSIP_PEERS="127.0.0.1:8192", KAFKA_SEEDS="127.0.0.1:9092",
             NAMESPACE="local", PARTITIONS="4", REGION="local",
             INSTANCE_ID=f"node{i}", KAFKA_SESSION_MS="6000",
             REPLICA_GROUP=f"rg{i % int(os.environ.get('REPLICA_GROUPS', '3'))}")
    return e

def pid(i):
    return int(open(f"{ROOT}/.cluster/node{i}.pid").read())

def kill(i):
    os.kill(pid(i), 9)
    print(time.strftime("%T"), "killed node", i, flush=True)

def start(i):
    log = open(f"{ROOT}/.cluster/node{i}.log", "a")
    p = subprocess.Popen([f"{TARGET}/release/firescroll"], cwd=ROOT, env=env_for(i), stdout=log, stderr=log)
    open(f"{ROOT}/.cluster/node{i}.pid", "w").write(str(p.pid))
    print(time.strftime("%T"), "started node", i, flush=True)

stop = threading.Event()
lock = threading.Lock()
acked = {}      # counter -> acknowledged increments
unknown = {}    # counter -> increments with lost replies
members = set() # acknowledged SADD members
errors = {}

def worker(w):
    r = None
    n = 0
    while not stop.is_set():
        port = 6379 + rng.randrange(3)
        try:
            r = redis.Redis(port=port, socket_timeout=10, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
            for _ in range(200):
                if stop.is_set():
                    return
                kind = rng.random()
                c = f"c{rng.randrange(8)}"
                if kind < 0.6:
                    try:
                        r.incr(c)
                    except (redis.ConnectionError, redis.TimeoutError):
                        with lock: unknown[c] = unknown.get(c, 0) + 1
                        raise
                    except redis.ResponseError as e:
                        with lock:
                            errors[str(e)[:80]] = errors.get(str(e)[:80], 0) + 1
                            if "durable but" in str(e): unknown[c] = unknown.get(c, 0) + 1
                        continue
                    with lock: acked[c] = acked.get(c, 0) + 1
                else:
                    m = f"w{w}-{n}"; n += 1
                    try:
                        r.sadd("members", m)
                    except redis.ResponseError as e:
                        with lock: errors[str(e)[:80]] = errors.get(str(e)[:80], 0) + 1
                        continue
                    with lock: members.add(m)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            with lock: errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            time.sleep(0.05)

BANK_FIELDS = [f"f{k}" for k in range(5)]
transfers = {"committed": 0, "watch_aborted": 0, "failed": 0}
def banker():
    """Moves amounts between the hash's fields: WATCH, read two fields, write both in MULTI."""
    while not stop.is_set():
        try:
            r = redis.Redis(port=6379 + rng.randrange(3), socket_timeout=10, socket_connect_timeout=1,
                            retry=Retry(NoBackoff(), 0))
            for _ in range(100):
                if stop.is_set():
                    return
                a, b = rng.sample(BANK_FIELDS, 2)
                x = rng.randrange(1, 50)
                with r.pipeline() as p:
                    try:
                        p.watch("bank")
                        va, vb = (int(v) for v in p.hmget("bank", a, b))
                        p.multi()
                        p.hset("bank", a, va - x)
                        p.hset("bank", b, vb + x)
                        p.execute()
                        with lock: transfers["committed"] += 1
                    except redis.WatchError:
                        with lock: transfers["watch_aborted"] += 1
                    except redis.ResponseError as e:
                        with lock:
                            transfers["failed"] += 1
                            errors["tx: " + str(e)[:70]] = errors.get("tx: " + str(e)[:70], 0) + 1
        except (redis.ConnectionError, redis.TimeoutError) as e:
            with lock: errors["tx: " + type(e).__name__] = errors.get("tx: " + type(e).__name__, 0) + 1
            time.sleep(0.05)

import requests
PARTITIONS = int(os.environ.get("PARTITIONS", "4"))
fed = {}          # set member -> times the change feed delivered its put
feed_stats = {"reconnects": 0, "gone": 0, "duplicates": 0}
feed_tokens = {}  # partition -> last event id
feed_done = threading.Event()
def follower(partition):
    """Follows one partition's changes through random nodes, resuming from the last event id."""
    token = None
    ids = set()
    while not feed_done.is_set():
        port = 8190 + 10 * rng.randrange(3)
        url = f"http://127.0.0.1:{port}/records/watch?partition={partition}" + (f"&from={token}" if token else "")
        try:
            with requests.get(url, stream=True, timeout=(1, 3)) as resp:
                if resp.status_code == 410:
                    with lock: feed_stats["gone"] += 1
                    time.sleep(0.1); continue
                if resp.status_code != 200:
                    time.sleep(0.1); continue
                event, data, eid = None, None, None
                for line in resp.iter_lines(decode_unicode=True):
                    if feed_done.is_set():
                        return
                    if line.startswith("event: "): event = line[7:]
                    elif line.startswith("id: "): eid = line[4:]
                    elif line.startswith("data: "): data = line[6:]
                    elif line == "" and event:
                        if event == "change":
                            change = json.loads(data)
                            if eid in ids:
                                with lock: feed_stats["duplicates"] += 1
                            ids.add(eid)
                            if change["Pk"] == "members" and change["Op"] == "put":
                                with lock: fed[change["Sk"]] = fed.get(change["Sk"], 0) + 1
                        if eid:
                            token = eid
                            with lock: feed_tokens[partition] = token
                        event, data, eid = None, None, None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
            pass
        with lock: feed_stats["reconnects"] += 1
        time.sleep(0.05)
followers = [threading.Thread(target=follower, args=(p,)) for p in range(PARTITIONS)]
for t in followers: t.start()

_r0 = redis.Redis(port=6379)
_r0.delete("bank")
_r0.hset("bank", mapping={f: 1000 for f in BANK_FIELDS})
base = {f"c{k}": int(_r0.get(f"c{k}") or 0) for k in range(8)}
_r0.delete("members")
read_errors = {}
# Reads that went back in time: a counter read lower than a value read through node0 over 2 s
# before (a replica may lag by a moment, never by seconds: a node replaying after a crash or a
# lost disk must not answer from where its replay has got to).
went_back = []
def reader():
    r = redis.Redis(port=6379, socket_timeout=10, retry=Retry(NoBackoff(), 0))
    seen = {}   # counter -> [(time, value)] of the last 2 s
    floor = {}  # counter -> highest value read over 2 s ago
    while not stop.is_set():
        try:
            c = f"c{rng.randrange(8)}"
            v = int(r.get(c) or 0)
            now = time.time()
            recent = seen.setdefault(c, [])
            while recent and recent[0][0] < now - 2:
                floor[c] = max(floor.get(c, 0), recent.pop(0)[1])
            recent.append((now, v))
            if v < floor.get(c, 0):
                with lock: went_back.append((time.strftime("%T"), c, v, floor[c]))
            r.smembers("members") if rng.random() < 0.01 else None
        except redis.ResponseError as e:
            with lock: read_errors[str(e)[:70]] = read_errors.get(str(e)[:70], 0) + 1
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.05)
from redis.cache import CacheConfig
cache_stats = {"reads": 0, "errors": 0}
def cached_reader():
    """Reads the counters through node0 with redis-py's client-side cache (RESP3 tracking):
    whatever it caches must be invalidated when any node writes the key."""
    global cached
    while not stop.is_set():
        try:
            cached = redis.Redis(port=6379, protocol=3, cache_config=CacheConfig(), socket_timeout=10,
                                 retry=Retry(NoBackoff(), 0))
            while not stop.is_set():
                cached.get(f"c{rng.randrange(8)}")
                with lock: cache_stats["reads"] += 1
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            with lock: cache_stats["errors"] += 1
            time.sleep(0.05)
cached = None
threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)] + [threading.Thread(target=reader)]
threads += [threading.Thread(target=cached_reader)]
threads += [threading.Thread(target=banker) for _ in range(3)]
for t in threads: t.start()
t0 = time.time()
down = set()
MIXED = os.environ.get("CHAOS_BROKER") == "mixed"
BROKER = os.environ.get("CHAOS_BROKER") == "1"
WIPE = os.environ.get("CHAOS_WIPE") == "1"
broker_env = dict(os.environ, KAFKA_PORT="9092", KAFKA_DATA_DIR=f"{ROOT}/.cluster/broker")
while time.time() - t0 < DURATION:
    time.sleep(rng.uniform(1, 4))
    if BROKER or (MIXED and rng.random() < 0.3):
        bpid = int(open(f"{ROOT}/.cluster/broker/broker.pid").read())
        os.kill(bpid, 9 if rng.random() < 0.5 else 15)
        while os.path.exists(f"/proc/{bpid}"):
            time.sleep(0.05)
        print(time.strftime("%T"), "broker killed", flush=True)
        time.sleep(rng.uniform(1, 6))
        subprocess.run([f"{ROOT}/scripts/kafka-broker.sh", "start"], env=broker_env, cwd=ROOT, stdout=subprocess.DEVNULL)
        print(time.strftime("%T"), "broker started", flush=True)
        continue
    i = rng.choice([1, 2])
    if i in down:
        start(i); down.discard(i)
    else:
        kill(i); down.add(i)
        if WIPE and rng.random() < 1 / 3:
            shutil.rmtree(f"{ROOT}/.cluster/node{i}")
            print(time.strftime("%T"), "wiped node", i, flush=True)
for i in list(down):
    start(i)
time.sleep(2)
stop.set()
for t in threads: t.join()
print("errors:", errors)
print("read errors:", read_errors)
print("reads back in time:", len(went_back), went_back[:5])
# Wait for every node to catch up.
def parts(i):
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{8191 + 10 * i}/debug/partitions", timeout=5))["partitions"]
GROUPS = int(os.environ.get("REPLICA_GROUPS", "3"))
def replicas_agree(ps):
    """Every partition is owned by one node per replica group, caught up, at the same digest."""
    by_partition = {}
    holders = {}
    for pl in ps:
        for p in pl:
            by_partition.setdefault(p["partition"], set()).add((p["lag"], p["digest"]))
            holders[p["partition"]] = holders.get(p["partition"], 0) + 1
    return sorted(holders) == list(range(PARTITIONS)) and all(n == GROUPS for n in holders.values()) \
        and all(len(v) == 1 and next(iter(v))[0] == 0 for v in by_partition.values())
for _ in range(120):
    try:
        if replicas_agree([parts(i) for i in range(3)]):
            break
    except Exception:
        pass
    time.sleep(1)
ps = [parts(i) for i in range(3)]
for i in range(3):
    print("node", i, [(p["partition"], p["applied_offset"], p["lag"], p["records"], p["digest"][:8], p["health"]["state"]) for p in ps[i]])
bad = 0
for i in range(3):
    r = redis.Redis(port=6379 + i)
    for c in sorted(set(acked) | set(unknown)):
        v = int(r.get(c) or 0) - base[c]
        a, u = acked.get(c, 0), unknown.get(c, 0)
        if not (a <= v <= a + u):
            bad += 1; print("node", i, c, "value", v, "acked", a, "unknown", u)
    bank = {k.decode(): int(v) for k, v in r.hgetall("bank").items()}
    if sum(bank.values()) != 1000 * len(BANK_FIELDS) or sorted(bank) != BANK_FIELDS:
        bad += 1; print("node", i, "bank fields do not add up:", bank)
    got = {m.decode() for m in r.smembers("members")}
    lost = members - got
    if lost:
        bad += 1; print("node", i, "lost members", len(lost), sorted(lost)[:5])
# The client-side cache must hold nothing stale once writes stopped (its invalidations came).
stale = {}
for _ in range(50):
    plain = redis.Redis(port=6379)
    stale = {f"c{k}": (cached.get(f"c{k}"), plain.get(f"c{k}")) for k in range(8)}
    stale = {k: v for k, v in stale.items() if v[0] != v[1]}
    if not stale:
        break
    time.sleep(0.1)
print("client-side cache:", cache_stats, "stale keys", stale)
if stale:
    bad += 1
# The feed has until every partition's token reaches the applied offset (or 20 s).
for _ in range(200):
    with lock: tokens = dict(feed_tokens)
    if all(int(re.match(r"\d+", tokens.get(p["partition"], "0:0").split(":")[1]).group()) >= (p["applied_offset"] or 0) for p in ps[0]):
        break
    time.sleep(0.1)
feed_done.set()
for t in followers: t.join()
missed = members - set(fed)
twice = [m for m, n in fed.items() if n > 1 and m in members]
print("change feed:", feed_stats, "members missed", len(missed), "delivered twice", len(twice))
if missed or twice or feed_stats["duplicates"]:
    bad += 1; print("change feed missed", sorted(missed)[:5], "twice", twice[:5])
if went_back:
    bad += 1
digests_equal = replicas_agree(ps)
print("transfers:", transfers)
print("acked", sum(acked.values()), "unknown", sum(unknown.values()), "members", len(members), "digests equal", digests_equal, "bad", bad)
raise SystemExit(0 if bad == 0 and digests_equal else 1)
