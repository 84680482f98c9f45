package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

// markerPoll is how often GENERATIONS=auto looks for a protocol reader's
// marker (guard.ProtocolMarkerKey).
const markerPoll = 2 * time.Second

// generations says whether the engine advances the generation guard, and
// why, for /api/v3/system/health/detailed; with GENERATIONS=auto and no
// warm rules it watches for the marker of a reader of the protocol and
// turns generations on when it appears.
type generations struct {
	mu  sync.Mutex
	on  bool
	why string
}

// newGenerations is the state at start: mode is GENERATIONS (auto, on,
// off), already checked against the rules.
func newGenerations(mode string, rulesWarm bool) *generations {
	switch {
	case mode == "on":
		return &generations{on: true, why: "GENERATIONS=on"}
	case mode == "off":
		return &generations{why: "GENERATIONS=off"}
	case rulesWarm:
		return &generations{on: true, why: "GENERATIONS=auto: the rules warm keys"}
	default:
		return &generations{why: fmt.Sprintf("GENERATIONS=auto: no reader of the read/fill protocol seen (no %s key)", guard.ProtocolMarkerKey)}
	}
}

// state reports whether generations are on, and why.
func (g *generations) state() (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.on, g.why
}

// watch looks for guard.ProtocolMarkerKey every poll until it appears or
// ctx ends. When it appears, it turns generations on in eng and logs one
// line naming the client. It returns nil, also when ctx ends.
func (g *generations) watch(ctx context.Context, rdb redis.UniversalClient, eng interface{ EnableGenerations() },
	log *slog.Logger, poll time.Duration) error {
	if on, _ := g.state(); on {
		return nil
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, poll)
		client, err := rdb.Get(qctx, guard.ProtocolMarkerKey).Result()
		cancel()
		if err == nil {
			eng.EnableGenerations()
			g.mu.Lock()
			g.on = true
			g.why = fmt.Sprintf("GENERATIONS=auto: a reader of the read/fill protocol (%q) set %s at %s",
				client, guard.ProtocolMarkerKey, time.Now().UTC().Format(time.RFC3339))
			g.mu.Unlock()
			log.Info("🔧 generations on: a service reads through the read/fill protocol, so pattern invalidations reach it at once",
				slog.String("client", client), slog.String("marker", guard.ProtocolMarkerKey))
			return nil
		}
		if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			log.Debug("🔍 protocol marker not read", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
