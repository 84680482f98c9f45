package warm_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cache"
	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/warm"
)

// The warmer's copy of the stamped fill script is package cache's.
func TestStampedFillScriptIsTheCacheOne(t *testing.T) {
	if warm.StampedFillScript != cache.FillScript {
		t.Fatal("warm.StampedFillScript differs from cache/fill.lua: copy the file again")
	}
}

// TestStampedWarmIsAHitForTheCachePackage: with Stamp, a warmed value is
// read by package cache as a hit, and a later pattern invalidation makes it
// a miss at once; without Stamp the plain body is stored, which the
// protocol reads as a miss.
func TestStampedWarmIsAHitForTheCachePackage(t *testing.T) {
	rdb := testserver.RedisClient(t, testserver.Redis(t))
	ctx := context.Background()
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"course":42,"version":2}`))
	}))
	t.Cleanup(src.Close)
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(src.URL, "http://"))
	c := cache.New(rdb)
	t.Cleanup(func() { _ = c.Close() })
	for _, stamp := range []bool{true, false} {
		w, err := warm.New(rdb, warm.Config{Stamp: stamp}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		key := "cache:course_analytics:42:summary"
		req := cachekeys.WarmRequest{Key: key, URL: src.URL + "/c/42", Host: host, TTL: time.Minute}
		if out := w.Warm(ctx, req); out != warm.Stored {
			t.Fatalf("stamp %v: outcome %s, want stored", stamp, out)
		}
		var got map[string]any
		found, err := c.Get(ctx, key, &got)
		if err != nil {
			t.Fatal(err)
		}
		if found != stamp || (stamp && got["version"] != 2.0) {
			t.Errorf("stamp %v: cache Get found %v (%v), want found = %v", stamp, found, got, stamp)
		}
		if !stamp {
			if raw := rdb.Get(ctx, key).Val(); raw != `{"course":42,"version":2}` {
				t.Errorf("unstamped value %q, want the body as sent", raw)
			}
			continue
		}
		// The worker's pattern invalidation first gives the scope a new
		// token (engine/generation.go), then sweeps: readers miss at once,
		// while the key is still there.
		if err := rdb.Set(ctx, engine.GenerationKey(cachekeys.PatternScope("cache:course_analytics:42:*")), "a-new-token", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if rdb.Exists(ctx, key).Val() != 1 {
			t.Fatal("the key is gone: the miss below would prove nothing")
		}
		if found, err := c.Get(ctx, key, &got); err != nil || found {
			t.Errorf("after the pattern invalidation: found %v, %v; want a miss", found, err)
		}
	}
}
