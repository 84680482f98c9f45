package main

import (
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/metrics"
	"github.com/invalidator/invalidator/warm"
	"github.com/prometheus/client_golang/prometheus"
)

// The console's warming counts are those /metrics shows.
func TestWarmOutcomesFromTheMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Sources{})
	for _, o := range []warm.Outcome{warm.Stored, warm.Stored, warm.Shed, warm.Failed, warm.Stored} {
		m.WarmDone(o, time.Millisecond)
	}
	got := warmOutcomes(reg)
	if got["stored"] != 3 || got["shed"] != 1 || got["failed"] != 1 || got["triggered"] != 0 {
		t.Errorf("outcomes %v, want 3 stored, 1 shed, 1 failed", got)
	}
}
