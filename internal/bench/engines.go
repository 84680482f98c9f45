package main

import (
	"log"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/redis/go-redis/v9"
)

// sharedEngine is the worker's engine as `invalidator run` builds it: one
// shared walk per node, paced by budget (keys/s, 0 = unlimited). close
// stops the walk.
func sharedEngine(rdb *redis.Client, budget int) (engine.Engine, func(), error) {
	return sharedEngineObserved(rdb, budget, nil)
}

// sharedEngineObserved is sharedEngine with obs told of the walk's
// progress (nil: none).
func sharedEngineObserved(rdb *redis.Client, budget int, obs sweep.Observer) (engine.Engine, func(), error) {
	cfg := engine.Config{Sweep: sweep.Config{Budget: budget}}
	if obs != nil {
		cfg.NodeObserver = func(string) sweep.Observer { return obs }
	}
	e, err := engine.NewRedis(rdb, cfg)
	if err != nil {
		return nil, nil, err
	}
	return e, func() { _ = e.Close() }, nil
}

// perEventEngine sweeps the keyspace once per pattern of each event: what
// the worker did before shared sweeps.
func perEventEngine(rdb *redis.Client) engine.Engine { return perPattern{rdb: rdb} }

// examinedCounter is a sweep.Observer that counts the keys examined and
// logs each finished pass.
type examinedCounter struct{ n atomic.Int64 }

func (c *examinedCounter) PassFinished(p sweep.Pass) {
	log.Printf("  sweep pass %d: %d patterns, %d keys examined, %d removed, %d SCAN calls, %v",
		p.Number, p.Patterns, p.Examined, p.Removed, p.ScanCalls, p.Duration.Round(time.Millisecond))
}
func (c *examinedCounter) KeysExamined(n int)        { c.n.Add(int64(n)) }
func (c *examinedCounter) KeysRemoved(int)           {}
func (c *examinedCounter) ActivePatterns(int)        {}
func (c *examinedCounter) PatternWait(time.Duration) {}
func (c *examinedCounter) Progress(float64)          {}
