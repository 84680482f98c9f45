package warm_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cache"
	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/warm"
	"github.com/redis/go-redis/v9"
)

// courseSource starts a source that answers {"course":42,"version":2} and
// returns it and its host.
func courseSource(t *testing.T) (*httptest.Server, string) {
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"course":42,"version":2}`))
	}))
	t.Cleanup(src.Close)
	host, _, _ := net.SplitHostPort(strings.TrimPrefix(src.URL, "http://"))
	return src, host
}

// TestClusterStampedWarmIsAHitForTheCachePackage: the same on a 3-master
// Redis Cluster, where the stamp covers generations in other slots than
// the key, and the invalidation is the cluster engine's own.
func TestClusterStampedWarmIsAHitForTheCachePackage(t *testing.T) {
	rdb := testserver.ClusterClient(t, testserver.RedisCluster(t, 3))
	ctx := context.Background()
	src, host := courseSource(t)
	c := newCache(t, rdb)
	w, err := warm.New(rdb, warm.Config{Stamp: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.NewCluster(rdb, engine.Config{Generations: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	for i := range 20 { // keys in many slots
		key := "cache:course_analytics:42:" + strconv.Itoa(i)
		req := cachekeys.WarmRequest{Key: key, URL: src.URL + "/c/42", Host: host, TTL: time.Minute}
		if out := w.Warm(ctx, req); out != warm.Stored {
			t.Fatalf("%s: outcome %s, want stored", key, out)
		}
		var got map[string]any
		if found, err := c.Get(ctx, key, &got); err != nil || !found || got["version"] != 2.0 {
			t.Fatalf("%s: cache Get = %v, %v, %v; want the warmed value", key, found, err, got)
		}
	}
	// An exact invalidation through the engine: gone, and a miss.
	if _, err := engine.Invalidate(ctx, eng, engine.Job{Exact: []string{"cache:course_analytics:42:0"}}); err != nil {
		t.Fatal(err)
	}
	if found, err := c.Get(ctx, "cache:course_analytics:42:0", new(map[string]any)); err != nil || found {
		t.Fatalf("after the exact invalidation: found %v, %v", found, err)
	}
	// A pattern invalidation advances the scope's generation before the
	// sweep: set as the engine sets it, readers miss while the keys remain.
	if err := rdb.Set(ctx, guard.Key(cachekeys.PatternScope("cache:course_analytics:42:*")), "a-new-token", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 20; i++ {
		key := "cache:course_analytics:42:" + strconv.Itoa(i)
		if rdb.Exists(ctx, key).Val() != 1 {
			t.Fatalf("%s is gone: the miss would prove nothing", key)
		}
		if found, err := c.Get(ctx, key, new(map[string]any)); err != nil || found {
			t.Fatalf("%s after the scope moved: found %v, %v; want a miss", key, found, err)
		}
	}
}

// TestStampedWarmIsAHitForTheCachePackage: with Stamp, a warmed value is
// read by package cache as a hit, and a later pattern invalidation makes it
// a miss at once; without Stamp the plain body is stored, which the
// protocol reads as a miss.
func TestStampedWarmIsAHitForTheCachePackage(t *testing.T) {
	rdb := testserver.RedisClient(t, testserver.Redis(t))
	ctx := context.Background()
	src, host := courseSource(t)
	c := newCache(t, rdb)
	for _, stamp := range []bool{true, false} {
		w, err := warm.New(rdb, warm.Config{Stamp: stamp}, nil)
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
		if err := rdb.Set(ctx, guard.Key(cachekeys.PatternScope("cache:course_analytics:42:*")), "a-new-token", time.Hour).Err(); err != nil {
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

// newCache is cache.New for tests: an error fails the test; the Cache is
// closed at cleanup.
func newCache(t *testing.T, rdb redis.UniversalClient) *cache.Cache {
	t.Helper()
	c, err := cache.New(rdb, cache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
