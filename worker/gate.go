package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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

// run pings Redis (every master of a cluster) every interval while it is up and with backoff (100ms to
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
		err := ping(pctx, g.rdb)
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

// errClusterNotOK means a master answered but reports cluster_state other
// than ok: the cluster serves no command until it recovers.
var errClusterNotOK = errors.New("cluster_state is not ok")

// ping checks that Redis answers. On a Redis Cluster every master must
// answer PING and report cluster_state:ok, so one master down pauses
// consumption as a single-node outage does. The masters are those the
// client knows now (ForEachMaster reloads the slot map when it is stale).
func ping(ctx context.Context, rdb redis.UniversalClient) error {
	c, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return rdb.Ping(ctx).Err()
	}
	return c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		info, err := node.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: %w", node.Options().Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: %w", node.Options().Addr, errClusterNotOK)
		}
		return nil
	})
}
