// The invalidator read/fill protocol (README, "The read/fill protocol (any
// language)"), with the Lua scripts loaded as they are from ../../guard/.
//
// A key K is guarded by G(K): invalidator:gen:K, then invalidator:gen:P for
// each segment prefix P of K (each ending in ':'), shortest first. A value
// is '@gen <tokens>\n<json>'; read.lua returns the JSON only while the
// stamp equals the current tokens, so a pattern invalidation handled by the
// worker (GENERATIONS=on) is a miss at once, before any SCAN.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

// CACHE_LUA_DIR overrides where the scripts are read from.
export const luaDir = process.env.CACHE_LUA_DIR || join(here, '..', '..', '..', 'guard');

// The generation TTL the scripts take (guard.TTL, 24 h).
export const GENERATION_TTL_MS = 86_400_000;

// Values must not outlive their generations.
export const MAX_TTL_MS = GENERATION_TTL_MS;

const GEN_PREFIX = 'invalidator:gen:';

// The protocol's marker (guard.ProtocolMarkerKey): kept alive while the
// app reads and fills, so that a worker with GENERATIONS=auto sees a reader
// of the protocol and turns generations on.
export const MARKER_KEY = 'invalidator:protocol';
const MARKER_TTL_MS = 60_000;
const MARKER_REFRESH_MS = 20_000;

// guardKeys returns G(K) in the order the scripts take it.
export function guardKeys(key) {
  const out = [GEN_PREFIX + key];
  for (let i = 0; i < key.length; i++) {
    if (key[i] === ':') out.push(GEN_PREFIX + key.slice(0, i + 1));
  }
  return out;
}

// slot is a Redis Cluster's hash slot of key: CRC16 (XMODEM) of the key,
// or of its hash tag (between the first '{' and the next '}', when not
// empty), modulo 16384.
export function slot(key) {
  let k = key;
  const s = key.indexOf('{');
  if (s >= 0) {
    const e = key.indexOf('}', s + 1);
    if (e > s + 1) k = key.slice(s + 1, e);
  }
  let crc = 0;
  for (const b of Buffer.from(k)) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

const tags = new Map();
let tried = 0;

// slotTag is the first base-36 number (0, 1, ... z, 10, ...) whose slot is
// n (cachekeys.SlotTag).
export function slotTag(n) {
  while (!tags.has(n)) {
    const t = (tried++).toString(36);
    const s = slot(t);
    if (!tags.has(s)) tags.set(s, t);
  }
  return tags.get(n);
}

// clusterGuardKeys is G(K) on a Redis Cluster: K's own generation is
// hash-tagged into K's slot, invalidator:gen:{<tag>}K; the prefixes' are
// the same keys as on one server, each in its own slot.
export function clusterGuardKeys(key) {
  const keys = guardKeys(key);
  keys[0] = `${GEN_PREFIX}{${slotTag(slot(key))}}${key}`;
  return keys;
}

// guardKeysFor is G(K) for the client: an ioredis Cluster or one server.
export function guardKeysFor(redis, key) {
  return redis.isCluster ? clusterGuardKeys(key) : guardKeys(key);
}

function stamp(tokens) {
  return `@gen ${tokens.join(' ')}\n`;
}

// A fresh token: unique, never '0', no spaces or newlines.
export function newToken() {
  return randomUUID().replaceAll('-', '');
}

// defineScripts registers read/claim/fill/set on an ioredis client. ioredis
// runs them with EVALSHA and falls back to EVAL once after NOSCRIPT. They
// take a variable number of keys, so each call passes numkeys first.
export function defineScripts(redis) {
  for (const name of ['read', 'claim', 'fill', 'set', 'cluster_fill', 'cluster_unfill']) {
    const lua = readFileSync(join(luaDir, `${name}.lua`), 'utf8');
    redis.defineCommand(`invalidator_${name}`, { lua });
  }
  return redis;
}

// read returns the parsed JSON value of key, or undefined on a miss (missing,
// stale, or a raw value without a stamp).
//
// On a Redis Cluster a script may touch one slot only, and G(K) spans
// several: K and each generation are read with their own GET (ioredis sends
// each node its part), and the stamp is compared here.
export async function read(redis, key) {
  if (redis.isCluster) {
    const [raw, ...held] = await Promise.all([key, ...clusterGuardKeys(key)].map((k) => redis.get(k)));
    if (raw == null) return undefined;
    const head = stamp(held.map((t) => t ?? '0'));
    return raw.startsWith(head) ? JSON.parse(raw.slice(head.length)) : undefined;
  }
  const keys = [key, ...guardKeys(key)];
  const raw = await redis.invalidator_read(keys.length, ...keys);
  return raw == null ? undefined : JSON.parse(raw);
}

// claim claims the guard generations of key before the source is read and
// returns the tokens they hold.
export async function claim(redis, key) {
  if (redis.isCluster) {
    const token = newToken();
    const held = await Promise.all(
      clusterGuardKeys(key).map((g) => redis.set(g, token, 'PX', GENERATION_TTL_MS, 'NX', 'GET')),
    );
    return held.map((t) => t ?? token);
  }
  const gens = guardKeys(key);
  return redis.invalidator_claim(gens.length, ...gens, newToken(), GENERATION_TTL_MS);
}

// fill writes value only if no guard moved since claim; false means an
// invalidation ran meanwhile and the value was not stored.
//
// On a Redis Cluster: cluster_fill.lua writes in K's slot if K's own
// generation is unchanged; the scopes' generations are then read again,
// and if one moved since the claim, cluster_unfill.lua takes the value back.
export async function fill(redis, key, value, ttlMs, tokens) {
  checkTtl(ttlMs);
  if (redis.isCluster) {
    const gens = clusterGuardKeys(key);
    const head = stamp(tokens);
    const n = await redis.invalidator_cluster_fill(2, key, gens[0], JSON.stringify(value), ttlMs, tokens[0], head);
    if (n !== 1) return false;
    const now = await Promise.all(gens.slice(1).map((g) => redis.get(g)));
    if (now.some((t, i) => (t ?? '0') !== tokens[i + 1])) {
      await redis.invalidator_cluster_unfill(1, key, head);
      return false;
    }
    return true;
  }
  const keys = [key, ...guardKeys(key)];
  const n = await redis.invalidator_fill(keys.length, ...keys, JSON.stringify(value), ttlMs, ...tokens);
  return n === 1;
}

// set is an unconditional write, stamped with the current generations.
export async function set(redis, key, value, ttlMs) {
  checkTtl(ttlMs);
  if (redis.isCluster) {
    const tokens = await claim(redis, key);
    await redis.set(key, stamp(tokens) + JSON.stringify(value), 'PX', ttlMs);
    return;
  }
  const keys = [key, ...guardKeys(key)];
  await redis.invalidator_set(keys.length, ...keys, JSON.stringify(value), ttlMs, newToken(), GENERATION_TTL_MS);
}

function checkTtl(ttlMs) {
  if (!Number.isInteger(ttlMs) || ttlMs <= 0 || ttlMs > MAX_TTL_MS) {
    throw new RangeError(`cache: TTL ${ttlMs} ms outside (0, ${MAX_TTL_MS}]`);
  }
}

// Cache is the @cached counterpart: hit, or claim -> load -> guarded fill.
// Callers that claimed the same tokens share one load; a load that began
// before an invalidation never stores its value. When Redis fails, load
// runs uncached with one warning per outage.
export class Cache {
  constructor(redis, { log = console } = {}) {
    this.redis = defineScripts(redis);
    this.log = log;
    this.inflight = new Map();
    this.down = false;
    this.markerDue = 0;
  }

  // mark renews the protocol marker when due: one SET every 20 s at most.
  async mark() {
    const now = Date.now();
    if (now < this.markerDue) return;
    this.markerDue = now + MARKER_REFRESH_MS;
    await this.redis.set(MARKER_KEY, 'node', 'PX', MARKER_TTL_MS);
  }

  // fetch returns { value, hit } where hit is true (HIT), false (MISS) or
  // null (Redis failed, served uncached).
  async fetch(key, ttlMs, load) {
    let tokens;
    try {
      await this.mark();
      const cached = await read(this.redis, key);
      if (cached !== undefined) {
        this.up();
        this.log.debug?.({ key }, '🔍 cache hit');
        return { value: cached, hit: true };
      }
      this.log.info({ key }, '❌ cache miss');
      tokens = await claim(this.redis, key);
      this.up();
    } catch (err) {
      this.failed(err);
      return { value: await load(), hit: null };
    }

    const flight = `${key}\n${tokens.join(' ')}`;
    let shared = this.inflight.get(flight);
    if (!shared) {
      shared = this.loadAndFill(key, ttlMs, load, tokens).finally(() => this.inflight.delete(flight));
      this.inflight.set(flight, shared);
    }
    return { value: await shared, hit: false };
  }

  async loadAndFill(key, ttlMs, load, tokens) {
    const value = await load();
    try {
      if (await fill(this.redis, key, value, ttlMs, tokens)) {
        this.log.info({ key, ttl_ms: ttlMs }, '💾 cache stored');
      } else {
        this.log.info({ key }, '⚠️ stale fill refused: invalidated during the load');
      }
    } catch (err) {
      this.failed(err);
    }
    return value;
  }

  up() {
    if (this.down) this.log.info('✅ Redis reachable again, caching resumed');
    this.down = false;
  }

  failed(err) {
    if (!this.down) this.log.warn({ err: err.message }, '⚠️ Redis unavailable, serving uncached');
    this.down = true;
  }
}
