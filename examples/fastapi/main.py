"""The original guide's FastAPI app, on the invalidator.

Cached endpoints read and fill Redis through the invalidator's read/fill
protocol (redis_cache.py); mutations commit an explicit invalidation with
their data (@invalidate_cache); `invalidator cdc` publishes every committed
row change of courses, students and users, wherever it was written, and the
worker removes the keys (rules.yaml).

    uvicorn main:app --host 127.0.0.1 --port 8000

Settings: DATABASE_URL, REDIS_URL, LOG_LEVEL (README.md).
"""

import logging
import os
import platform
import time
import uuid
from datetime import datetime, timezone
from typing import Optional

import psycopg2
import redis
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import database
import redis_cache
from database import get_db
from decorators import cached, invalidate_cache

logging.basicConfig(
    level=os.environ.get("LOG_LEVEL", "INFO").upper(),
    format="%(asctime)s %(levelname)s %(name)s %(message)s",
)
log = logging.getLogger("app")
logging.getLogger("uvicorn.error").propagate = False  # uvicorn prints its own lines

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/app")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
STARTED = time.time()

app = FastAPI(title="invalidator FastAPI example", version="3.0.0")


def _redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else f"{scheme}://{cred}@{host}"


@app.on_event("startup")
def startup() -> None:
    log.info("🔧 configuration loaded database=%s redis=%s lua=%s", _redact(DATABASE_URL), _redact(REDIS_URL), redis_cache.lua_dir())
    database.init(DATABASE_URL)
    log.info("🔌 connecting to Redis")
    cache = redis_cache.init(REDIS_URL)
    try:
        ms = cache.ping()
        log.info("✅ Redis connected latency_ms=%.2f", ms)
    except redis.RedisError as err:
        cache._failed(err)


@app.on_event("shutdown")
def shutdown() -> None:
    log.info("🔌 closing PostgreSQL and Redis")
    database.close()
    if redis_cache.redis_cache is not None:
        redis_cache.redis_cache.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _check(fn) -> dict:
    try:
        return {"status": "healthy", "latency_ms": round(fn(), 2)}
    except (psycopg2.Error, redis.RedisError, OSError) as err:
        return {"status": "unhealthy", "error": str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}


# -- health -------------------------------------------------------------------


@app.get("/health")
def health():
    """healthy: both answer; degraded: Redis down (answers come from the
    database, uncached); unhealthy (503): the database is down."""
    checks = {"database": _check(database.ping), "redis": _check(redis_cache.redis_cache.ping)}
    if checks["database"]["status"] != "healthy":
        status, code = "unhealthy", 503
    elif checks["redis"]["status"] != "healthy":
        status, code = "degraded", 200
    else:
        status, code = "healthy", 200
    return JSONResponse({"status": status, "timestamp": _now(), "checks": checks}, status_code=code)


@app.get("/api/v3/system/health/detailed")
def health_detailed(db=Depends(get_db)):
    cache = redis_cache.redis_cache
    components = {"database": _check(database.ping), "redis": _check(cache.ping)}
    if components["database"]["status"] == "healthy":
        components["database"]["version"] = database.server_version(db)
        components["database"]["pool_max"] = database.pool.maxconn
    if components["redis"]["status"] == "healthy":
        try:
            info = cache.redis.info("server")
            mem = cache.redis.info("memory")
            marker = cache.redis.get(redis_cache.MARKER_KEY)
            components["redis"].update(
                version=info.get("redis_version"),
                used_memory_human=mem.get("used_memory_human"),
                protocol_marker=marker.decode() if marker else None,
            )
        except redis.RedisError as err:
            components["redis"] = {"status": "unhealthy", "error": str(err)}
    components["cache"] = {"status": "healthy" if cache.available else "bypassed", **cache.stats.snapshot()}
    if components["database"]["status"] != "healthy":
        status, code = "unhealthy", 503
    elif components["redis"]["status"] != "healthy":
        status, code = "degraded", 200
    else:
        status, code = "healthy", 200
    body = {
        "status": status,
        "timestamp": _now(),
        "uptime_s": round(time.time() - STARTED, 1),
        "python": platform.python_version(),
        "components": components,
    }
    return JSONResponse(body, status_code=code)


# -- Redis ----------------------------------------------------------------------


@app.get("/api/v3/system/redis/stats")
def redis_stats():
    cache = redis_cache.redis_cache
    try:
        info = cache.redis.info()
    except redis.RedisError as err:
        return JSONResponse({"status": "unavailable", "error": str(err), "app": cache.stats.snapshot()}, status_code=503)
    hits, misses = info.get("keyspace_hits", 0), info.get("keyspace_misses", 0)
    db0 = info.get("db0", {})
    body = {
        "status": "ok",
        "server": {
            "redis_version": info.get("redis_version"),
            "connected_clients": info.get("connected_clients"),
            "used_memory_human": info.get("used_memory_human"),
            "keys": db0.get("keys", 0) if isinstance(db0, dict) else 0,
            "keyspace_hits": hits,
            "keyspace_misses": misses,
            "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
            "total_commands_processed": info.get("total_commands_processed"),
        },
        "app": cache.stats.snapshot(),
    }
    log.info("📊 redis stats keys=%s hit_rate=%s", body["server"]["keys"], body["server"]["hit_rate"])
    return body


@app.post("/api/v3/system/redis/test")
def redis_test():
    """set, get, exists and delete a test key through the protocol."""
    cache = redis_cache.redis_cache
    key = f"cache:redis_test:{uuid.uuid4().hex}"
    value = {"test": True, "at": _now()}
    t = time.perf_counter()
    ops = {"set": cache.set(key, value, ttl=60)}
    ops["get"] = cache.get(key) == value
    ops["exists"] = cache.exists(key) == 1
    ops["delete"] = cache.delete(key) == 1
    ops["gone"] = cache.get(key) is None
    ok = all(ops.values())
    body = {"status": "ok" if ok else "failed", "operations": ops, "latency_ms": round((time.perf_counter() - t) * 1000, 2)}
    if ok:
        log.info("✅ Redis test passed latency_ms=%s", body["latency_ms"])
    else:
        log.error("❌ Redis test failed operations=%s", ops)
    return JSONResponse(body, status_code=200 if ok else 503)


# -- cached analytics -------------------------------------------------------------


@app.get("/api/v3/system/stats")
@cached(ttl=30, key_prefix="cache:system_stats")
def system_stats(db=Depends(get_db)):
    return database.system_stats(db)


@app.get("/api/v3/analytics/courses/{course_id}")
@cached(ttl=60, key_prefix="cache:course_analytics")
def course_analytics(course_id: int, db=Depends(get_db)):
    row = database.course_analytics(db, course_id)
    if row is None:
        raise HTTPException(404, f"course {course_id} not found")
    return row


@app.get("/api/v3/analytics/students/{student_id}")
@cached(ttl=45, key_prefix="cache:student_risk")
def student_analytics(student_id: int, db=Depends(get_db)):
    row = database.student_risk(db, student_id)
    if row is None:
        raise HTTPException(404, f"student {student_id} not found")
    return row


# -- users --------------------------------------------------------------------------


@app.get("/users/{user_id}")
@cached(ttl=300, key_prefix="user")
def get_user(user_id: int, db=Depends(get_db)):
    row = database.user(db, user_id)
    if row is None:
        raise HTTPException(404, f"user {user_id} not found")
    return row


@app.get("/users/{user_id}/profile")
@cached(ttl=300, key_prefix="user:{user_id}:profile")
def get_user_profile(user_id: int, db=Depends(get_db)):
    row = database.user(db, user_id)
    if row is None:
        raise HTTPException(404, f"user {user_id} not found")
    return {**row, "display": f"{row['name']} <{row['email']}>"}


class UserUpdate(BaseModel):
    email: Optional[str] = None
    name: Optional[str] = None


@app.post("/users/{user_id}")
@invalidate_cache("user:{user_id}", "user:{user_id}:*")
def update_user(user_id: int, body: UserUpdate, db=Depends(get_db)):
    """The guide's @invalidate_cache("user:*"), scoped to the user: user:42
    and user:42:* go, user:420 stays."""
    try:
        row = database.update_user(db, user_id, body.email, body.name)
    except psycopg2.errors.UniqueViolation:
        raise HTTPException(409, "email already taken")
    if row is None:
        raise HTTPException(404, f"user {user_id} not found")
    return row


class CourseUpdate(BaseModel):
    title: str


@app.put("/courses/{course_id}")
@invalidate_cache("cache:course_analytics:{course_id}", "cache:course_analytics:{course_id}:*", "cache:system_stats:*")
def update_course(course_id: int, body: CourseUpdate, db=Depends(get_db)):
    row = database.update_course(db, course_id, body.title)
    if row is None:
        raise HTTPException(404, f"course {course_id} not found")
    return row


@app.exception_handler(psycopg2.OperationalError)
def database_down(request, exc):
    log.error("❌ database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
    return JSONResponse({"detail": "database unavailable"}, status_code=503)
