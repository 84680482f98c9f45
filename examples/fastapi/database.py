"""PostgreSQL for the app: a psycopg2 connection pool and the queries of
the guide's endpoints (tables courses, students, users: schema.sql)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any, Iterator, Optional

import psycopg2
import psycopg2.extras
import psycopg2.pool

log = logging.getLogger("database")

pool: Optional[psycopg2.pool.ThreadedConnectionPool] = None

# LOAD_GATE_LOCK, a test hook: the analytics loads, once they have read
# their rows, wait for this advisory lock (shared) before they return, so a
# test that holds it keeps loads of the old row in flight while it updates.
LOAD_GATE_LOCK = int(os.environ.get("LOAD_GATE_LOCK", "0"))


ACQUIRE_TIMEOUT_S = 10.0
_slots = threading.BoundedSemaphore(1)


def init(url: str, maxconn: int = 60) -> None:
    global pool, _slots
    log.info("🔌 connecting to PostgreSQL")
    pool = psycopg2.pool.ThreadedConnectionPool(1, maxconn, url, connect_timeout=5)
    _slots = threading.BoundedSemaphore(maxconn)
    conn = pool.getconn()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
        conn.rollback()
    finally:
        pool.putconn(conn)
    log.info("✅ PostgreSQL connected version=%s", version)


def close() -> None:
    if pool is not None:
        pool.closeall()


@contextlib.contextmanager
def connection() -> Iterator[psycopg2.extensions.connection]:
    """A pooled connection, waiting at most ACQUIRE_TIMEOUT_S for one (the
    pool itself raises at once when it is exhausted); whatever is left
    uncommitted is rolled back."""
    if not _slots.acquire(timeout=ACQUIRE_TIMEOUT_S):
        raise psycopg2.OperationalError(f"no database connection free within {ACQUIRE_TIMEOUT_S} s")
    try:
        conn = pool.getconn()
        broken = False
        try:
            yield conn
        finally:
            try:
                conn.rollback()
            except psycopg2.Error:
                broken = True
            pool.putconn(conn, close=broken or bool(conn.closed))
    finally:
        _slots.release()


def get_db() -> Iterator[psycopg2.extensions.connection]:
    """FastAPI dependency: a pooled connection for the request."""
    with connection() as conn:
        yield conn


def ping() -> float:
    """Round trip to PostgreSQL in ms; raises on failure."""
    with connection() as conn:
        t = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.rollback()
        return (time.perf_counter() - t) * 1000


def _one(conn, sql: str, args: tuple = ()) -> Optional[dict[str, Any]]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return dict(row) if row is not None else None


def _gate(conn) -> None:
    if LOAD_GATE_LOCK:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock_shared(%s), pg_advisory_unlock_shared(%s)", (LOAD_GATE_LOCK, LOAD_GATE_LOCK))


def course_analytics(conn, course_id: int) -> Optional[dict[str, Any]]:
    # One statement reads the course and its students, so the answer is one
    # snapshot; the gate (tests) comes after it.
    row = _one(
        conn,
        """SELECT c.id AS course_id, c.title, c.version,
                  count(s.id) AS students,
                  coalesce(round(avg(s.progress)::numeric, 3), 0)::float AS avg_progress,
                  count(s.id) FILTER (WHERE s.progress < 0.3) AS at_risk
             FROM courses c LEFT JOIN students s ON s.course_id = c.id
            WHERE c.id = %s GROUP BY c.id""",
        (course_id,),
    )
    _gate(conn)
    conn.rollback()
    return row


def student_risk(conn, student_id: int) -> Optional[dict[str, Any]]:
    row = _one(
        conn,
        """SELECT id AS student_id, name, course_id, progress, version,
                  extract(epoch FROM now() - last_active)::int AS idle_s
             FROM students WHERE id = %s""",
        (student_id,),
    )
    _gate(conn)
    conn.rollback()
    if row is None:
        return None
    risk = (1 - row["progress"]) * 0.7 + min(row["idle_s"] / 86400 / 14, 1) * 0.3
    row["risk_score"] = round(risk, 3)
    row["risk_level"] = "high" if risk >= 0.6 else "medium" if risk >= 0.3 else "low"
    return row


def system_stats(conn) -> dict[str, Any]:
    row = _one(
        conn,
        """SELECT (SELECT count(*) FROM courses) AS courses,
                  (SELECT count(*) FROM students) AS students,
                  (SELECT count(*) FROM users) AS users,
                  (SELECT coalesce(sum(version), 0)::bigint FROM courses) AS course_versions,
                  now()::text AS computed_at""",
    )
    conn.rollback()
    return row


def user(conn, user_id: int) -> Optional[dict[str, Any]]:
    row = _one(conn, "SELECT id AS user_id, email, name, version FROM users WHERE id = %s", (user_id,))
    conn.rollback()
    return row


def update_user(conn, user_id: int, email: Optional[str], name: Optional[str]) -> Optional[dict[str, Any]]:
    """In the caller's transaction; the caller commits."""
    return _one(
        conn,
        """UPDATE users SET email = coalesce(%s, email), name = coalesce(%s, name)
            WHERE id = %s RETURNING id AS user_id, email, name, version""",
        (email, name, user_id),
    )


def update_course(conn, course_id: int, title: str) -> Optional[dict[str, Any]]:
    """In the caller's transaction; the caller commits."""
    return _one(
        conn,
        "UPDATE courses SET title = %s WHERE id = %s RETURNING id AS course_id, title, version",
        (title, course_id),
    )


def server_version(conn) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        v = cur.fetchone()[0]
    conn.rollback()
    return v
