package metrics

import (
	"time"

	"github.com/invalidator/invalidator/consistency"
	"github.com/prometheus/client_golang/prometheus"
)

// consistencyMetrics are the consistency checker's.
type consistencyMetrics struct {
	checks   *prometheus.CounterVec
	staleAge prometheus.Histogram
	dropped  prometheus.Counter
}

func newConsistencyMetrics(reg prometheus.Registerer) consistencyMetrics {
	c := consistencyMetrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "consistency_checks_total",
			Help: "Keys of sampled events read again by the consistency checker, by timescale (the delay after the event was applied), kind (exact, pattern) and result (consistent, masked, refilled, stale, unknown)."},
			[]string{"timescale", "kind", "result"}),
		staleAge: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "consistency_stale_age_seconds",
			Help:    "Age of each stale read of the consistency checker: from the event's apply to the read.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2.5, 10)}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "consistency_dropped_total",
			Help: "Sampled events the consistency checker dropped because its queue was full."}),
	}
	reg.MustRegister(c.checks, c.staleAge, c.dropped)
	return c
}

// Consistency returns the consistency.Observer of the checker (pass it as
// consistency.Config.Observer) and exports a zero for every timescale,
// kind and result, so that rates and the alert work from the start.
// timescales are the labels of the checker's delays (consistency.Timescale).
func (m *Metrics) Consistency(timescales []string) consistency.Observer {
	for _, ts := range timescales {
		for _, k := range []consistency.Kind{consistency.Exact, consistency.Pattern} {
			for _, r := range consistency.Results {
				m.consistency.checks.WithLabelValues(ts, string(k), string(r))
			}
		}
	}
	return consistencyObserver{m.consistency}
}

type consistencyObserver struct{ m consistencyMetrics }

func (o consistencyObserver) Checked(timescale string, kind consistency.Kind, r consistency.Result) {
	o.m.checks.WithLabelValues(timescale, string(kind), string(r)).Inc()
}
func (o consistencyObserver) StaleAge(d time.Duration) { o.m.staleAge.Observe(d.Seconds()) }
func (o consistencyObserver) Dropped()                 { o.m.dropped.Inc() }
