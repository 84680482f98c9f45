"""End to end: the app, PostgreSQL, Redis, NATS, the worker and
`invalidator cdc`, all real (conftest.py). The order matters only for the
last test, which stops Redis and starts it again."""

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import stack as stackmod

WAIT = 15.0  # the bound of every wait for the worker or cdc


def get(client, path):
    r = client.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json(), r.headers.get("x-cache")


def app_stats(client):
    r = client.get("/api/v3/system/redis/stats")
    assert r.status_code == 200, r.text
    return r.json()["app"]


def eventually(what, fn, timeout=WAIT, every=0.05):
    """fn() until it returns a truthy value, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def wait_applied(stack, subject, since, timeout=WAIT):
    """The worker's JSON line for the first event of subject applied after
    the offset since of its output."""
    m = stack.worker.wait_output(r'\{[^\n]*"msg":"event applied","subject":"' + re.escape(subject) + r'"[^\n]*\}', timeout, since)
    return json.loads(m.group(0))


def count_applied(stack, subject, since):
    out = stack.worker.output[since:]
    return sum(1 for line in out.splitlines() if '"msg":"event applied"' in line and f'"subject":"{subject}"' in line)


def db_version(stack, table, id_):
    return int(stack.pg.psql("app", f"SELECT version FROM {table} WHERE id = {int(id_)}"))


def test_rules_file_checks(stack):
    r = subprocess.run([stack.bin, "rules", "check", str(stackmod.RULES)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "cdc public.students -> events.student." in r.stdout


def test_health_endpoints_answer_as_the_guide_shows(stack, client, cache):
    r = client.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "healthy"
    assert h["checks"]["database"]["status"] == "healthy"
    assert h["checks"]["redis"]["status"] == "healthy"

    stats, how = get(client, "/api/v3/system/stats")
    assert (stats["courses"], stats["students"], stats["users"]) == (3, 4, 4)
    assert how == "MISS"
    assert get(client, "/api/v3/system/stats") == (stats, "HIT")
    raw = cache.redis.get("cache:system_stats:global")
    assert raw.startswith(b"@gen "), raw  # stamped by fill.lua

    # The protocol's marker, so that a worker with GENERATIONS=auto turns them on.
    assert cache.redis.get("invalidator:protocol") == b"python"
    assert 0 < cache.redis.pttl("invalidator:protocol") <= 60_000

    d = client.get("/api/v3/system/health/detailed")
    assert d.status_code == 200
    comp = d.json()["components"]
    assert d.json()["status"] == "healthy"
    assert comp["database"]["status"] == "healthy" and comp["database"]["version"].startswith(("14", "15", "16", "17"))
    assert comp["redis"]["status"] == "healthy" and comp["redis"]["protocol_marker"] == "python"
    assert comp["cache"]["status"] == "healthy" and comp["cache"]["hits"] >= 1

    s = client.get("/api/v3/system/redis/stats").json()
    assert s["status"] == "ok" and s["server"]["redis_version"]
    assert s["server"]["keys"] >= 1 and s["app"]["fills"] >= 1

    t = client.post("/api/v3/system/redis/test")
    assert t.status_code == 200, t.text
    assert t.json()["status"] == "ok"
    assert t.json()["operations"] == {"set": True, "get": True, "exists": True, "delete": True, "gone": True}


def test_course_cached_until_updated_through_the_app(stack, client, cache):
    first, how = get(client, "/api/v3/analytics/courses/42")
    assert how in ("MISS", "HIT")
    other, _ = get(client, "/api/v3/analytics/courses/420")
    for _ in range(3):
        assert get(client, "/api/v3/analytics/courses/42") == (first, "HIT")
    assert first["version"] == db_version(stack, "courses", 42)

    since = stack.worker.mark()
    r = client.put("/courses/42", json={"title": "Go, updated through the app"})
    assert r.status_code == 200, r.text
    new = r.json()["version"]
    assert new == first["version"] + 1

    # Fresh on the very next request: the app invalidated at its commit.
    fresh, how = get(client, "/api/v3/analytics/courses/42")
    assert how == "MISS"
    assert (fresh["version"], fresh["title"]) == (new, "Go, updated through the app")
    assert get(client, "/api/v3/analytics/courses/420") == (other, "HIT")

    # The committed invalidation reaches the worker too, through cdc: the row
    # event and the message of @invalidate_cache. (It may cost one more miss:
    # the worker invalidates again what the app already had.)
    wait_applied(stack, "events.course.updated", since)
    wait_applied(stack, "events.cache.invalidate", since)
    assert get(client, "/api/v3/analytics/courses/42")[0] == fresh
    assert get(client, "/api/v3/analytics/courses/42") == (fresh, "HIT")
    assert get(client, "/api/v3/analytics/courses/420") == (other, "HIT")


def test_raw_sql_update_outside_the_app_invalidates_through_cdc(stack, client, cache):
    before, _ = get(client, "/api/v3/analytics/courses/42")
    assert get(client, "/api/v3/analytics/courses/42") == (before, "HIT")
    other, _ = get(client, "/api/v3/analytics/courses/420")
    assert get(client, "/api/v3/analytics/courses/420") == (other, "HIT")

    since = stack.worker.mark()
    stack.pg.psql("app", "UPDATE courses SET title = 'Go 2, from psql' WHERE id = 42")
    ev = wait_applied(stack, "events.course.updated", since)
    assert ev["id"].startswith("cdc:")

    # The worker has handled it: the cached answer is a miss now, and the
    # next one is the new row.
    assert cache.get("cache:course_analytics:42") is None
    fresh, how = get(client, "/api/v3/analytics/courses/42")
    assert how == "MISS"
    assert (fresh["version"], fresh["title"]) == (before["version"] + 1, "Go 2, from psql")
    assert get(client, "/api/v3/analytics/courses/42") == (fresh, "HIT")
    assert get(client, "/api/v3/analytics/courses/420") == (other, "HIT")


def test_raw_sql_student_update_reaches_student_and_course(stack, client, cache):
    risk, _ = get(client, "/api/v3/analytics/students/2")
    course, _ = get(client, "/api/v3/analytics/courses/42")
    other, _ = get(client, "/api/v3/analytics/courses/420")
    assert get(client, "/api/v3/analytics/students/2")[1] == "HIT"
    assert get(client, "/api/v3/analytics/courses/42")[1] == "HIT"

    since = stack.worker.mark()
    stack.pg.psql("app", "UPDATE students SET progress = 0.95 WHERE id = 2")
    wait_applied(stack, "events.student.updated", since)

    risk2, how = get(client, "/api/v3/analytics/students/2")
    assert how == "MISS" and risk2["version"] == risk["version"] + 1 and risk2["progress"] == pytest.approx(0.95)
    course2, how = get(client, "/api/v3/analytics/courses/42")
    assert how == "MISS" and course2["avg_progress"] != course["avg_progress"]
    assert get(client, "/api/v3/analytics/courses/420") == (other, "HIT")


def fill_users(client, ids):
    for i in ids:
        get(client, f"/users/{i}")
        get(client, f"/users/{i}/profile")
    for i in ids:
        assert get(client, f"/users/{i}")[1] == "HIT"
        assert get(client, f"/users/{i}/profile")[1] == "HIT"


def test_post_user_invalidates_its_keys_at_once_and_keeps_user_420(stack, client, cache):
    fill_users(client, [42, 420])
    since = stack.worker.mark()
    r = client.post("/users/42", json={"name": "Bob 2"})
    assert r.status_code == 200, r.text

    # At once: before the worker has had any chance to act.
    assert cache.get("user:42") is None
    assert cache.get("user:42:profile") is None
    assert cache.get("user:420") is not None
    assert cache.get("user:420:profile") is not None

    u, how = get(client, "/users/42")
    assert how == "MISS" and u["name"] == "Bob 2"
    p, how = get(client, "/users/42/profile")
    assert how == "MISS" and p["display"].startswith("Bob 2")

    # The message committed with the row reaches the worker through cdc; it
    # names user:42 and user:42:* only.
    wait_applied(stack, "events.cache.invalidate", since)
    wait_applied(stack, "events.user.updated", since)
    assert get(client, "/users/420")[1] == "HIT"
    assert get(client, "/users/420/profile")[1] == "HIT"


def test_rolled_back_transaction_invalidates_nothing(stack, client, cache):
    fill_users(client, [7, 43])
    email = stack.pg.psql("app", "SELECT email FROM users WHERE id = 7")
    since_app, since = stack.app.mark(), stack.worker.mark()

    # bob@example.com belongs to user 42: the UPDATE fails after the message
    # was emitted in the same transaction, which rolls back.
    r = client.post("/users/7", json={"email": "bob@example.com"})
    assert r.status_code == 409, r.text
    stack.app.wait_output(r"transaction rolled back, nothing invalidated keys=\['user:7'\]", 5, since_app)
    assert stack.pg.psql("app", "SELECT email FROM users WHERE id = 7") == email

    # A committed message after it, from psql: once the worker has applied
    # that one, it would have applied the rolled-back one before it.
    stack.pg.psql("app", """SELECT pg_logical_emit_message(true, 'invalidator', '{"keys": ["user:43"], "patterns": []}')""")
    wait_applied(stack, "events.cache.invalidate", since)
    assert cache.get("user:43") is None
    assert count_applied(stack, "events.cache.invalidate", since) == 1
    assert count_applied(stack, "events.user.updated", since) == 0
    assert get(client, "/users/7")[1] == "HIT"
    assert get(client, "/users/7/profile")[1] == "HIT"
    assert get(client, "/users/43/profile")[1] == "HIT"


def test_concurrent_misses_share_one_load(stack, client, cache, gate):
    cache.delete("cache:student_risk:3")
    before = app_stats(client)
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(get, client, "/api/v3/analytics/students/3") for _ in range(20)]
        # Every request has missed and joined a flight while the load waits.
        eventually("20 misses in a flight", lambda: app_stats(client)["misses"] - before["misses"] >= 20 and gate.waiting() >= 1)
        gate.release()
        answers = [f.result(timeout=30) for f in futures]
    assert len({json.dumps(a, sort_keys=True) for a, _ in answers}) == 1
    assert [h for _, h in answers] == ["MISS"] * 20
    assert app_stats(client)["loads"] - before["loads"] == 1


@pytest.mark.parametrize("writer", ["app", "psql"])
def test_race_50_requests_during_an_update_leave_no_older_value(stack, client, cache, gate, writer):
    key, path = "cache:course_analytics:7", "/api/v3/analytics/courses/7"
    cache.delete(key)
    start = app_stats(client)
    v0 = db_version(stack, "courses", 7)
    results = []
    lock = threading.Lock()

    def request(_):
        t = time.monotonic()
        body, how = get(client, path)
        with lock:
            results.append((t, body["version"], how))

    with ThreadPoolExecutor(50) as pool:
        first = [pool.submit(request, i) for i in range(25)]
        # 25 requests missed; their one load has read the old row and waits
        # at the gate, as a slow query would.
        eventually("25 misses, a load at the gate", lambda: app_stats(client)["misses"] - start["misses"] >= 25 and gate.waiting() >= 1)
        since = stack.worker.mark()
        if writer == "app":
            r = client.put("/courses/7", json={"title": "Python, raced"})
            assert r.status_code == 200, r.text
        else:
            stack.pg.psql("app", "UPDATE courses SET title = 'Python, raced' WHERE id = 7")
            wait_applied(stack, "events.course.updated", since)
        done_at = time.monotonic()  # the update has completed, invalidation included
        rest = [pool.submit(request, i) for i in range(25)]
        gate.release()
        for f in first + rest:
            f.result(timeout=30)

    v1 = db_version(stack, "courses", 7)
    assert v1 == v0 + 1
    assert len(results) == 50
    assert sorted(v for t, v, _ in results if t < done_at) == [v0] * 25  # the race happened
    late = [(v, how) for t, v, how in results if t >= done_at]
    assert len(late) == 25 and all(v == v1 for v, _ in late), late
    # The load of the old row claimed before the invalidation: its fill was
    # refused. (Through the app, the worker's own invalidation of the same
    # keys may come during the next load and refuse its fill too.)
    assert app_stats(client)["stale_fills_refused"] >= start["stale_fills_refused"] + 1
    cached = cache.get(key)
    assert cached is None or cached["version"] == v1, cached
    body, _ = get(client, path)
    assert body["version"] == v1
    if writer == "app":  # let the worker finish with it, before the next test marks its start
        wait_applied(stack, "events.course.updated", since)
        wait_applied(stack, "events.cache.invalidate", since)


def test_redis_stopped_endpoints_answer_from_the_database(stack, client, cache):
    since = stack.app.mark()
    stack.redis.stop()
    try:
        course, how = get(client, "/api/v3/analytics/courses/42")
        assert how == "BYPASS" and course["version"] == db_version(stack, "courses", 42)
        student, how = get(client, "/api/v3/analytics/students/1")
        assert how == "BYPASS" and student["version"] == db_version(stack, "students", 1)
        stats, how = get(client, "/api/v3/system/stats")
        assert how == "BYPASS" and stats["courses"] == 3
        user, how = get(client, "/users/420")
        assert how == "BYPASS" and user["email"] == "dee@example.com"
        r = client.post("/users/420", json={"name": "Dee 2"})  # commits; the worker invalidates later
        assert r.status_code == 200 and r.json()["name"] == "Dee 2"
        assert get(client, "/users/420/profile")[0]["name"] == "Dee 2"

        h = client.get("/health")
        assert h.status_code == 200
        assert h.json()["status"] == "degraded"
        assert h.json()["checks"]["database"]["status"] == "healthy"
        assert h.json()["checks"]["redis"]["status"] == "unhealthy"
        d = client.get("/api/v3/system/health/detailed").json()
        assert d["components"]["cache"]["status"] == "bypassed"

        warnings = [line for line in stack.app.output[since:].splitlines() if "⚠️ Redis unavailable" in line]
        assert len(warnings) == 1, warnings
    finally:
        stack.redis.start(stack.log_dir)

    since = stack.app.mark()
    eventually("caching resumed", lambda: get(client, "/api/v3/analytics/courses/42")[1] == "HIT")
    stack.app.wait_output(r"✅ Redis reachable again", 5, since)


def test_stack_script_runs_the_example_and_stops(stack):
    """The README's first command: stack.py starts everything, the app
    answers, and SIGTERM stops every server it started."""
    import httpx

    port = stackmod.free_port()
    env = {**stackmod._base_env(), "PORT": str(port), "INVALIDATOR_BIN": stack.bin}
    script = stackmod.Proc("stack.py", [sys.executable, str(stackmod.HERE / "stack.py")], env=env, cwd=stackmod.HERE)
    try:
        up = script.wait_output(r"the stack is up[\s\S]*PostgreSQL\s+postgresql://postgres@127\.0\.0\.1:(\d+)/app", 90)
        pg_port = int(up.group(1))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            assert c.get("/api/v3/analytics/courses/42").headers["x-cache"] == "MISS"
            assert c.get("/api/v3/analytics/courses/42").headers["x-cache"] == "HIT"
            assert c.get("/health").json()["status"] == "healthy"
        script.p.send_signal(signal.SIGTERM)
        assert script.p.wait(60) == 0, script.tail()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", pg_port), timeout=2).close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        script.stop(5, signal.SIGKILL)
