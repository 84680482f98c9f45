"""The original guide's ``redis_cache``, reading and filling through the
invalidator's read/fill protocol (README, "The read/fill protocol (any
language)").

A key K is guarded by G(K): ``invalidator:gen:K``, then ``invalidator:gen:P``
for each segment prefix P of K (each ending in ``:``), shortest first. A
value is ``@gen <tokens>\\n<json>``; ``read.lua`` returns the JSON only while
the stamp equals the current tokens, so a pattern invalidation (the worker's,
with generations on, or ``clear_pattern`` here) is a miss at once, before any
SCAN reaches the keys. A fill claims G(K) before the load and writes only if
no token moved meanwhile, so a value loaded before an invalidation is never
stored after it.

The Lua scripts are the repository's (``read.lua``, ``claim.lua``,
``fill.lua``, ``set.lua``), loaded as they are: ``$CACHE_LUA_DIR``, or
``../../guard`` (``../../cache`` in older trees) from this file.

When Redis fails, reads miss, writes are skipped and ``fetch`` runs the
loader uncached, with one ⚠️ line per outage and one ✅ line when Redis
answers again.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import os
import pathlib
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Optional

import redis

log = logging.getLogger("redis_cache")

GEN_PREFIX = "invalidator:gen:"
# The generation TTL the scripts take (guard.TTL, 24 h).
GENERATION_TTL_MS = 86_400_000
# Values must not outlive their generations.
MAX_TTL_S = GENERATION_TTL_MS // 1000
# The protocol's marker (guard.ProtocolMarkerKey): kept alive while the app
# reads and fills, so that a worker with GENERATIONS=auto turns generations on.
MARKER_KEY = "invalidator:protocol"
MARKER_NAME = "python"
MARKER_TTL_MS = 60_000
MARKER_REFRESH_S = 20.0
# Glob metacharacters of Redis patterns.
GLOB = "*?[\\"
SCAN_COUNT = 1000


def lua_dir() -> pathlib.Path:
    """Where the protocol's scripts are read: $CACHE_LUA_DIR, or the
    repository's directory that holds them, two levels above this file
    (guard/, or cache/ in trees from before the guard package)."""
    env = os.environ.get("CACHE_LUA_DIR")
    if env:
        return pathlib.Path(env)
    repo = pathlib.Path(__file__).resolve().parent.parent.parent
    for d in ("guard", "cache"):
        if (repo / d / "read.lua").is_file():
            return repo / d
    raise FileNotFoundError(f"the protocol's Lua scripts are in neither {repo / 'guard'} nor {repo / 'cache'}: set CACHE_LUA_DIR")


def guard_keys(key: str) -> list[str]:
    """G(K) in the order the scripts take it: the key's own generation, then
    each segment prefix's, shortest first."""
    prefixes = [key[: i + 1] for i, c in enumerate(key) if c == ":"]
    return [GEN_PREFIX + k for k in [key] + prefixes]


def pattern_scope(pattern: str) -> str:
    """The scope of a pattern (cachekeys.PatternScope): its literal prefix cut
    back to, and including, its last ':'. An exact key is its own scope."""
    stop = min((i for i in (pattern.find(c) for c in GLOB) if i >= 0), default=-1)
    if stop < 0:
        return pattern
    prefix = pattern[:stop]
    i = prefix.rfind(":")
    return "" if i < 0 else prefix[: i + 1]


def is_pattern(s: str) -> bool:
    return any(c in s for c in GLOB)


def check_pattern(pattern: str) -> None:
    """A pattern must start with a literal prefix and a ':' before any glob
    metacharacter, as `invalidator purge` requires: `*` alone would clear
    everything."""
    scope = pattern_scope(pattern)
    if not scope or scope == ":":
        raise ValueError(f"pattern {pattern!r}: needs a literal prefix and ':' before any glob metacharacter")


def new_token() -> str:
    """A fresh generation token: unique, never '0', no spaces."""
    return uuid.uuid4().hex


class Stats:
    """Running counters of this process's cache, for the stats endpoints."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = self.misses = self.fills = self.stale_fills_refused = 0
        self.loads = self.fallbacks = self.deletes = self.clears = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            total = self.hits + self.misses
            return {
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": round(self.hits / total, 4) if total else 0.0,
                "fills": self.fills,
                "stale_fills_refused": self.stale_fills_refused,
                "loads": self.loads,
                "fallbacks": self.fallbacks,
                "deletes": self.deletes,
                "clears": self.clears,
            }


class RedisCache:
    """get/set/delete/exists/clear_pattern through the read/fill protocol,
    and fetch (the body of @cached): hit, or claim -> load -> guarded fill,
    with one load per key and claimed generations in this process."""

    def __init__(self, url: Optional[str] = None, client: Optional[redis.Redis] = None) -> None:
        self.url = url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        self.redis = client or redis.Redis.from_url(
            self.url, socket_connect_timeout=0.5, socket_timeout=1.0, health_check_interval=10
        )
        lua = lua_dir()
        self._read, self._claim, self._fill, self._set = (
            self.redis.register_script((lua / f"{n}.lua").read_text()) for n in ("read", "claim", "fill", "set")
        )
        self.stats = Stats()
        self._flights: dict[str, Future] = {}
        self._flights_lock = threading.Lock()
        self._marker_due = 0.0
        self._marker_lock = threading.Lock()
        self._down = False
        self._down_lock = threading.Lock()

    # -- outage bookkeeping -------------------------------------------------

    def _failed(self, err: Exception) -> None:
        with self._down_lock:
            first = not self._down
            self._down = True
        if first:
            log.warning("⚠️ Redis unavailable, serving from the database: %s", err)

    def _up(self) -> None:
        if not self._down:
            return
        with self._down_lock:
            was, self._down = self._down, False
        if was:
            log.info("✅ Redis reachable again, caching resumed")

    @property
    def available(self) -> bool:
        return not self._down

    def _mark(self) -> None:
        """Renew the protocol marker when due: one SET per 20 s at most."""
        now = time.monotonic()
        if now < self._marker_due:
            return
        with self._marker_lock:
            if now < self._marker_due:
                return
            self._marker_due = now + MARKER_REFRESH_S
        self.redis.set(MARKER_KEY, MARKER_NAME, px=MARKER_TTL_MS)

    # -- the guide's operations ----------------------------------------------

    def get(self, key: str) -> Optional[Any]:
        """The value of key, or None for a missing key, a value older than an
        invalidation that covers it, or Redis down."""
        try:
            self._mark()
            raw = self._read(keys=[key] + guard_keys(key))
            self._up()
        except redis.RedisError as err:
            self._failed(err)
            return None
        if raw is None:
            self.stats.add("misses")
            log.info("❌ cache miss key=%s", key)
            return None
        self.stats.add("hits")
        log.debug("🔍 cache hit key=%s", key)
        return json.loads(raw)

    def set(self, key: str, value: Any, ttl: int = 300) -> bool:
        """Store value as JSON, stamped with the current generations (an
        unconditional write); False when Redis is down."""
        check_ttl(ttl)
        try:
            self._mark()
            self._set(keys=[key] + guard_keys(key), args=[_encode(value), ttl * 1000, new_token(), GENERATION_TTL_MS])
            self._up()
        except redis.RedisError as err:
            self._failed(err)
            return False
        self.stats.add("fills")
        log.info("💾 cache stored key=%s ttl=%ss", key, ttl)
        return True

    def delete(self, *keys: str) -> int:
        """Remove exact keys as the worker does: each key's own generation,
        then the key, in one UNLINK. Returns the cache keys removed."""
        if not keys:
            return 0
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.unlink(*[GEN_PREFIX + k for k in keys])
            pipe.unlink(*keys)
            removed = pipe.execute()[1]
            self._up()
        except redis.RedisError as err:
            self._failed(err)
            return 0
        self.stats.add("deletes", len(keys))
        log.info("🗑️ cache deleted keys=%s removed=%d", list(keys), removed)
        return removed

    def exists(self, *keys: str) -> int:
        """How many of keys get() would find (fresh, stamped values)."""
        n = 0
        try:
            for k in keys:
                if self._read(keys=[k] + guard_keys(k)) is not None:
                    n += 1
            self._up()
        except redis.RedisError as err:
            self._failed(err)
            return 0
        return n

    def clear_pattern(self, pattern: str) -> int:
        """Invalidate every key matching pattern: first the scope's generation
        moves (readers miss at once), then one SCAN pass removes the keys.
        Returns the keys removed."""
        check_pattern(pattern)
        try:
            self.redis.set(GEN_PREFIX + pattern_scope(pattern), new_token(), px=GENERATION_TTL_MS)
            removed = 0
            for batch in _batches(self.redis.scan_iter(match=pattern, count=SCAN_COUNT), 500):
                removed += self.redis.unlink(*batch)
            self._up()
        except redis.RedisError as err:
            self._failed(err)
            return 0
        self.stats.add("clears")
        log.info("🗑️ cache cleared pattern=%s removed=%d", pattern, removed)
        return removed

    def invalidate(self, keys: Iterable[str] = (), patterns: Iterable[str] = ()) -> bool:
        """What the worker does first for events.cache.invalidate, in one
        round trip: a fresh token on each pattern's scope generation, and
        each exact key removed with its own generation. Readers miss at once;
        the keys under the patterns stay (unreadable) until the worker's
        sweep or their TTL, so the cost does not grow with the keyspace.
        False when Redis is down."""
        keys, patterns = list(keys), list(patterns)
        for p in patterns:
            check_pattern(p)
        scopes = sorted({pattern_scope(p) for p in patterns})
        if not keys and not scopes:
            return True
        try:
            pipe = self.redis.pipeline(transaction=False)
            token = new_token()
            for s in scopes:
                pipe.set(GEN_PREFIX + s, token, px=GENERATION_TTL_MS)
            if keys:
                pipe.unlink(*[GEN_PREFIX + k for k in keys])
                pipe.unlink(*keys)
            pipe.execute()
            self._up()
        except redis.RedisError as err:
            self._failed(err)
            return False
        log.info("🗑️ cache invalidated keys=%s patterns=%s", keys, patterns)
        return True

    # -- @cached -------------------------------------------------------------

    def fetch(self, key: str, ttl: int, load: Callable[[], Any]) -> tuple[Any, str]:
        """The value of key and how it was served: ("HIT"), or ("MISS": claim,
        load, guarded fill; callers in this process that claimed the same
        tokens share one load), or ("BYPASS": Redis down, loaded uncached)."""
        check_ttl(ttl)
        try:
            self._mark()
            raw = self._read(keys=[key] + guard_keys(key))
            if raw is not None:
                self._up()
                self.stats.add("hits")
                log.debug("🔍 cache hit key=%s", key)
                return json.loads(raw), "HIT"
            log.info("❌ cache miss key=%s", key)
            tokens = [t.decode() if isinstance(t, bytes) else t for t in self._claim(keys=guard_keys(key), args=[new_token(), GENERATION_TTL_MS])]
            self._up()
        except redis.RedisError as err:
            self._failed(err)
            self.stats.add("fallbacks")
            self.stats.add("loads")
            return load(), "BYPASS"

        flight = key + "\n" + " ".join(tokens)
        with self._flights_lock:
            fut = self._flights.get(flight)
            leader = fut is None
            if leader:
                fut = Future()
                self._flights[flight] = fut
            self.stats.add("misses")  # counted once the caller is in a flight
        if not leader:
            return fut.result(), "MISS"
        try:
            value = self._load_and_fill(key, ttl, load, tokens)
            fut.set_result(value)
            return value, "MISS"
        except BaseException as err:
            fut.set_exception(err)
            raise
        finally:
            with self._flights_lock:
                self._flights.pop(flight, None)

    def _load_and_fill(self, key: str, ttl: int, load: Callable[[], Any], tokens: list[str]) -> Any:
        self.stats.add("loads")
        value = load()
        try:
            stored = self._fill(keys=[key] + guard_keys(key), args=[_encode(value), ttl * 1000] + tokens)
        except redis.RedisError as err:
            self._failed(err)
            return value
        if stored == 1:
            self.stats.add("fills")
            log.info("💾 cache stored key=%s ttl=%ss", key, ttl)
        else:
            self.stats.add("stale_fills_refused")
            log.warning("⚠️ stale fill refused key=%s: invalidated during the load", key)
        return value

    def ping(self) -> float:
        """Round trip to Redis in ms; raises on failure."""
        t = time.perf_counter()
        self.redis.ping()
        return (time.perf_counter() - t) * 1000

    def close(self) -> None:
        self.redis.close()


def _encode(value: Any) -> str:
    """JSON of value; Decimal, datetime, date and UUID as FastAPI renders them."""
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def _json_default(o: Any) -> Any:
    if isinstance(o, decimal.Decimal):
        return float(o)
    if isinstance(o, (datetime.datetime, datetime.date)):
        return o.isoformat()
    if isinstance(o, uuid.UUID):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def check_ttl(ttl: int) -> None:
    if not isinstance(ttl, int) or ttl <= 0 or ttl > MAX_TTL_S:
        raise ValueError(f"cache TTL {ttl!r} s outside (0, {MAX_TTL_S}]")


def _batches(it: Iterable[Any], n: int):
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


# The guide's module-level instance; configured by $REDIS_URL.
redis_cache: Optional[RedisCache] = None


def init(url: Optional[str] = None) -> RedisCache:
    """Create the module's redis_cache (at the app's start)."""
    global redis_cache
    redis_cache = RedisCache(url)
    return redis_cache
