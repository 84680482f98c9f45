"""The example's stack for the tests: a PostgreSQL of its own
(wal_level=logical), redis-server, nats-server -js, the worker and
`invalidator cdc` built from this repository, and the app under uvicorn,
all on free loopback ports (stack.py).

When something is missing the tests skip with a message, or fail when
CI=true (as .ci/run sets it).
"""

import os
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(msg: str):
    if IN_CI:
        pytest.fail(f"{msg} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(msg)


_missing_modules = []
for _mod in ("fastapi", "uvicorn", "redis", "psycopg2", "httpx"):
    try:
        __import__(_mod)
    except ImportError:
        _missing_modules.append(_mod)

# The advisory lock the app's analytics loads wait for after reading their
# rows (database.LOAD_GATE_LOCK): a test holds it to keep loads in flight.
LOAD_GATE_LOCK = 4242


@pytest.fixture(scope="session")
def stack():
    if _missing_modules:
        unavailable(
            f"python modules missing: {', '.join(_missing_modules)} "
            "(apt-get install -y python3-fastapi python3-uvicorn python3-redis python3-psycopg2 python3-pytest python3-httpx; "
            "run the tests with /usr/bin/python3 -m pytest)"
        )
    import stack as stackmod

    try:
        s = stackmod.Stack(app_env={"LOAD_GATE_LOCK": str(LOAD_GATE_LOCK)}, log_dir=os.environ.get("STACK_LOG_DIR"))
    except stackmod.Missing as err:
        unavailable(str(err))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(stack):
    import httpx

    with httpx.Client(base_url=stack.app_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def cache(stack):
    """The protocol's reader on the test's side, on the stack's Redis."""
    import redis_cache

    c = redis_cache.RedisCache(stack.redis.url)
    yield c
    c.close()


class Gate:
    """Holds the app's load gate: loads that read their rows wait until
    release (at most 20 s: the lock is held by this test's session)."""

    def __init__(self, url: str):
        import psycopg2

        self.conn = psycopg2.connect(url, connect_timeout=5)
        self.conn.autocommit = True

    def __enter__(self):
        with self.conn.cursor() as cur:
            cur.execute("SET statement_timeout = '20s'")
            cur.execute("SELECT pg_advisory_lock(%s)", (LOAD_GATE_LOCK,))
        return self

    def waiting(self) -> int:
        """Loads waiting at the gate now."""
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted",
                (LOAD_GATE_LOCK,),
            )
            return cur.fetchone()[0]

    def release(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock_all()")

    def __exit__(self, *exc):
        self.release()
        self.conn.close()


@pytest.fixture
def gate(stack):
    with Gate(stack.pg.url()) as g:
        yield g
