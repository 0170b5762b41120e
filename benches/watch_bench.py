"""Change streams under load: change-to-subscriber latency with many open watches, and apply
throughput with and without them. Talks plain HTTP/1.1 (asyncio sockets, no dependencies).

    python3 benches/watch_bench.py <api port> <internal port> [watches] [writes]

1. Apply throughput alone: WRITES records in batches of 500 (`/records/batch`, one pk per batch,
   spread over the partitions), measured from the first write until every entry is applied.
   A warm-up round runs first, and a second round alone runs after the watched one: a store
   that grows gets slower (flushes, compactions), so the watched round is compared with the mean
   of the rounds around it.
2. The same with WATCHES open watches, one per pk (`?pk=wN`: sidecars watching their own
   config), none of them on the load's pks: what the watches cost apply.
3. Latency: with the watches open, 500 writes (one per 10 ms) to watched pks carrying their send
   time; each watch notes when its change arrives. Prints p50/p99/max.
"""
import asyncio, json, statistics, sys, time, urllib.request

API, INTERNAL = int(sys.argv[1]), int(sys.argv[2])
WATCHES = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
WRITES = int(sys.argv[4]) if len(sys.argv) > 4 else 200_000
BATCH = 500


def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{API}{path}", data=json.dumps(body).encode())
    return json.loads(urllib.request.urlopen(req).read())


def applied_total():
    body = urllib.request.urlopen(f"http://127.0.0.1:{INTERNAL}/debug/partitions").read()
    return sum(p["applied_offset"] + 1 if p["applied_offset"] is not None else 0
               for p in json.loads(body)["partitions"])


async def write_load(n, tag):
    """Writes n records in atomic batches from 8 concurrent writers; returns seconds to apply."""
    before = applied_total()
    started = time.perf_counter()
    batches = n // BATCH

    def writer(w):
        for b in range(w, batches, 8):
            pk = f"{tag}-{b}"
            post("/records/batch", {"Records": [
                {"op": "put", "pk": pk, "sk": f"{i:04}", "data": {"v": i}} for i in range(BATCH)]})

    await asyncio.gather(*(asyncio.to_thread(writer, w) for w in range(8)))
    while applied_total() < before + batches:
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


class Watch:
    def __init__(self):
        self.latencies = []
        self.events = 0
        self.writer = None

    async def run(self, pk, ready):
        reader, writer = await asyncio.open_connection("127.0.0.1", API)
        self.writer = writer
        writer.write(f"GET /records/watch?pk={pk} HTTP/1.1\r\nHost: x\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        ready.set_result(None) if not ready.done() else None
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"data: {\"Op\""):
                self.events += 1
                data = json.loads(line[6:])
                value = data.get("Data")
                if isinstance(value, dict) and "sent" in value:
                    self.latencies.append(time.time() - value["sent"])


async def main():
    await write_load(WRITES // 2, "warmup")
    alone = await write_load(WRITES, "alone")
    print(f"apply alone: {WRITES} records in {alone:.2f} s = {WRITES / alone:,.0f} records/s")
    watches = [Watch() for _ in range(WATCHES)]
    readies = []
    tasks = []
    for i, w in enumerate(watches):
        ready = asyncio.get_running_loop().create_future()
        readies.append(ready)
        tasks.append(asyncio.create_task(w.run(f"w{i}", ready)))
    await asyncio.gather(*readies)
    await asyncio.sleep(2)
    loaded = await write_load(WRITES, "watched")
    print(f"apply with {WATCHES} watches: {WRITES} records in {loaded:.2f} s = "
          f"{WRITES / loaded:,.0f} records/s")
    await asyncio.sleep(3)
    for i in range(500):
        pk = f"w{(i * 7919) % WATCHES}"
        await asyncio.to_thread(post, "/records/put",
                                {"Records": [{"pk": pk, "sk": "", "data": {"sent": time.time()}}]})
        await asyncio.sleep(0.01)
    await asyncio.sleep(3)
    lat = sorted(x for w in watches for x in w.latencies)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    if lat:
        print(f"change-to-subscriber latency over {len(lat)} deliveries ({WATCHES} watches): "
              f"p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {lat[-1] * 1000:.1f} ms")
    else:
        print("no latency samples")
    for t in tasks:
        t.cancel()
    for w in watches:
        if w.writer:
            w.writer.close()
    await asyncio.sleep(1)
    again = await write_load(WRITES, "again")
    print(f"apply alone again: {WRITES} records in {again:.2f} s = {WRITES / again:,.0f} records/s")
    print(f"watches cost apply {loaded / ((alone + again) / 2):.2f}x the time of the rounds alone")


asyncio.run(main())
