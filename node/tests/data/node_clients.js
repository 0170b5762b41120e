// Stock Node.js Redis clients against a FireScroll node: ioredis and node-redis, as their users
// write them. Prints "ok" when every assertion held. Usage: node node_clients.js <port>
const assert = require("assert");
const Redis = require("ioredis");
const { createClient } = require("redis");

const port = Number(process.argv[2]);

async function withIoredis() {
  const r = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0 });
  await r.connect();
  assert.equal(await r.set("io:k", "v"), "OK");
  assert.equal(await r.get("io:k"), "v");
  // multi() is MULTI/EXEC: one atomic entry, replies per command.
  const tx = await r.multi().set("io:h", "s").hset("io:h", "f", "1").hincrby("io:h", "n", 5).hgetall("io:h").exec();
  assert.deepEqual(tx, [[null, "OK"], [null, 1], [null, 5], [null, { "": "s", f: "1", n: "5" }]]);
  // A pipeline (not a transaction) of writes and reads.
  const piped = await r.pipeline().set("io:p1", "a").incr("io:ctr").incr("io:ctr").get("io:p1").exec();
  assert.deepEqual(piped.map(([e, v]) => v), ["OK", 1, 2, "a"]);
  // WATCH: a change by another client makes exec() answer null.
  const other = new Redis({ port });
  await r.watch("io:k");
  await other.set("io:k", "changed");
  assert.equal(await r.multi().set("io:k", "mine").exec(), null);
  assert.equal(await r.get("io:k"), "changed");
  // A fixed-window rate limiter as such libraries write it: start the window only if none,
  // count, and read the time left, in one transaction (SET NX and PTTL inside MULTI).
  const hits = [];
  for (let i = 0; i < 3; i++) {
    const [[, started], [, count], [, left]] = await r
      .multi().set("io:rl", 0, "EX", 60, "NX").incrby("io:rl", 1).pttl("io:rl").exec();
    assert.ok(left > 55000 && left <= 60000, `time left ${left}`);
    hits.push([started, count]);
  }
  assert.deepEqual(hits, [["OK", 1], [null, 2], [null, 3]]);
  // INCRBYFLOAT answers as Redis does (0.1 + 0.2 is 0.3 there, not 0.30000000000000004).
  await r.incrbyfloat("io:f", "0.1");
  assert.equal(await r.incrbyfloat("io:f", "0.2"), "0.3");
  // RedisJSON's commands, as ioredis users send them.
  assert.equal(await r.call("JSON.SET", "io:doc", "$", '{"a":{"b":1}}'), "OK");
  assert.equal(await r.call("JSON.NUMINCRBY", "io:doc", "$.a.b", 2), "[3]");
  assert.equal(await r.call("JSON.GET", "io:doc", ".a"), '{"b":3}');
  // scanStream walks every key once.
  for (let i = 0; i < 50; i++) await r.set(`io:many:${i}`, i);
  const seen = new Set();
  await new Promise((resolve, reject) => {
    r.scanStream({ match: "io:many:*", count: 7 })
      .on("data", (keys) => keys.forEach((k) => seen.add(k)))
      .on("end", resolve)
      .on("error", reject);
  });
  assert.equal(seen.size, 50);
  // MONITOR, parsed by ioredis: each command of another connection, as that client sent it.
  const monitor = await r.monitor();
  const monitored = [];
  monitor.on("monitor", (time, args, source, db) => monitored.push({ time, args, source, db }));
  await other.set("io:watched", 'a "b"');
  await other.get("io:watched");
  for (let i = 0; i < 50 && monitored.length < 2; i++) await new Promise((res) => setTimeout(res, 20));
  assert.deepEqual(monitored.map((m) => m.args), [["set", "io:watched", 'a "b"'], ["get", "io:watched"]]);
  assert.equal(monitored[0].db, "0");
  assert.match(monitored[0].source, /^127\.0\.0\.1:\d+$/);
  monitor.disconnect();
  // Binary values (Buffers) come back byte for byte.
  const blob = Buffer.from([0xff, 0x00, 0x80, 0xfe, 0x41]);
  await r.set("io:blob", blob);
  await r.hset("io:blobs", "b", blob);
  assert.deepEqual(await r.getBuffer("io:blob"), blob);
  assert.deepEqual(await r.hgetBuffer("io:blobs", "b"), blob);
  other.disconnect();
  r.disconnect();
}

async function withNodeRedis() {
  const c = createClient({ url: `redis://127.0.0.1:${port}` });
  c.on("error", () => {});
  await c.connect();
  assert.equal(await c.set("nr:k", "v"), "OK");
  assert.equal(await c.get("nr:k"), "v");
  const tx = await c.multi().set("nr:h", "1").hSet("nr:h", { a: "1", b: "2" }).incr("nr:h").hGetAll("nr:h").exec();
  assert.deepEqual(tx, ["OK", 2, 2, { "": "2", a: "1", b: "2" }]);
  const keys = [];
  for await (const key of c.scanIterator({ MATCH: "nr:*", COUNT: 3 })) keys.push(key);
  assert.deepEqual(keys.sort(), ["nr:h", "nr:k"]);
  // JSON documents through RedisJSON's commands.
  await c.json.set("nr:doc", "$", { enabled: true, rollout: [1, 2] });
  assert.deepEqual(await c.json.get("nr:doc"), { enabled: true, rollout: [1, 2] });
  // ... and edited at a path, computed when the log entry applies.
  assert.deepEqual(await c.json.get("nr:doc", { path: "$.rollout" }), [[1, 2]]);
  assert.deepEqual(await c.json.arrAppend("nr:doc", "$.rollout", 3), [3]);
  assert.deepEqual(await c.json.numIncrBy("nr:doc", "$.rollout[0]", 10), [11]);
  assert.deepEqual(await c.sendCommand(["JSON.TOGGLE", "nr:doc", "$.enabled"]), [0]);
  assert.deepEqual(await c.json.get("nr:doc"), { enabled: false, rollout: [11, 2, 3] });
  assert.equal(await c.dbSize() >= 3, true);
  // Binary values, as Buffers in and out.
  const { commandOptions } = require("redis");
  const blob = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xc3]);
  await c.set("nr:blob", blob);
  assert.deepEqual(await c.get(commandOptions({ returnBuffers: true }), "nr:blob"), blob);
  await c.quit();
}

(async () => {
  await withIoredis();
  await withNodeRedis();
  console.log("ok");
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
