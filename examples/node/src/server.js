// Entry point: connect to Redis and NATS, serve the app. start() is also
// what the test calls.
import Redis from 'ioredis';
import { connect } from 'nats';
import { fileURLToPath } from 'node:url';
import { buildApp } from './app.js';
import { Database } from './db.js';

// redisClusterAddrs ("host:port,...", REDIS_CLUSTER_ADDRS), when set, is a
// Redis Cluster to use instead of redisUrl: the protocol then takes its
// cluster form (src/protocol.js).
export async function start({
  redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379/0',
  redisClusterAddrs = process.env.REDIS_CLUSTER_ADDRS,
  natsUrl = process.env.NATS_URL || 'nats://127.0.0.1:4222',
  host = process.env.HOST || '127.0.0.1',
  port = Number(process.env.PORT ?? 8000),
  logger = { level: process.env.LOG_LEVEL || 'info' },
  db = new Database(),
} = {}) {
  const redis = redisClusterAddrs
    ? new Redis.Cluster(
        redisClusterAddrs.split(',').map((a) => {
          const i = a.lastIndexOf(':');
          return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
        }),
        { lazyConnect: true, redisOptions: { maxRetriesPerRequest: 1, connectTimeout: 5000 } },
      )
    : new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 5000 });
  await redis.connect();
  const nc = await connect({ servers: natsUrl.split(','), name: 'invalidator-node-example', timeout: 5000 });
  const js = nc.jetstream();
  const app = buildApp({ db, redis, nc, js, logger });
  await app.listen({ host, port });
  const { port: bound } = app.server.address();
  return {
    app,
    db,
    redis,
    nc,
    url: `http://${host}:${bound}`,
    async close() {
      await app.close();
      await nc.drain().catch(() => {});
      redis.disconnect();
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = await start();
  s.app.log.info(`🔌 listening on ${s.url}`);
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.once(sig, () => s.close().then(() => process.exit(0), () => process.exit(1)));
  }
}
