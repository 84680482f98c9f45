package main

import (
	"context"

	"github.com/invalidator/invalidator/worker"
	"github.com/redis/go-redis/v9"
)

// sharedEngine is the worker's engine: shared sweeps, paced by budget
// (keys/s, 0 = unlimited). close releases it.
func sharedEngine(rdb *redis.Client, budget int) (worker.Engine, func(), error) {
	_ = budget
	return worker.NewRedisEngine(rdb, worker.EngineConfig{}), func() {}, nil // TODO(lead): shared sweeps once wired
}

// perEventEngine sweeps the keyspace once per pattern of each event: what
// the worker did before shared sweeps.
func perEventEngine(rdb *redis.Client) worker.Engine {
	return worker.NewRedisEngine(rdb, worker.EngineConfig{})
}

// sweepOnce walks the whole keyspace once for pattern.
func sweepOnce(ctx context.Context, rdb *redis.Client, budget int, pattern string) error {
	_ = budget
	_, err := worker.Invalidate(ctx, worker.NewRedisEngine(rdb, worker.EngineConfig{}), worker.Job{Patterns: []string{pattern}})
	return err
}
