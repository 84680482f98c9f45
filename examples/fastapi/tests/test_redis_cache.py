"""redis_cache on its own, against the stack's real Redis."""

import pytest

import redis_cache


def test_guard_keys_and_scope():
    assert redis_cache.guard_keys("cache:course_analytics:42") == [
        "invalidator:gen:cache:course_analytics:42",
        "invalidator:gen:cache:",
        "invalidator:gen:cache:course_analytics:",
    ]
    assert redis_cache.pattern_scope("user:42:*") == "user:42:"
    assert redis_cache.pattern_scope("cache:sys*") == "cache:"
    assert redis_cache.pattern_scope("user:42") == "user:42"


def test_scripts_are_the_repository_files(cache):
    lua = redis_cache.lua_dir()
    repo = redis_cache.pathlib.Path(__file__).resolve().parents[3]
    assert lua in (repo / "guard", repo / "cache")
    for script, name in ((cache._read, "read"), (cache._claim, "claim"), (cache._fill, "fill"), (cache._set, "set")):
        assert script.script == (lua / f"{name}.lua").read_text()


def test_pattern_invalidation_is_a_miss_at_once(cache):
    keys = [f"user:9:item:{i}" for i in range(300)]
    for k in keys:
        assert cache.set(k, {"k": k}, ttl=60)
    assert cache.set("user:90:item:0", {"k": "other"}, ttl=60)
    assert cache.exists(*keys) == len(keys)

    # What the worker does first for the pattern user:9:*, before any SCAN.
    cache.redis.set("invalidator:gen:user:9:", redis_cache.new_token(), px=redis_cache.GENERATION_TTL_MS)

    assert cache.redis.exists(*keys) == len(keys)  # every key still in Redis ...
    assert cache.exists(*keys) == 0  # ... and none readable
    assert cache.get(keys[0]) is None
    assert cache.get("user:90:item:0") == {"k": "other"}


def test_fetch_refuses_a_fill_claimed_before_an_invalidation(cache):
    key = "cache:course_analytics:999"
    cache.delete(key)
    before = cache.stats.snapshot()["stale_fills_refused"]

    def load():
        cache.clear_pattern("cache:course_analytics:999*")  # an update commits during the load
        return {"version": 1}

    value, how = cache.fetch(key, 60, load)
    assert (value, how) == ({"version": 1}, "MISS")
    assert cache.stats.snapshot()["stale_fills_refused"] == before + 1
    assert cache.redis.get(key) is None
    value, how = cache.fetch(key, 60, lambda: {"version": 2})
    assert (value, how) == ({"version": 2}, "MISS")
    assert cache.fetch(key, 60, lambda: pytest.fail("loaded again")) == ({"version": 2}, "HIT")


def test_delete_and_clear_pattern(cache):
    cache.set("user:77", {"a": 1}, ttl=60)
    cache.set("user:77:profile", {"a": 2}, ttl=60)
    cache.set("user:770", {"a": 3}, ttl=60)
    assert cache.delete("user:77") == 1
    assert cache.redis.exists("user:77", "invalidator:gen:user:77") == 0
    assert cache.clear_pattern("user:77:*") == 1
    assert cache.exists("user:77", "user:77:profile", "user:770") == 1
    for bad in ("*", "user*", ":*"):
        with pytest.raises(ValueError):
            cache.clear_pattern(bad)
    with pytest.raises(ValueError):
        cache.set("user:1", {}, ttl=0)


def test_invalidate_moves_the_generations_in_one_round_trip(cache):
    for k in ("user:88", "user:88:profile", "user:88:courses", "user:880"):
        cache.set(k, {"k": k}, ttl=60)
    assert cache.invalidate(["user:88"], ["user:88:*"])
    assert cache.redis.exists("user:88") == 0
    assert cache.redis.exists("user:88:profile", "user:88:courses") == 2  # left to the worker's sweep ...
    assert cache.exists("user:88", "user:88:profile", "user:88:courses") == 0  # ... unreadable already
    assert cache.get("user:880") == {"k": "user:880"}
    with pytest.raises(ValueError):
        cache.invalidate([], ["*"])
