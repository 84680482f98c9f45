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

# The app's own slow analytics query (database.SLOW_QUERY_MS): the window in
# which a load races an update.
SLOW_QUERY_MS = 500


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
        s = stackmod.Stack(app_env={"SLOW_QUERY_MS": str(SLOW_QUERY_MS)}, log_dir=os.environ.get("STACK_LOG_DIR"))
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
