package main

import (
	"context"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/redis/go-redis/v9"
)

// sharedEngine is the worker's engine as `invalidator run` builds it: one
// shared walk per node, paced by budget (keys/s, 0 = unlimited). close
// stops the walk.
func sharedEngine(rdb *redis.Client, budget int) (engine.Engine, func(), error) {
	e, err := engine.NewRedis(rdb, engine.Config{Sweep: sweep.Config{Budget: budget}})
	if err != nil {
		return nil, nil, err
	}
	return e, func() { _ = e.Close() }, nil
}

// perEventEngine sweeps the keyspace once per pattern of each event: what
// the worker did before shared sweeps.
func perEventEngine(rdb *redis.Client) engine.Engine {
	e, err := engine.NewRedis(rdb, engine.Config{PerPattern: true})
	if err != nil {
		panic(err)
	}
	return e
}

// sweepOnce walks the whole keyspace once for pattern with the shared
// walk, paced by budget.
func sweepOnce(ctx context.Context, rdb *redis.Client, budget int, pattern string) error {
	e, closeEngine, err := sharedEngine(rdb, budget)
	if err != nil {
		return err
	}
	defer closeEngine()
	_, err = engine.Invalidate(ctx, e, engine.Job{Patterns: []string{pattern}})
	return err
}
