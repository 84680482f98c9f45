"""The guide's decorators, on the invalidator.

``@cached(ttl=..., key_prefix=...)`` serves an endpoint from Redis through
the read/fill protocol (``redis_cache.RedisCache.fetch``): a hit, or one
load per key in this process and a guarded fill that is refused when an
invalidation ran during the load. It sets ``X-Cache: HIT``, ``MISS`` or
``BYPASS`` (Redis down, or an id that may not go into a key).

``@invalidate_cache(*templates)`` runs a mutation in one database
transaction together with
``SELECT pg_logical_emit_message(true, 'invalidator', '{"keys": [...], "patterns": [...]}')``.
``invalidator cdc`` publishes that message at the commit as
``events.cache.invalidate`` and the worker removes the keys: the
invalidation commits with the data or not at all. After the commit the same
keys are invalidated here too (RedisCache.invalidate: the generations
only, one round trip), so that this app's next request is fresh without
waiting for the worker (a failure there is only logged: the committed
message covers it).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
from typing import Any, Callable

import psycopg2.extensions
from fastapi import Response
from fastapi.encoders import jsonable_encoder

import redis_cache

log = logging.getLogger("decorators")

# Ids that may go into a key: no glob metacharacters, no ':'.
ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_RESPONSE = "_cache_response"


def _key_args(sig: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = sig.bind_partial(*args, **kwargs)
    return {k: v for k, v in bound.arguments.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}


def _with_response_param(sig: inspect.Signature) -> tuple[inspect.Signature, str | None]:
    """sig with a Response parameter FastAPI fills in, unless it has one."""
    for p in sig.parameters.values():
        if p.annotation is Response:
            return sig, p.name
    extra = inspect.Parameter(_RESPONSE, inspect.Parameter.KEYWORD_ONLY, annotation=Response)
    params = list(sig.parameters.values())
    # keyword-only parameters go after the others, before **kwargs
    i = next((n for n, p in enumerate(params) if p.kind == inspect.Parameter.VAR_KEYWORD), len(params))
    return sig.replace(parameters=params[:i] + [extra] + params[i:]), None


def cache_key(key_prefix: str, values: dict[str, Any]) -> str | None:
    """The key of a call: key_prefix formatted with the arguments when it has
    placeholders ("user:{user_id}:profile"), else key_prefix and the
    arguments' values joined by ':' ("cache:course_analytics:42"), or
    key_prefix + ":global" without arguments. None when a value may not go
    into a key."""
    if any(not ID.match(str(v)) for v in values.values()):
        return None
    if "{" in key_prefix:
        return key_prefix.format(**values)
    parts = [str(v) for v in values.values()]
    return key_prefix + ":" + (":".join(parts) if parts else "global")


def cached(ttl: int = 300, key_prefix: str = "cache") -> Callable:
    """Cache a (sync) endpoint's JSON answer for ttl seconds under a key made
    of key_prefix and its str/int arguments (see cache_key)."""
    redis_cache.check_ttl(ttl)

    def decorator(func: Callable) -> Callable:
        sig = inspect.signature(func)
        new_sig, own_response = _with_response_param(sig)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            response = kwargs.get(own_response) if own_response else kwargs.pop(_RESPONSE, None)
            key = cache_key(key_prefix, _key_args(sig, args, kwargs))
            cache = redis_cache.redis_cache
            if key is None or cache is None:
                value, how = func(*args, **kwargs), "BYPASS"
            else:
                value, how = cache.fetch(key, ttl, lambda: jsonable_encoder(func(*args, **kwargs)))
            if response is not None:
                response.headers["X-Cache"] = how
            return value

        wrapper.__signature__ = new_sig
        return wrapper

    return decorator


def _connection(args: tuple, kwargs: dict) -> psycopg2.extensions.connection:
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, psycopg2.extensions.connection):
            return v
    raise TypeError("@invalidate_cache needs the request's database connection among the endpoint's arguments")


def split(targets: list[str]) -> tuple[list[str], list[str]]:
    """Exact keys and patterns (those with glob metacharacters), each
    pattern checked as `invalidator purge` checks it."""
    keys = [t for t in targets if not redis_cache.is_pattern(t)]
    patterns = [t for t in targets if redis_cache.is_pattern(t)]
    for p in patterns:
        redis_cache.check_pattern(p)
    return keys, patterns


def emit(cur, keys: list[str], patterns: list[str]) -> None:
    """The explicit invalidation, in cur's transaction: published by
    `invalidator cdc` at the commit, as events.cache.invalidate."""
    cur.execute(
        "SELECT pg_logical_emit_message(true, 'invalidator', %s)",
        (json.dumps({"keys": keys, "patterns": patterns}),),
    )


def invalidate_cache(*templates: str) -> Callable:
    """Run the endpoint in a transaction that also emits the invalidation of
    templates (formatted with the endpoint's arguments: "user:{user_id}",
    "user:{user_id}:*"), commit it, then invalidate here at once. An
    exception rolls the transaction back: nothing is invalidated. The
    endpoint must not commit itself."""

    def decorator(func: Callable) -> Callable:
        sig = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            conn = _connection(args, kwargs)
            values = _key_args(sig, args, kwargs)
            if any(not ID.match(str(v)) for v in values.values()):
                raise ValueError(f"@invalidate_cache: an argument may not go into a key: {values}")
            keys, patterns = split([t.format(**values) for t in templates])
            try:
                with conn.cursor() as cur:
                    emit(cur, keys, patterns)
                result = func(*args, **kwargs)
                conn.commit()
            except BaseException:
                conn.rollback()
                log.info("❌ transaction rolled back, nothing invalidated keys=%s patterns=%s", keys, patterns)
                raise
            log.info("🗑️ invalidation committed keys=%s patterns=%s", keys, patterns)
            if redis_cache.redis_cache is not None:
                redis_cache.redis_cache.invalidate(keys, patterns)
            return result

        return wrapper

    return decorator
