package cache

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// pythonDriver runs after the README's block: each argument is one
// command, "get KEY" prints the value as JSON (null on a miss), "fetch KEY
// JSON" fills KEY with JSON through the protocol unless it hits.
//
// "invalidated KEY JSON" is fetch with a load during which the scope of
// KEY (up to its last ":") is advanced, as the worker does for a pattern.
const pythonDriver = `
import sys
def invalidating(key, body):
    r.set(GEN + key[: key.rindex(":") + 1], uuid.uuid4().hex, px=DAY_MS)
    return json.loads(body)
for cmd in sys.argv[1:]:
    op, key, *rest = cmd.split(" ", 2)
    if op == "get":
        print(json.dumps(get(key)))
    elif op == "invalidated":
        print(json.dumps(fetch(key, 60_000, lambda: invalidating(key, rest[0]))))
    else:
        print(json.dumps(fetch(key, 60_000, lambda: json.loads(rest[0]))))
`

// pythonWithRedis returns the first of python3 on PATH and Debian's
// /usr/bin/python3 that imports redis, or "".
func pythonWithRedis() string {
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import redis").Run() == nil {
			return p
		}
	}
	return ""
}

// TestPythonProtocol runs the README's Python read/fill against a real
// Redis, sharing keys with Go: Python reads what Go's Set wrote, Go reads
// what Python's fetch filled, and Python misses once the worker's engine
// has advanced a pattern's scope, before the sweep.
func TestPythonProtocol(t *testing.T) {
	t.Parallel()
	interpreter := pythonWithRedis()
	if interpreter == "" {
		if os.Getenv("CACHE_REQUIRE_PYTHON") != "" { // .ci/run installs it and sets this
			t.Fatal("CACHE_REQUIRE_PYTHON is set, but no python3 imports redis (Debian: apt-get install python3-redis)")
		}
		t.Skip("no python3 that imports redis (Debian: apt-get install python3-redis)")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## For services: the cache package\n")
	_, block, ok := strings.Cut(section, "```python\n")
	if !ok {
		t.Fatal("no python block in the README section")
	}
	block, _, _ = strings.Cut(block, "```")
	// The script sits beside a guard/ directory with the scripts, and runs
	// from another directory without CACHE_LUA_DIR: it must find them.
	dir := t.TempDir()
	script := filepath.Join(dir, "protocol.py")
	if err := os.WriteFile(script, []byte(block+pythonDriver), 0o600); err != nil {
		t.Fatal(err)
	}
	lua, _ := filepath.Abs("../guard")
	if err := os.Symlink(lua, filepath.Join(dir, "guard")); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	for _, mode := range []string{"single", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var rdb redis.UniversalClient
			var env string
			if mode == "cluster" {
				cl := testserver.RedisCluster(t, 3)
				rdb, env = testserver.ClusterClient(t, cl), "REDIS_CLUSTER_ADDRS="+strings.Join(cl.Addrs(), ",")
			} else {
				srv := testserver.Redis(t)
				rdb, env = testserver.RedisClient(t, srv), "REDIS_URL="+srv.URL()
			}
			python := func(cmds ...string) []string {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, interpreter, append([]string{script}, cmds...)...)
				cmd.Env = append(slices.DeleteFunc(os.Environ(), func(v string) bool {
					return strings.HasPrefix(v, "CACHE_LUA_DIR=") || strings.HasPrefix(v, "REDIS_")
				}), env)
				cmd.Dir = elsewhere
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("python3: %v\n%s", err, out)
				}
				return strings.Split(strings.TrimSpace(string(out)), "\n")
			}
			testPythonProtocol(t, rdb, python)
		})
	}
}

// testPythonProtocol shares keys between Go's Cache on rdb and the Python
// block run by python.
func testPythonProtocol(t *testing.T, rdb redis.UniversalClient, python func(cmds ...string) []string) {
	c := mustNew(t, rdb, WithLogger(discard))
	ctx := t.Context()
	if err := c.Set(ctx, "cache:course_analytics:42:weekly", map[string]int{"students": 31}, time.Minute); err != nil {
		t.Fatal(err)
	}
	got := python("get cache:course_analytics:42:weekly", "get cache:course_analytics:42:none",
		`fetch cache:course_analytics:42:daily {"from": "python"}`, `fetch cache:course_analytics:42:daily {"from": "again"}`)
	want := []string{`{"students": 31}`, "null", `{"from": "python"}`, `{"from": "python"}`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("python printed %q, want %q", got, want)
	}
	if got, ttl := rdb.Get(ctx, guard.ProtocolMarkerKey).Val(), rdb.PTTL(ctx, guard.ProtocolMarkerKey).Val(); got != "python" ||
		ttl <= 0 || ttl > guard.ProtocolMarkerTTL {
		t.Errorf("protocol marker %q with TTL %s after the Python reads, want \"python\" within %s", got, ttl, guard.ProtocolMarkerTTL)
	}
	var v map[string]string
	if found, err := c.Get(ctx, "cache:course_analytics:42:daily", &v); !found || err != nil || v["from"] != "python" {
		t.Fatalf("Go read of the Python fill: %v, %v, %v", found, err, v)
	}
	// What the worker does first for cache:course_analytics:42:* (on one
	// server and on a cluster alike: the scope's generation is the same key).
	rdb.Set(ctx, guard.Key("cache:course_analytics:42:"), guard.NewToken(), guard.TTL)
	got = python("get cache:course_analytics:42:weekly", "get cache:course_analytics:42:daily")
	if strings.Join(got, "|") != "null|null" {
		t.Fatalf("python after the scope advanced: %q, want two misses", got)
	}
	for _, k := range []string{"cache:course_analytics:42:weekly", "cache:course_analytics:42:daily"} {
		if rdb.Exists(ctx, k).Val() != 1 {
			t.Fatalf("%s is gone, want it kept (no sweep ran)", k)
		}
	}
	// A fill whose scope moves during the load is not left behind: refused
	// by fill.lua on one server, taken back by the cluster form's re-check.
	got = python(`invalidated cache:course_analytics:7:daily {"v": 1}`, "get cache:course_analytics:7:daily")
	if strings.Join(got, "|") != `{"v": 1}|null` {
		t.Fatalf("python fetch during an invalidation printed %q, want the loaded value, then a miss", got)
	}
	if n := rdb.Exists(ctx, "cache:course_analytics:7:daily").Val(); n != 0 {
		t.Error("the fill that raced an invalidation is stored")
	}
}
