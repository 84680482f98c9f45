package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// gate tracks whether Redis answers. While it is down, fetching stops and
// handlers wait, so an outage burns no delivery attempts.
type gate struct {
	rdb      redis.UniversalClient
	log      *slog.Logger
	obs      Observer
	interval time.Duration

	mu   sync.Mutex
	up   chan struct{} // closed while Redis is up
	down chan struct{} // signalled when a caller saw Redis fail
}

func newGate(rdb redis.UniversalClient, log *slog.Logger, obs Observer, interval time.Duration) *gate {
	up := make(chan struct{})
	close(up)
	return &gate{rdb: rdb, log: log, obs: obs, interval: interval, up: up, down: make(chan struct{}, 1)}
}

// Wait returns when Redis is up, or with ctx's error.
func (g *gate) Wait(ctx context.Context) error {
	g.mu.Lock()
	up := g.up
	g.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Fail reports that a Redis call failed with a connection-class error.
func (g *gate) Fail() {
	select {
	case g.down <- struct{}{}:
	default:
	}
}

func (g *gate) isUp() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.up:
		return true
	default:
		return false
	}
}

func (g *gate) setUp(up bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.up:
		if up {
			return
		}
		g.up = make(chan struct{})
		g.log.Warn("⚠️ Redis unreachable, pausing consumption", slog.Any("error", err))
	default:
		if !up {
			return
		}
		close(g.up)
		g.log.Info("✅ Redis reachable again, resuming consumption")
	}
	g.obs.RedisUp(up)
}

// run pings Redis every interval while it is up and with backoff (100ms to
// 5s) while it is down, until ctx ends.
func (g *gate) run(ctx context.Context) {
	const minWait, maxWait = 100 * time.Millisecond, 5 * time.Second
	t := time.NewTimer(0)
	defer t.Stop()
	for failures := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.down:
		}
		pctx, cancel := context.WithTimeout(ctx, max(g.interval, time.Second))
		err := g.rdb.Ping(pctx).Err()
		cancel()
		if ctx.Err() != nil {
			return
		}
		g.setUp(err == nil, err)
		if err == nil {
			failures = 0
			t.Reset(g.interval)
			continue
		}
		failures++
		t.Reset(min(minWait<<min(failures-1, 6), maxWait))
	}
}
