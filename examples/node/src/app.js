// The original FastAPI guide's app, in Fastify: three cached endpoints read
// and filled through the invalidator protocol, two mutations that publish
// their domain event after the write, and /health.
import Fastify from 'fastify';
import { newEvent, publish } from './events.js';
import { Cache } from './protocol.js';

// The cached endpoints of the original app, as in cache.Middleware.
export const routes = [
  { path: '/api/v3/system/stats', ttlMs: 30_000, key: () => 'cache:system_stats:global', load: (db) => db.systemStats() },
  { path: '/api/v3/analytics/courses/:id', ttlMs: 60_000, key: (p) => `cache:course_analytics:${p.id}`, load: (db, p) => db.courseAnalytics(p.id) },
  { path: '/api/v3/analytics/students/:id', ttlMs: 45_000, key: (p) => `cache:student_risk:${p.id}`, load: (db, p) => db.studentRisk(p.id) },
];

// Ids that may go into a key or an event: no glob metacharacters, no ':'.
const ID = /^[A-Za-z0-9_.-]{1,128}$/;

export function buildApp({ db, redis, nc, js, source = 'urn:node-example', logger = false }) {
  const app = Fastify({ logger });
  const cache = new Cache(redis, { log: app.log });
  app.decorate('cache', cache);

  for (const r of routes) {
    app.get(r.path, async (req, reply) => {
      const params = req.params ?? {};
      if (params.id !== undefined && !ID.test(params.id)) {
        reply.header('X-Cache', 'BYPASS'); // odd ids pass through uncached
        return r.load(db, params);
      }
      const { value, hit } = await cache.fetch(r.key(params), r.ttlMs, () => r.load(db, params));
      reply.header('X-Cache', hit === true ? 'HIT' : hit === false ? 'MISS' : 'BYPASS');
      return value;
    });
  }

  // Write first, then publish: the worker removes the user's keys.
  app.post('/users/:user_id', async (req, reply) => {
    const id = req.params.user_id;
    if (!ID.test(id)) return reply.code(400).send({ error: 'bad user id' });
    const user = db.updateUser(id, req.body);
    const event = newEvent('events.user.updated', { user_id: id }, source);
    const seq = await publishOr503(js, event, reply, req);
    if (seq === undefined) return reply;
    return { user, event_id: event.id, seq };
  });

  app.put('/courses/:id', async (req, reply) => {
    const id = req.params.id;
    if (!ID.test(id)) return reply.code(400).send({ error: 'bad course id' });
    const course = db.updateCourse(id, req.body);
    const event = newEvent('events.course.updated', { course_id: id }, source);
    const seq = await publishOr503(js, event, reply, req);
    if (seq === undefined) return reply;
    return { course, event_id: event.id, seq };
  });

  app.get('/health', async (req, reply) => {
    const checks = { redis: 'ok', nats: 'ok' };
    try {
      await redis.ping();
    } catch (err) {
      checks.redis = err.message;
    }
    if (nc.isClosed()) checks.nats = 'closed';
    const healthy = checks.redis === 'ok' && checks.nats === 'ok';
    reply.code(healthy ? 200 : 503);
    return { status: healthy ? 'healthy' : 'unhealthy', ...checks };
  });

  return app;
}

// The write has happened; if the event cannot be published the caches stay
// stale until their TTL, so say so rather than answer 200. A client may
// retry: a retried publish of a new event is harmless (invalidation is
// idempotent).
async function publishOr503(js, event, reply, req) {
  try {
    return await publish(js, event);
  } catch (err) {
    req.log.error({ err: err.message, subject: event.type, id: event.id }, '❌ event not published');
    reply.code(503).send({ error: 'saved, but the invalidation event was not published', event_id: event.id });
    return undefined;
  }
}
