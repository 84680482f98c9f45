package main

import (
	"context"
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
)

const runSummary = `Runs the worker: consumes events from the JetStream durable consumer, removes
the Redis keys the rules name, then acks. Stops on SIGINT/SIGTERM after the
events in flight are done (at most SHUTDOWN_TIMEOUT). Every flag has an
environment variable of the same meaning; a flag wins over the variable.`

func runCmd(ctx context.Context, e env, args []string) error {
	cfg, err := loadConfig(e, "run", runSummary, args, nil)
	if err != nil {
		return err
	}
	rules, err := loadRules(cfg.RulesPath)
	if err != nil {
		return err
	}
	return serve(ctx, e, cfg, rules)
}

func loadRules(path string) (*cachekeys.Rules, error) {
	r, err := cachekeys.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return r, nil
}

// serve runs the worker until SIGINT or SIGTERM, then shuts down in order:
// stop fetching, finish events in flight, drain NATS, close Redis.
func serve(ctx context.Context, e env, cfg *config.Run, rules *cachekeys.Rules) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := newLogger(e, cfg)
	log.Info("🔧 configuration loaded", slog.String("rules", cfg.RulesPath), slog.Int("rule_count", len(rules.List())),
		slog.Int("concurrency", cfg.Worker.WithDefaults().Concurrency), slog.Int("scan_count", cfg.ScanCount))
	rdb := connectRedis(ctx, cfg, log)
	defer rdb.Close()
	nc, err := connectNATS(cfg, log)
	if err != nil {
		return err
	}
	defer closeNATS(nc)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	engine := worker.NewRedisEngine(rdb, worker.EngineConfig{ScanCount: cfg.ScanCount, Logger: log})
	w, err := worker.New(cfg.Worker, worker.Deps{JetStream: js, Redis: rdb, Rules: rules, Engine: engine, Logger: log})
	if err != nil {
		return usageError{err}
	}
	if err := w.Run(ctx); err != nil {
		return err
	}
	log.Info("🔌 closing NATS and Redis")
	return nil
}
