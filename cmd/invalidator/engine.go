package main

import (
	"context"
	"fmt"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/redis/go-redis/v9"
)

// sweepingEngine is an engine with a shared walk to report and stop.
type sweepingEngine interface {
	engine.Engine
	Sweeps() []sweep.Status
	Close() error
	// Preview reports what a job would remove, removing nothing.
	Preview(ctx context.Context, job engine.Job, fn func(key string)) (engine.Result, error)
	// EnableGenerations turns the generation guard on for later jobs.
	EnableGenerations()
}

// newEngine returns the engine that fully serves rdb's topology: the
// single-node engine for one server or a Sentinel-managed master, the
// cluster engine for a Redis Cluster.
func newEngine(rdb redis.UniversalClient, cfg engine.Config) (sweepingEngine, error) {
	switch c := rdb.(type) {
	case *redis.Client:
		return engine.NewRedis(c, cfg)
	case *redis.ClusterClient:
		return engine.NewCluster(c, cfg)
	default:
		return nil, fmt.Errorf("no engine serves a %T", rdb)
	}
}
