package cache

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

// MarkerName is what a Cache writes in guard.ProtocolMarkerKey.
const MarkerName = "go"

// marker keeps guard.ProtocolMarkerKey alive while a Cache reads and
// fills, so that a worker with GENERATIONS=auto turns generations on within
// seconds of the first read: one SET with a TTL at most every
// guard.ProtocolMarkerRefresh, in the operation that finds it due.
type marker struct {
	rdb  redis.UniversalClient
	next atomic.Int64 // unix nanoseconds of the next renewal; 0: now
}

// touch renews the marker when due. A failed SET is not an error of the
// operation (which would fail on its own if Redis is down); the next
// renewal is due a refresh later.
func (m *marker) touch(ctx context.Context) {
	if m == nil {
		return
	}
	now, next := time.Now().UnixNano(), m.next.Load()
	if now < next || !m.next.CompareAndSwap(next, now+int64(guard.ProtocolMarkerRefresh)) {
		return
	}
	_ = m.rdb.Set(ctx, guard.ProtocolMarkerKey, MarkerName, guard.ProtocolMarkerTTL).Err()
}
