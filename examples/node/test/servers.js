// Real servers for the test, as child processes on loopback: redis-server,
// nats-server with JetStream, and the invalidator worker built from this
// repository. Every wait is bounded; killAll ends every child (and a
// process 'exit' hook SIGKILLs what is left if the test runner dies early).
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

const children = new Set();
const TAIL = 64 * 1024;

process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// spawnChild starts cmd and keeps the tail of its stdout and stderr.
export function spawnChild(name, cmd, args, opts = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  child.label = name;
  child.output = '';
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => {
      // A child that failed to spawn may never emit 'exit'.
      child.output += `\n[spawn error: ${err.message}]`;
      resolve({ code: null, signal: null, error: err });
    });
  });
  const onData = (d) => {
    child.output = (child.output + d.toString()).slice(-TAIL);
    if (process.env.DEBUG_CHILDREN) process.stderr.write(`[${name}] ${d}`);
    child.emit('output');
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  children.add(child);
  child.exited.then(() => children.delete(child));
  return child;
}

export function tail(child, n = 2000) {
  return child.output.slice(-n);
}

// waitOutput resolves when the child's output matches re; it rejects when
// the child exits first or after ms.
export function waitOutput(child, re, ms) {
  return new Promise((resolve, reject) => {
    let timer;
    const done = (fn, v) => {
      clearTimeout(timer);
      child.off('output', check);
      fn(v);
    };
    const check = () => {
      if (re.test(child.output)) done(resolve);
    };
    timer = setTimeout(
      () => done(reject, new Error(`${child.label}: no ${re} within ${ms} ms; output:\n${tail(child)}`)),
      ms,
    );
    child.on('output', check);
    child.exited.then(({ code, signal }) =>
      done(reject, new Error(`${child.label} exited (code ${code}, signal ${signal}) before ${re}; output:\n${tail(child)}`)),
    );
    check();
  });
}

// waitExit resolves with the exit status, or rejects after ms.
export function waitExit(child, ms) {
  return Promise.race([
    child.exited,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${child.label} still running after ${ms} ms`)), ms).unref()),
  ]);
}

// killAll sends SIGTERM to every child, then SIGKILL to those still running
// after ms.
export async function killAll(ms = 5000) {
  const list = [...children];
  for (const c of list) c.kill('SIGTERM');
  await Promise.all(
    list.map(async (c) => {
      try {
        await waitExit(c, ms);
      } catch {
        c.kill('SIGKILL');
        await waitExit(c, 2000).catch(() => {});
      }
    }),
  );
}

// A minimal environment for the children, so that settings of the caller's
// shell (NATS_CREDS, REDIS_*, ...) cannot leak into the worker.
function baseEnv() {
  const env = {};
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'GOPATH', 'GOCACHE', 'GOMODCACHE', 'GOFLAGS', 'GOPROXY', 'GOTOOLCHAIN']) {
    if (process.env[k] !== undefined) env[k] = process.env[k];
  }
  return env;
}

export async function buildWorker(dir, ms = 240_000) {
  if (process.env.INVALIDATOR_BIN) return process.env.INVALIDATOR_BIN;
  const bin = join(dir, 'invalidator');
  const go = spawnChild('go build', 'go', ['build', '-o', bin, './cmd/invalidator'], { cwd: repoRoot, env: baseEnv() });
  const { code, signal } = await waitExit(go, ms).catch((err) => {
    go.kill('SIGKILL');
    throw err;
  });
  if (code !== 0) throw new Error(`go build failed (code ${code}, signal ${signal}):\n${tail(go)}`);
  return bin;
}

export async function startRedis(dir) {
  const port = await freePort();
  const child = spawnChild('redis-server', 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
  ]);
  await waitOutput(child, /Ready to accept connections/, 10_000);
  return { child, url: `redis://127.0.0.1:${port}/0` };
}

// startRedisCluster starts 3 cluster-enabled redis-server nodes (each with
// its bus port, port + 10000, free too) and joins them with redis-cli
// --cluster create: 3 masters, no replicas.
export async function startRedisCluster(dir) {
  const ports = [];
  while (ports.length < 3) {
    const p = await freePort();
    if (p + 10000 < 65536 && !ports.includes(p) && (await isFree(p + 10000))) ports.push(p);
  }
  await Promise.all(
    ports.map(async (port) => {
      const nodeDir = join(dir, `cluster-${port}`);
      await mkdir(nodeDir, { recursive: true });
      const child = spawnChild(`redis-${port}`, 'redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', nodeDir,
        '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000',
      ]);
      await waitOutput(child, /Ready to accept connections/, 10_000);
    }),
  );
  const addrs = ports.map((p) => `127.0.0.1:${p}`);
  const cli = spawnChild('redis-cli --cluster create', 'redis-cli', ['--cluster', 'create', ...addrs, '--cluster-replicas', '0', '--cluster-yes']);
  const { code } = await waitExit(cli, 30_000);
  if (code !== 0) throw new Error(`redis-cli --cluster create failed (code ${code}):\n${tail(cli)}`);
  for (const port of ports) {
    await until(`cluster_state:ok on ${port}`, 20_000, async () => {
      const info = spawnChild('redis-cli cluster info', 'redis-cli', ['-p', String(port), 'cluster', 'info']);
      await waitExit(info, 5000);
      return /cluster_state:ok/.test(info.output);
    });
  }
  return { addrs: addrs.join(',') };
}

function isFree(port) {
  return new Promise((resolve) => {
    const s = createServer();
    s.unref();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

// until polls fn every 50 ms until it returns a truthy value, for at most ms.
async function until(what, ms, fn) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startNats(dir) {
  const port = await freePort();
  const child = spawnChild('nats-server', 'nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', join(dir, 'jetstream')]);
  await waitOutput(child, /Server is ready/, 10_000);
  return { child, url: `nats://127.0.0.1:${port}` };
}

// startWorker runs the worker on redisUrl, or on the cluster of
// redisClusterAddrs ("host:port,...") when set.
export async function startWorker(bin, { redisUrl, redisClusterAddrs, natsUrl }) {
  const child = spawnChild('invalidator', bin, ['run'], {
    cwd: repoRoot,
    env: {
      ...baseEnv(),
      ...(redisClusterAddrs ? { REDIS_CLUSTER_ADDRS: redisClusterAddrs } : { REDIS_URL: redisUrl }),
      NATS_URL: natsUrl,
      INVALIDATOR_RULES: join(repoRoot, 'testdata', 'rules.yaml'),
      GENERATIONS: 'on',
      HTTP_ADDR: '',
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'info',
    },
  });
  await waitOutput(child, /worker started/, 20_000);
  return { child };
}
