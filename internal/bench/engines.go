package main

import (
	"context"

	"github.com/invalidator/invalidator/engine"
	"github.com/redis/go-redis/v9"
)

// sharedEngine is the worker's engine: shared sweeps, paced by budget
// (keys/s, 0 = unlimited). close releases it.
func sharedEngine(rdb *redis.Client, budget int) (engine.Engine, func(), error) {
	_ = budget
	e, err := engine.NewRedis(rdb, engine.Config{}) // TODO(lead): shared sweeps once wired
	return e, func() {}, err
}

// perEventEngine sweeps the keyspace once per pattern of each event: what
// the worker did before shared sweeps.
func perEventEngine(rdb *redis.Client) engine.Engine {
	e, err := engine.NewRedis(rdb, engine.Config{})
	if err != nil {
		panic(err)
	}
	return e
}

// sweepOnce walks the whole keyspace once for pattern.
func sweepOnce(ctx context.Context, rdb *redis.Client, budget int, pattern string) error {
	_ = budget
	_, err := engine.Invalidate(ctx, perEventEngine(rdb), engine.Job{Patterns: []string{pattern}})
	return err
}
