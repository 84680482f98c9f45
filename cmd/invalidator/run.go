package main

import (
	"context"
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/cdc"
	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/internal/metrics"
	"github.com/invalidator/invalidator/internal/ops"
	"github.com/invalidator/invalidator/warm"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

const runSummary = `Runs the worker: consumes events from the JetStream durable consumer, removes
the Redis keys the rules name, then acks. Stops on SIGINT/SIGTERM after the
events in flight are done (at most SHUTDOWN_TIMEOUT). Every flag has an
environment variable of the same meaning; a flag wins over the variable.
INVALIDATOR_RULES (or --rules) must name the rules file.`

func runCmd(ctx context.Context, e env, args []string) error {
	cfg, rules, err := loadWorker(e, "run", runSummary, args)
	if err != nil {
		return err
	}
	return serve(ctx, e, cfg, rules, nil)
}

// devRunner is dev's cdc runner: one when CDC_DATABASE_URL is set and the
// rules file has a cdc section, else nil (with a ⚠️ line when only the
// database is configured).
func devRunner(cfg *config.Run, rules *cachekeys.Rules, reg prometheus.Registerer, log *slog.Logger) (*cdc.Runner, error) {
	if cfg.CDC.DatabaseURL == "" {
		return nil, nil
	}
	if len(rules.CDC()) == 0 {
		log.Warn("⚠️ CDC_DATABASE_URL is set, but the rules file has no cdc section: cdc does not run", slog.String("rules", cfg.RulesPath))
		return nil, nil
	}
	c := cfg.CDC
	c.Replicas = cfg.Worker.StreamReplicas
	log.Info("🔧 cdc on", slog.Int("tables", len(rules.CDC())), slog.String("slot", c.WithDefaults().Slot))
	return newRunner(c, rules, reg, log)
}

func loadRules(path string) (*cachekeys.Rules, error) {
	r, err := cachekeys.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return r, nil
}

// serve runs the worker until SIGINT or SIGTERM, then shuts down in order:
// stop fetching, finish events in flight, drain NATS, close Redis. A second
// signal ends the process at once. ready, if not nil, is called once the
// stream and consumer exist.
func serve(ctx context.Context, e env, cfg *config.Run, rules *cachekeys.Rules, ready func()) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // after the first signal, the default action again
	log := newLogger(e, cfg)
	log.Info("🔧 configuration loaded", slog.String("rules", cfg.RulesPath), slog.Int("rule_count", len(rules.List())),
		slog.Int("concurrency", cfg.Worker.WithDefaults().Concurrency), slog.Int("scan_count", cfg.ScanCount), slog.Int("scan_budget", cfg.ScanBudget))
	rdb, err := connectRedis(ctx, cfg, log)
	if err != nil {
		return err
	}
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
	reg := prometheus.NewRegistry()
	var w *worker.Worker
	wcfg := cfg.Worker.WithDefaults()
	wcfg.Logger = log
	letters := deadletter.NewStore(js, wcfg.DeadLetterStream, wcfg.DeadLetterPrefix)
	m := metrics.New(reg, metrics.Sources{
		Stats:         func() worker.Stats { return w.Stats() },
		NATSConnected: nc.IsConnected,
		Consumer:      func() jetstream.Consumer { return w.Consumer() },
		DeadLetters:   letters.Count,
	})
	var scheduled []string
	for _, sc := range rules.Schedules() {
		scheduled = append(scheduled, sc.Key.String())
	}
	m.Schedules(scheduled...)
	var timescales []string
	for _, d := range wcfg.Consistency.Delays {
		timescales = append(timescales, consistency.Timescale(d))
	}
	wcfg.Consistency.Observer = m.Consistency(timescales)
	wcfg.Consistency.Logger = log
	gens, err := cfg.UseGenerations(rules.Warms())
	if err != nil {
		return usageError{err}
	}
	eng, err := newEngine(rdb, engine.Config{ScanCount: cfg.ScanCount, Logger: log, Generations: gens,
		Sweep: sweep.Config{Budget: cfg.ScanBudget}, NodeObserver: m.Node})
	if err != nil {
		return usageError{err}
	}
	defer eng.Close()
	gstate := newGenerations(cfg.Generations, rules.Warms())
	deps := worker.Deps{JetStream: js, Redis: rdb, Rules: rules, Engine: eng, Observer: m}
	if rules.Warms() {
		wc := cfg.Warm
		wc.Env = cfg.WarmEnv
		wc.Stamp = cfg.Generations == "on" // services read through package cache
		wc.Logger = log
		if deps.Warmer, err = warm.New(rdb, wc, m); err != nil {
			return usageError{err}
		}
		deps.Scheduler = warm.NewScheduler(deps.Warmer, rules.Schedules())
		log.Info("🔧 cache warming on", slog.Int("schedules", len(rules.Schedules())))
	}
	w, err = worker.New(wcfg, deps)
	if err != nil {
		return usageError{err}
	}
	runner, err := devRunner(cfg, rules, reg, log)
	if err != nil {
		return usageError{err}
	}
	var cdcStatus func() cdc.Status
	if runner != nil {
		cdcStatus = runner.Status
	}
	var g errgroup.Group
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	if cfg.HTTPAddr != "" {
		var srv *ops.Server
		ui, err := newConsole(cfg, rules, w, eng, letters, deps.Warmer, reg, func(ctx context.Context) ops.Health { return srv.Health(ctx) }, log)
		if err != nil {
			return err
		}
		srv = ops.New(cfg.HTTPAddr, ops.Deps{Redis: rdb, NATS: nc, JS: js, Worker: w, Gatherer: reg,
			Sweeps: eng.Sweeps, DeadLetters: letters, Generations: gstate.state, CDC: cdcStatus, Token: cfg.OpsToken, ReadOnly: cfg.UIReadOnly,
			UI: ui.Handler(), UIPrefix: cfg.UIPathPrefix, Logger: log})
		ln, err := srv.Listen()
		if err != nil {
			return err
		}
		g.Go(func() error { return srv.Run(httpCtx, ln) })
		g.Go(func() error { return ui.Run(httpCtx) })
	}
	if runner != nil {
		g.Go(func() error { return runErr(runner.Run(ctx, nc)) })
	}
	runDone := make(chan struct{})
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if cfg.Generations == "auto" {
		g.Go(func() error { return gstate.watch(watchCtx, rdb, eng, log, markerPoll) })
	}
	g.Go(func() error {
		defer close(runDone)
		defer stopHTTP() // the HTTP server stays up while events in flight finish
		defer stopWatch()
		return w.Run(ctx)
	})
	if ready != nil {
		g.Go(func() error {
			select {
			case <-w.Started():
				ready()
			case <-runDone: // Run failed or was stopped before it started
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("🔌 closing NATS and Redis")
	return nil
}
