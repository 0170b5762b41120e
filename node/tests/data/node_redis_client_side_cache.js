// node-redis 5 with its own client-side cache (RESP3 CLIENT TRACKING): reads are cached, and an
// HTTP write to the key invalidates them. Prints "ok" when every check held.
// Usage: node node_redis_client_side_cache.js <resp port> <http port>
const { createClient } = require('redis5');
(async () => {
  const port = process.argv[2], api = process.argv[3];
  const cached = createClient({ url: `redis://127.0.0.1:${port}`, RESP: 3, clientSideCache: { ttl: 0, maxEntries: 0 } });
  const writer = createClient({ url: `redis://127.0.0.1:${port}` });
  await cached.connect(); await writer.connect();
  await writer.set('flag', 'off');
  if (await cached.get('flag') !== 'off') throw new Error('first read');
  if (await cached.get('flag') !== 'off') throw new Error('second read');
  const cache = cached.clientSideCache;
  if (cache.size() !== 1) throw new Error('not cached: ' + cache.size());
  const hits = cache.stats().hitCount;
  if (hits < 1) throw new Error('no cache hit: ' + JSON.stringify(cache.stats()));
  await fetch(`http://127.0.0.1:${api}/records/put`, { method: 'POST', body: JSON.stringify({ Records: [{ pk: 'flag', sk: '', data: 'on' }], wait: true }) });
  const deadline = Date.now() + 5000;
  while ((await cached.get('flag')) !== 'on') {
    if (Date.now() > deadline) throw new Error('never invalidated');
    await new Promise(r => setTimeout(r, 20));
  }
  await cached.quit(); await writer.quit();
  console.log('ok');
})().catch(e => { console.error(e); process.exit(1); });
