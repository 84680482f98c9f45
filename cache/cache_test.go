package cache

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

type analytics struct {
	Course   string  `json:"course"`
	Students int     `json:"students"`
	Score    float64 `json:"score"`
}

func TestGetSetDeleteExists(t *testing.T) {
	t.Parallel()
	forEachTopology(t, testGetSetDeleteExists)
}

func testGetSetDeleteExists(t *testing.T, rdb redis.UniversalClient) {
	c, logs := newCacheOn(t, rdb)
	ctx := t.Context()
	want := analytics{Course: "42", Students: 31, Score: 0.8}
	if err := c.Set(ctx, "cache:course_analytics:42", want, time.Minute); err != nil {
		t.Fatal(err)
	}
	var got analytics
	if found, err := c.Get(ctx, "cache:course_analytics:42", &got); err != nil || !found || got != want {
		t.Fatalf("Get = %v, %v, %+v; want true, nil, %+v", found, err, got, want)
	}
	if found, err := c.Get(ctx, "cache:course_analytics:43", &got); err != nil || found {
		t.Fatalf("Get of a missing key = %v, %v", found, err)
	}
	if n, err := c.Exists(ctx, "cache:course_analytics:42", "cache:course_analytics:43", "cache:course_analytics:42"); err != nil || n != 2 {
		t.Fatalf("Exists = %d, %v; want 2", n, err)
	}
	if ttl := rdb.PTTL(ctx, "cache:course_analytics:42").Val(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("PTTL = %s, want within a minute", ttl)
	}
	if n, err := c.Delete(ctx, "cache:course_analytics:42", "cache:course_analytics:43"); err != nil || n != 1 {
		t.Fatalf("Delete = %d, %v; want 1", n, err)
	}
	if n, err := c.Exists(ctx, "cache:course_analytics:42"); err != nil || n != 0 {
		t.Fatalf("Exists after Delete = %d, %v; want 0", n, err)
	}
	for _, s := range []string{"🔍 cache hit", "❌ cache miss", "💾 cache stored", "🗑️ cache deleted"} {
		if logs.count(s) == 0 {
			t.Errorf("no %q line in the log", s)
		}
	}
	if err := c.Set(ctx, "k:x", 1, 0); !errors.Is(err, ErrInvalidTTL) {
		t.Errorf("Set with TTL 0 = %v, want ErrInvalidTTL", err)
	}
}

// A value whose stamp does not match reads as a miss: a raw value written
// outside the protocol, and one whose scope generation moved.
func TestGetStamp(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, rdb redis.UniversalClient) {
		c, _ := newCacheOn(t, rdb)
		testGetStamp(t, rdb, c)
	})
}

func testGetStamp(t *testing.T, rdb redis.UniversalClient, c *Cache) {
	ctx := t.Context()
	const key = "cache:course_analytics:7:a"
	// get asserts what Get finds, and that it found it without an error.
	get := func(what string, want bool) {
		t.Helper()
		var v analytics
		if found, err := c.Get(ctx, key, &v); err != nil || found != want {
			t.Fatalf("%s: Get = %v, %v; want %v, nil", what, found, err, want)
		}
	}
	// set stores the value through the protocol and checks it reads back.
	set := func() {
		t.Helper()
		if err := c.Set(ctx, key, analytics{Course: "7"}, time.Minute); err != nil {
			t.Fatal(err)
		}
		get("just stored", true)
	}
	if err := rdb.Set(ctx, "cache:raw:1", `{"course":"1"}`, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	var v analytics
	if found, err := c.Get(ctx, "cache:raw:1", &v); err != nil || found {
		t.Fatalf("a value without a stamp: Get = %v, %v; want a miss", found, err)
	}
	set()
	if err := rdb.Set(ctx, guard.Key("cache:course_analytics:"), "another", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	get("a value older than its scope's generation", false)
	set()
	if n, err := rdb.Unlink(ctx, ownGeneration(rdb, key)).Result(); err != nil || n != 1 {
		t.Fatalf("UNLINK of the own generation = %d, %v; want 1", n, err)
	}
	get("a value whose own generation was removed", false)
}

func TestClear(t *testing.T) {
	t.Parallel()
	rules, err := cachekeys.Load("../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	forEachTopology(t, func(t *testing.T, rdb redis.UniversalClient) {
		c, _ := newCacheOn(t, rdb, WithRules(rules), WithPrefix("cache:"))
		testClear(t, c, rules)
	})
}

func testClear(t *testing.T, c *Cache, rules *cachekeys.Rules) {
	ctx := t.Context()
	for _, k := range []string{"course_analytics:42:a", "course_analytics:42:b", "course_analytics:420:a"} {
		if err := c.Set(ctx, k, 1, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := c.Clear(ctx, "course_analytics:42:*"); err != nil || n != 2 {
		t.Fatalf("Clear = %d, %v; want 2", n, err)
	}
	if n, err := c.Exists(ctx, "course_analytics:42:a", "course_analytics:420:a"); err != nil || n != 1 {
		t.Fatalf("Exists after Clear = %d, %v; want 1 (course 420 stays)", n, err)
	}
	for _, p := range []string{"course{id}:*", "x y:*", "[a:*"} {
		if _, err := c.Clear(ctx, p); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Clear(%q) = %v, want ErrInvalidKey", p, err)
		}
	}
	_, d, _ := newTestCache(t, WithRules(rules))
	for _, p := range []string{"session:*", "*"} {
		if _, err := d.Clear(ctx, p); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Clear(%q) without a prefix = %v, want ErrInvalidKey", p, err)
		}
	}
}

func TestUnsupportedTopology(t *testing.T) {
	t.Parallel()
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}, HeartbeatFrequency: time.Hour})
	defer ring.Close()
	if c, err := New(ring, WithLogger(slog.New(slog.DiscardHandler))); !errors.Is(err, ErrUnsupportedTopology) || c != nil {
		t.Errorf("New(ring) = %v, %v; want ErrUnsupportedTopology", c, err)
	}
}

// Options that take input check it; New returns the first refusal.
func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled: New does not touch Redis
	defer rdb.Close()
	for _, tt := range []struct {
		name    string
		given   Option
		wantErr bool
	}{
		{"a plain prefix", WithPrefix("svc:"), false},
		{"a glob in the prefix", WithPrefix("a*"), true},
		{"a class in the prefix", WithPrefix("a[bc]:"), true},
		{"a space in the prefix", WithPrefix("a b:"), true},
		{"nil rules", WithRules(nil), true},
		{"nil registerer", WithRegisterer(nil), true},
		{"nil logger discards", WithLogger(nil), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(rdb, tt.given)
			if tt.wantErr != errors.Is(err, ErrInvalidOption) || (err == nil) == (c == nil) {
				t.Fatalf("New = %v, %v; want an error wrapping ErrInvalidOption: %v", c, err, tt.wantErr)
			}
			if c != nil {
				_ = c.Close()
			}
		})
	}
}
