package main

import (
	"context"
	"fmt"
	"github.com/invalidator/invalidator/consistency"
	"log/slog"
	"os"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/internal/console"
	"github.com/invalidator/invalidator/internal/metrics"
	"github.com/invalidator/invalidator/internal/ops"
	"github.com/invalidator/invalidator/warm"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// newConsole wires the operator console to the worker's parts.
func newConsole(cfg *config.Run, rules *cachekeys.Rules, w *worker.Worker, eng sweepingEngine, letters *deadletter.Store,
	warmer *warm.Warmer, reg prometheus.Gatherer, health func(context.Context) ops.Health, log *slog.Logger) (*console.Console, error) {
	text, err := os.ReadFile(cfg.RulesPath)
	if err != nil {
		return nil, fmt.Errorf("console: read the rules file: %w", err)
	}
	d := console.Deps{Health: health, Stats: w.Stats, Consumer: func() jetstream.Consumer { return w.Consumer() },
		Letters: letters, Rules: rules, Engine: eng, Logger: log}
	if chk := w.Consistency(); chk != nil {
		d.Consistency = func() consistency.Report { return chk.Report(time.Now()) }
	}
	if warmer != nil {
		d.Warming = func() console.Warming {
			return console.Warming{Outcomes: warmOutcomes(reg), OpenBreakers: warmer.OpenHosts()}
		}
	}
	c, err := console.New(console.Config{Prefix: cfg.UIPathPrefix, Token: cfg.OpsToken, ReadOnly: cfg.UIReadOnly,
		ScanBudget: cfg.ScanBudget, RulesPath: cfg.RulesPath}, d, text)
	if err != nil {
		return nil, err
	}
	if c.ReadOnly() && !cfg.UIReadOnly {
		log.Warn("⚠️ console read-only: OPS_TOKEN is not set", slog.String("path", cfg.UIPathPrefix+"/ui/"))
	} else {
		log.Info("🔧 console on", slog.String("path", cfg.UIPathPrefix+"/ui/"), slog.Bool("read_only", c.ReadOnly()))
	}
	return c, nil
}

// warmOutcomes reads the warm requests by outcome from the metrics, as
// /metrics shows them.
func warmOutcomes(reg prometheus.Gatherer) map[string]int64 {
	out := map[string]int64{}
	fams, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, f := range fams {
		if f.GetName() != metrics.Namespace+"_warm_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] = int64(m.GetCounter().GetValue())
				}
			}
		}
	}
	return out
}
