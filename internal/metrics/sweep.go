package metrics

import (
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/prometheus/client_golang/prometheus"
)

// sweepMetrics are the metrics of the shared SCAN walk.
type sweepMetrics struct {
	passes   prometheus.Counter
	examined prometheus.Counter
	removed  prometheus.Counter
	active   prometheus.Gauge
	wait     prometheus.Histogram
	progress prometheus.Gauge
}

func newSweepMetrics(reg prometheus.Registerer) sweepMetrics {
	s := sweepMetrics{
		passes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "sweep_passes_total",
			Help: "Full passes of the shared SCAN walk over the keyspace."}),
		examined: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "sweep_keys_examined_total",
			Help: "Keys examined by the shared SCAN walk (the keys of each page; with a server-side MATCH, the COUNT of each call)."}),
		removed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "sweep_keys_removed_total",
			Help: "Keys the shared SCAN walk removed with UNLINK."}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "sweep_active_patterns",
			Help: "Patterns the shared SCAN walk is serving now."}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "sweep_pattern_wait_seconds",
			Help:    "From a pattern joining the shared walk to its completion (every key that existed throughout is gone).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12)}),
		progress: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "sweep_progress_ratio",
			Help: "Fraction of the keyspace the current pass has covered (the SCAN cursor's position; about keys examined this pass / DBSIZE)."}),
	}
	reg.MustRegister(s.passes, s.examined, s.removed, s.active, s.wait, s.progress)
	return s
}

var _ sweep.Observer = (*Metrics)(nil)

// PassFinished implements sweep.Observer.
func (m *Metrics) PassFinished(sweep.Pass) { m.sweep.passes.Inc() }

// KeysExamined implements sweep.Observer.
func (m *Metrics) KeysExamined(n int) { m.sweep.examined.Add(float64(n)) }

// KeysRemoved implements sweep.Observer.
func (m *Metrics) KeysRemoved(n int) { m.sweep.removed.Add(float64(n)) }

// ActivePatterns implements sweep.Observer.
func (m *Metrics) ActivePatterns(n int) { m.sweep.active.Set(float64(n)) }

// PatternWait implements sweep.Observer.
func (m *Metrics) PatternWait(d time.Duration) { m.sweep.wait.Observe(d.Seconds()) }

// Progress implements sweep.Observer.
func (m *Metrics) Progress(f float64) { m.sweep.progress.Set(f) }
