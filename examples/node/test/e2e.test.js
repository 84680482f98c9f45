// The Node app against real Redis, real JetStream and the real worker
// binary: an update through the API makes the next read fresh while other
// keys stay cached, and the published events follow the schemas under
// testdata/schema/. With REDIS_MODE=cluster (test/e2e-cluster.test.js) the
// same tests run on a 3-master Redis Cluster, app and worker alike.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { connect, JSONCodec } from 'nats';
import { start } from '../src/server.js';
import { claim, fill, guardKeysFor } from '../src/protocol.js';
import { buildWorker, killAll, repoRoot, startNats, startRedis, startRedisCluster, startWorker, tail } from './servers.js';

const cluster = process.env.REDIS_MODE === 'cluster';

const jc = JSONCodec();
let dir, redisSrv, natsSrv, worker, app, nc;
const events = []; // { subject, msgId, body } seen on events.>

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'invalidator-node-'));
  // The build and the servers start at once; the worker needs all three.
  const [bin, r, n] = await Promise.all([buildWorker(dir), cluster ? startRedisCluster(dir) : startRedis(dir), startNats(dir)]);
  redisSrv = r;
  natsSrv = n;
  // The EVENTS stream exists once the worker has started.
  worker = await startWorker(bin, { redisUrl: r.url, redisClusterAddrs: r.addrs, natsUrl: n.url });
  nc = await connect({ servers: n.url, timeout: 5000 });
  const sub = nc.subscribe('events.>');
  (async () => {
    for await (const m of sub) {
      events.push({ subject: m.subject, msgId: m.headers?.get('Nats-Msg-Id'), body: jc.decode(m.data) });
    }
  })();
  await nc.flush();
  app = await start({ redisUrl: r.url, redisClusterAddrs: r.addrs, natsUrl: n.url, port: 0, logger: false });
}, { timeout: 300_000 });

after(async () => {
  await app?.close().catch(() => {});
  await nc?.close().catch(() => {});
  await killAll();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function get(path) {
  const res = await fetch(app.url + path, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200, `GET ${path}: ${res.status}`);
  return { cache: res.headers.get('x-cache'), body: await res.json() };
}

async function send(method, path, body) {
  const res = await fetch(app.url + path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const json = await res.json();
  assert.equal(res.status, 200, `${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

// until polls fn every 25 ms until it returns a truthy value, for at most ms.
async function until(what, ms, fn) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${ms} ms; worker output:\n${tail(worker.child)}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('/health', async (t) => {
  assert.equal(Boolean(app.redis.isCluster), cluster, 'the app runs on the Redis the test started');
  t.diagnostic(cluster ? 'on a 3-master Redis Cluster' : 'on one Redis server');
  const { body } = await get('/health');
  assert.deepEqual(body, { status: 'healthy', redis: 'ok', nats: 'ok' });
});

test('course 42 is fresh after PUT /courses/42 while course 420 stays cached', async (t) => {
  const a42 = await get('/api/v3/analytics/courses/42');
  const a420 = await get('/api/v3/analytics/courses/420');
  assert.deepEqual([a42.cache, a42.body.version], ['MISS', 1]);
  assert.deepEqual([a420.cache, a420.body.version], ['MISS', 1]);
  const stats = await get('/api/v3/system/stats');
  assert.equal(stats.cache, 'MISS');

  for (const id of ['42', '420']) {
    const again = await get(`/api/v3/analytics/courses/${id}`);
    assert.deepEqual([again.cache, again.body.version], ['HIT', 1], `course ${id}`);
  }
  assert.equal((await get('/api/v3/system/stats')).cache, 'HIT');
  const queries = app.db.queries;

  const put = await send('PUT', '/courses/42', { title: 'Algebra II' });
  assert.equal(put.course.version, 2);
  assert.ok(put.seq > 0, 'a stream sequence');
  const t0 = Date.now();

  // Until the worker has handled the event, reads may still hit v1; the
  // first fresh read is a miss that fills v2.
  const fresh = await until('course 42 fresh', 5000, async () => {
    const r = await get('/api/v3/analytics/courses/42');
    if (r.body.version === 2) return r;
    assert.deepEqual([r.cache, r.body.version], ['HIT', 1], 'a stale answer is the cached v1');
    return null;
  });
  const ms = Date.now() - t0;
  assert.equal(fresh.cache, 'MISS');
  assert.equal(fresh.body.title, 'Algebra II');
  t.diagnostic(`course 42 fresh ${ms} ms after the PUT answered`);

  const hit = await get('/api/v3/analytics/courses/42');
  assert.deepEqual([hit.cache, hit.body.version], ['HIT', 2]);

  const other = await get('/api/v3/analytics/courses/420');
  assert.deepEqual([other.cache, other.body.version], ['HIT', 1], 'course 420 stays cached');
  assert.deepEqual(other.body, a420.body, 'the very value cached before');

  // events.course.* also invalidates the pattern cache:system_stats:*.
  const s = await get('/api/v3/system/stats');
  assert.deepEqual([s.cache, s.body.courses_updated], ['MISS', 1]);
  assert.equal(app.db.queries, queries + 2, 'only course 42 and the stats were recomputed');
});

test('the app keeps the protocol marker for GENERATIONS=auto', async () => {
  const res = await fetch(`${app.url}/api/v3/analytics/courses/5`);
  assert.equal(res.status, 200);
  assert.equal(await app.redis.get('invalidator:protocol'), 'node');
  const ttl = await app.redis.pttl('invalidator:protocol');
  assert.ok(ttl > 0 && ttl <= 60_000, `marker TTL ${ttl} ms`);
});

test('student risk is cached for its own key', async () => {
  const first = await get('/api/v3/analytics/students/9');
  const second = await get('/api/v3/analytics/students/9');
  assert.deepEqual([first.cache, second.cache], ['MISS', 'HIT']);
  assert.deepEqual(second.body, first.body);
  const ttl = await app.redis.pttl('cache:student_risk:9');
  assert.ok(ttl > 40_000 && ttl <= 45_000, `TTL ${ttl} ms`);
  const raw = await app.redis.get('cache:student_risk:9');
  assert.match(raw, /^@gen [^\n]+\n\{/, 'stamped as the protocol says');
});

test('POST /users/7 publishes an event the worker applies', async () => {
  await app.redis.set('user:7', '{"name":"old"}');
  await app.redis.set('user:7:profile', '{"bio":"old"}');
  await app.redis.set('user:8', '{"name":"other"}');
  const res = await send('POST', '/users/7', { name: 'Ada' });
  assert.equal(res.user.name, 'Ada');
  // One EXISTS per key: on a cluster the two keys are in different slots.
  await until('user:7 and user:7:profile removed', 5000, async () =>
    (await app.redis.exists('user:7')) + (await app.redis.exists('user:7:profile')) === 0);
  assert.equal(await app.redis.exists('user:8'), 1, 'user:8 is untouched');
});

test('a fill claimed before an invalidation is refused', async () => {
  const key = 'cache:course_analytics:77';
  const tokens = await claim(app.redis, key);
  const stale = await app.db.courseAnalytics('77');
  await send('PUT', '/courses/77', {});
  // The worker removes the key's own generation (an exact invalidation).
  const own = guardKeysFor(app.redis, key)[0];
  await until('the worker handled course 77', 5000, async () => (await app.redis.exists(own)) === 0);
  assert.equal(await fill(app.redis, key, stale, 60_000, tokens), false);
  const r = await get('/api/v3/analytics/courses/77');
  assert.deepEqual([r.cache, r.body.version], ['MISS', 2]);
});

test('the published events follow testdata/schema', async () => {
  const ajv = new Ajv2020({ allErrors: true, strictTypes: false });
  addFormats(ajv);
  for (const f of ['event.schema.json', 'cache-invalidate.schema.json']) {
    ajv.addSchema(JSON.parse(await readFile(join(repoRoot, 'testdata', 'schema', f), 'utf8')));
  }
  const base = 'https://github.com/invalidator/invalidator/testdata/schema/';
  const event = ajv.getSchema(base + 'event.schema.json');
  const invalidate = ajv.getSchema(base + 'cache-invalidate.schema.json');

  // The validator is not vacuous.
  assert.equal(event({ specversion: '1.0', id: 'x', source: 's', type: 't' }), false, 'a CloudEvent without data');
  assert.equal(invalidate({ keys: [] }), false, 'an explicit invalidation naming nothing');
  assert.equal(invalidate({ keys: ['user:123'], patterns: ['user:123:*'] }), true);

  const want = ['events.course.updated', 'events.user.updated'];
  await until('the events reached the test subscriber', 5000, () => want.every((s) => events.some((e) => e.subject === s)));
  for (const e of events) {
    assert.ok(event(e.body), `${e.subject} ${JSON.stringify(e.body)}: ${ajv.errorsText(event.errors)}`);
    assert.equal(e.body.type, e.subject);
    assert.equal(e.msgId, e.body.id, 'Nats-Msg-Id is the event id');
  }
  const course = events.find((e) => e.subject === 'events.course.updated');
  assert.deepEqual(course.body.data, { course_id: '42' });
  const user = events.find((e) => e.subject === 'events.user.updated');
  assert.deepEqual(user.body.data, { user_id: '7' });
  // None of them was dead-lettered.
  assert.doesNotMatch(worker.child.output, /dead-lettered/);
});
