package metrics

import (
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/prometheus/client_golang/prometheus"
)

// sweepMetrics are the metrics of the shared SCAN walk, by Redis node
// (the address of the server, or of each master on a cluster: a set the
// topology bounds).
type sweepMetrics struct {
	passes   *prometheus.CounterVec
	examined *prometheus.CounterVec
	removed  *prometheus.CounterVec
	active   *prometheus.GaugeVec
	wait     *prometheus.HistogramVec
	progress *prometheus.GaugeVec
}

func newSweepMetrics(reg prometheus.Registerer) sweepMetrics {
	node := []string{"node"}
	s := sweepMetrics{
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "sweep_passes_total",
			Help: "Full passes of the shared SCAN walk over the keyspace, by Redis node."}, node),
		examined: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "sweep_keys_examined_total",
			Help: "Keys examined by the shared SCAN walk (the keys of each page; with a server-side MATCH, the COUNT of each call), by Redis node."}, node),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "sweep_keys_removed_total",
			Help: "Keys the shared SCAN walk removed with UNLINK, by Redis node."}, node),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "sweep_active_patterns",
			Help: "Patterns the shared SCAN walk of a Redis node is serving now."}, node),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "sweep_pattern_wait_seconds",
			Help:    "From a pattern joining a node's shared walk to its completion there (every key that existed throughout is gone).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12)}, node),
		progress: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "sweep_progress_ratio",
			Help: "Fraction of the keyspace of a Redis node the current pass has covered (the SCAN cursor's position; about keys examined this pass / DBSIZE)."}, node),
	}
	reg.MustRegister(s.passes, s.examined, s.removed, s.active, s.wait, s.progress)
	return s
}

// Node returns the sweep.Observer of one Redis node's walk: its series
// carry node="<addr>". Pass it as engine.Config.NodeObserver.
func (m *Metrics) Node(addr string) sweep.Observer {
	n := nodeSweep{
		passes: m.sweep.passes.WithLabelValues(addr), examined: m.sweep.examined.WithLabelValues(addr),
		removed: m.sweep.removed.WithLabelValues(addr), active: m.sweep.active.WithLabelValues(addr),
		wait: m.sweep.wait.WithLabelValues(addr), progress: m.sweep.progress.WithLabelValues(addr),
	}
	n.active.Set(0) // export the node's series from the start
	return n
}

// nodeSweep is the Observer of one node's walk.
type nodeSweep struct {
	passes, examined, removed prometheus.Counter
	active, progress          prometheus.Gauge
	wait                      prometheus.Observer
}

func (n nodeSweep) PassFinished(sweep.Pass)     { n.passes.Inc() }
func (n nodeSweep) KeysExamined(k int)          { n.examined.Add(float64(k)) }
func (n nodeSweep) KeysRemoved(k int)           { n.removed.Add(float64(k)) }
func (n nodeSweep) ActivePatterns(k int)        { n.active.Set(float64(k)) }
func (n nodeSweep) PatternWait(d time.Duration) { n.wait.Observe(d.Seconds()) }
func (n nodeSweep) Progress(f float64)          { n.progress.Set(f) }
