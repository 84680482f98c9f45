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

// gate tracks whether Redis answers, and whether it lets the worker do its
// work. While it is down, fetching stops and handlers wait, so an outage
// burns no delivery attempts. A refused permission (NOPERM: the worker's
// ACL user lacks a command or a key pattern) is handled like an outage: it
// is the worker's configuration that is wrong, not the event. The gate
// then stays closed for a while (1 s, doubling to 30 s) although PING
// answers, opens to let the held events try again, and closes again if they
// are refused again.
type gate struct {
	rdb      redis.UniversalClient
	log      *slog.Logger
	obs      Observer
	interval time.Duration

	mu   sync.Mutex
	up   chan struct{} // closed while Redis is up
	down chan struct{} // signalled when a caller saw Redis fail
	// denied is the permission error of the current episode (nil when
	// none); deniedUntil when the gate may open for a retry; denials how
	// many retries were refused in a row.
	denied      error
	deniedUntil time.Time
	denials     int
}

// Permission pauses.
const (
	minDenyWait = time.Second
	maxDenyWait = 30 * time.Second
)

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

// Deny reports that Redis refused a permission the worker needs: the gate
// closes, and stays closed until the next retry is due.
func (g *gate) Deny(err error) {
	g.mu.Lock()
	if g.denied == nil {
		g.log.Error("❌ Redis refuses a permission the worker needs; pausing consumption until it is granted",
			slog.String("missing", missingPermission(err)), slog.Any("error", err))
	}
	g.denied = err
	select {
	case <-g.up:
		// The first refusal of a round (the gate was open: the first ever,
		// or a retry refused again) starts the next wait; the other
		// handlers refused in the same round find it closed and do not
		// lengthen it.
		g.deniedUntil = time.Now().Add(min(minDenyWait<<min(g.denials, 5), maxDenyWait))
		g.denials++
		g.up = make(chan struct{})
		g.obs.RedisUp(false)
	default:
	}
	g.mu.Unlock()
	g.Fail() // wake the health loop, which keeps it closed until deniedUntil
}

// Granted reports that work went through: a permission episode is over.
func (g *gate) Granted() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.denied != nil {
		g.log.Info("✅ Redis grants the worker's permissions again, consumption resumed")
		g.denied, g.denials = nil, 0
	}
}

// Reason says why the gate is closed ("" while it is open).
func (g *gate) Reason() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.up:
		return ""
	default:
	}
	if g.denied != nil {
		return "Redis refuses a permission: " + missingPermission(g.denied)
	}
	return "Redis unreachable"
}

// missingPermission names what a NOPERM answer says is missing, without the
// rest of the message.
func missingPermission(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "NOPERM"); i >= 0 {
		msg = msg[i:]
	}
	return msg
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
	if up && g.denied != nil && time.Now().Before(g.deniedUntil) {
		return // a permission pause: PING answers, but the work would not
	}
	if up && g.denied != nil {
		select {
		case <-g.up:
		default:
			close(g.up) // a retry: the held events try again
			g.obs.RedisUp(true)
		}
		return
	}
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

// Pings while Redis is down: from downMinWait, doubling to downMaxWait. A
// ping a second costs a down server nothing, and consumption (and
// /health/ready) resumes within a second of Redis answering again.
const (
	downMinWait = 100 * time.Millisecond
	downMaxWait = time.Second
)

// downWait is the wait before the next ping after failures failed ones.
func downWait(failures int) time.Duration {
	return min(downMinWait<<min(max(failures-1, 0), 6), downMaxWait)
}

// run pings Redis (every master of a cluster) every interval while it is
// up and with backoff (downWait) while it is down, until ctx ends.
func (g *gate) run(ctx context.Context) {
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
			t.Reset(g.nextCheck())
			continue
		}
		failures++
		t.Reset(downWait(failures))
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

// nextCheck is when the health loop looks again while Redis answers: at
// the end of a permission pause, or after the interval.
func (g *gate) nextCheck() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.denied != nil {
		if d := time.Until(g.deniedUntil); d > 0 {
			return min(d, g.interval)
		}
	}
	return g.interval
}
