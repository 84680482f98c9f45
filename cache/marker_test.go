package cache

import (
	"context"
	"testing"
	"time"

	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

// A Cache's reads and fills leave the protocol marker with its TTL, so a
// worker with GENERATIONS=auto sees them, and renew it at most once per
// guard.ProtocolMarkerRefresh: a second operation right after the first
// writes nothing more (the marker's TTL is not reset).
func TestProtocolMarker(t *testing.T) {
	forEachTopology(t, func(t *testing.T, rdb redis.UniversalClient) {
		c, _ := newCacheOn(t, rdb)
		ctx := context.Background()
		if n := rdb.Exists(ctx, guard.ProtocolMarkerKey).Val(); n != 0 {
			t.Fatal("a marker before any operation")
		}
		var v map[string]int
		if _, err := c.Get(ctx, "cache:course_analytics:1", &v); err != nil {
			t.Fatal(err)
		}
		if got := rdb.Get(ctx, guard.ProtocolMarkerKey).Val(); got != MarkerName {
			t.Fatalf("marker %q after a Get, want %q", got, MarkerName)
		}
		ttl := rdb.PTTL(ctx, guard.ProtocolMarkerKey).Val()
		if ttl <= 0 || ttl > guard.ProtocolMarkerTTL {
			t.Errorf("marker TTL %s, want in (0, %s]", ttl, guard.ProtocolMarkerTTL)
		}
		// Shorten the TTL: a renewal would set it back to a minute.
		rdb.PExpire(ctx, guard.ProtocolMarkerKey, 30*time.Second)
		if _, err := Fetch(ctx, c, "cache:course_analytics:2", time.Minute, func(context.Context) (int, error) { return 2, nil }); err != nil {
			t.Fatal(err)
		}
		if err := c.Set(ctx, "cache:course_analytics:3", 3, time.Minute); err != nil {
			t.Fatal(err)
		}
		if ttl := rdb.PTTL(ctx, guard.ProtocolMarkerKey).Val(); ttl > 30*time.Second {
			t.Errorf("marker renewed within %s of the last renewal (TTL %s)", guard.ProtocolMarkerRefresh, ttl)
		}
	})
}
