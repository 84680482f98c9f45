package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/cdc"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/internal/logging"
	"github.com/invalidator/invalidator/internal/metrics"
	"github.com/invalidator/invalidator/internal/ops"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
)

const cdcSummary = `Follows PostgreSQL's commit log (logical replication, pgoutput) and publishes
one event per changed row of the tables in the rules file's cdc section, at
each commit, to the events stream; a transaction's end is confirmed to
PostgreSQL only after every PubAck. Creates the publication and the slot if
they are missing. A second process on the same slot is a standby: its
/health/ready answers 503 "standby" until it takes over. Stops on
SIGINT/SIGTERM after the publishes in flight are acknowledged (at most 10 s).
CDC_DATABASE_URL and INVALIDATOR_RULES (or their flags) are required.`

func cdcCmd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "cdc", "[flags]", cdcSummary)
	build := config.CDCFlags(fs, e.getenv)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("cdc takes no arguments, got %q", pos[0])
	}
	cfg, err := build()
	if err != nil {
		return usageError{err}
	}
	rules, err := loadRules(cfg.RulesPath)
	if err != nil {
		return err
	}
	if len(rules.CDC()) == 0 {
		return usagef("%s has no cdc section: list the tables to follow under cdc.tables (see testdata/rules-cdc.yaml)", cfg.RulesPath)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	log := logging.New(e.stderr, logging.Options{Format: cfg.LogFormat, Level: cfg.LogLevel, Secrets: cfg.Secrets()})
	log.Info("🔧 configuration loaded", slog.String("rules", cfg.RulesPath), slog.Int("tables", len(rules.CDC())),
		slog.String("slot", cfg.Runner.Slot), slog.String("publication", cfg.Runner.Publication))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	runner, err := newRunner(cfg.Runner, rules, reg, log)
	if err != nil {
		return usageError{err}
	}
	if err := runner.Prepare(ctx); err != nil { // the database's problems, before any other connection
		return runErr(err)
	}
	nc, err := connectNATS(&config.Run{NATSURL: cfg.NATSURL, NATSCreds: cfg.NATSCreds, NATSTLS: cfg.NATSTLS}, log)
	if err != nil {
		return err
	}
	defer closeNATS(nc)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	ensureEventsStream(ctx, js, worker.Config{Stream: cfg.Stream, StreamReplicas: cfg.StreamReplicas}, log)
	var g errgroup.Group
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	if cfg.HTTPAddr != "" {
		srv := ops.New(cfg.HTTPAddr, ops.Deps{NATS: nc, JS: js, CDC: runner.Status, Gatherer: reg, Token: cfg.OpsToken, Logger: log})
		ln, err := srv.Listen()
		if err != nil {
			return err
		}
		g.Go(func() error { return srv.Run(httpCtx, ln) })
	}
	g.Go(func() error {
		defer stopHTTP()
		return runErr(runner.Run(ctx, nc))
	})
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("🔌 closing NATS")
	return nil
}

// newRunner makes a cdc runner for the rules' tables, counted on reg.
func newRunner(c cdc.Config, rules *cachekeys.Rules, reg prometheus.Registerer, log *slog.Logger) (*cdc.Runner, error) {
	var runner *cdc.Runner
	m := metrics.NewCDC(reg, func() cdc.Status { return runner.Status() })
	m.Tables(rules.CDC())
	c.Tables, c.Logger, c.Observer = rules.CDC(), log, m
	runner, err := cdc.New(c)
	return runner, err
}

// runErr makes a setup problem (a missing table, wal_level, replica
// identity) a usage error: exit 2 with its one line.
func runErr(err error) error {
	if errors.Is(err, cdc.ErrSetup) {
		return usageError{err}
	}
	return err
}

// ensureEventsStream creates the events stream as the worker would, when
// it is missing, so that cdc can publish before any worker has started.
// A failure is only logged: publishes are retried until the stream exists.
func ensureEventsStream(ctx context.Context, js jetstream.JetStream, wc worker.Config, log *slog.Logger) {
	sc := wc.StreamConfig()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, sc.Name); err == nil {
		return
	}
	if _, err := js.CreateStream(ctx, sc); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		log.Warn("⚠️ could not create the events stream; publishes wait for it", slog.String("stream", sc.Name), slog.Any("error", err))
		return
	}
	log.Info("🔧 created stream", slog.String("stream", sc.Name), slog.Any("subjects", sc.Subjects))
}
