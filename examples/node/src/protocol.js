// The invalidator read/fill protocol (README, "The read/fill protocol (any
// language)"), with the Lua scripts loaded as they are from ../../cache/.
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
export const luaDir = process.env.CACHE_LUA_DIR || join(here, '..', '..', '..', 'cache');

// The generation TTL the scripts take (engine.DefaultGenerationTTL, 24 h).
export const GENERATION_TTL_MS = 86_400_000;

// Values must not outlive their generations.
export const MAX_TTL_MS = GENERATION_TTL_MS;

const GEN_PREFIX = 'invalidator:gen:';

// The protocol's marker (engine.ProtocolMarkerKey): kept alive while the
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

// A fresh token: unique, never '0', no spaces or newlines.
export function newToken() {
  return randomUUID().replaceAll('-', '');
}

// defineScripts registers read/claim/fill/set on an ioredis client. ioredis
// runs them with EVALSHA and falls back to EVAL once after NOSCRIPT. They
// take a variable number of keys, so each call passes numkeys first.
export function defineScripts(redis) {
  for (const name of ['read', 'claim', 'fill', 'set']) {
    const lua = readFileSync(join(luaDir, `${name}.lua`), 'utf8');
    redis.defineCommand(`invalidator_${name}`, { lua });
  }
  return redis;
}

// read returns the parsed JSON value of key, or undefined on a miss (missing,
// stale, or a raw value without a stamp).
export async function read(redis, key) {
  const keys = [key, ...guardKeys(key)];
  const raw = await redis.invalidator_read(keys.length, ...keys);
  return raw == null ? undefined : JSON.parse(raw);
}

// claim claims the guard generations of key before the source is read and
// returns the tokens they hold.
export async function claim(redis, key) {
  const gens = guardKeys(key);
  return redis.invalidator_claim(gens.length, ...gens, newToken(), GENERATION_TTL_MS);
}

// fill writes value only if no guard moved since claim; false means an
// invalidation ran meanwhile and the value was not stored.
export async function fill(redis, key, value, ttlMs, tokens) {
  checkTtl(ttlMs);
  const keys = [key, ...guardKeys(key)];
  const n = await redis.invalidator_fill(keys.length, ...keys, JSON.stringify(value), ttlMs, ...tokens);
  return n === 1;
}

// set is an unconditional write, stamped with the current generations.
export async function set(redis, key, value, ttlMs) {
  checkTtl(ttlMs);
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
