// Package metrics exposes the worker's Prometheus metrics. It implements
// worker.Observer for the per-event counters and reads gauges (Redis and
// NATS up, consumer pending, busy handlers) when Prometheus scrapes.
package metrics

import (
	"context"
	"time"

	"github.com/invalidator/invalidator/warm"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric name.
const Namespace = "invalidator"

// noRule is the rule label of an event that matched no rule (malformed,
// unrouted).
const noRule = "none"

// Metrics holds the collectors. Create it with New.
type Metrics struct {
	events       *prometheus.CounterVec
	ruleEvents   *prometheus.CounterVec
	keysRemoved  prometheus.Counter
	scanKeys     prometheus.Counter
	scanCalls    prometheus.Counter
	duration     prometheus.Histogram
	lag          prometheus.Histogram
	redisUp      prometheus.Gauge
	redisChanges prometheus.Counter
	warms        *prometheus.CounterVec
	warmLatency  prometheus.Histogram
	scheduled    *prometheus.CounterVec
	sweep        sweepMetrics
	consistency  consistencyMetrics
}

// Sources are read at scrape time. Any may be nil until the worker is set up.
type Sources struct {
	// Stats returns the worker's running totals.
	Stats func() worker.Stats
	// NATSConnected reports whether the NATS connection is up.
	NATSConnected func() bool
	// Consumer returns the durable consumer (nil before setup).
	Consumer func() jetstream.Consumer
	// DeadLetters counts the messages of the dead-letter stream.
	DeadLetters func(context.Context) (uint64, error)
}

// New registers the worker's metrics, the Go and the process collectors on reg.
func New(reg prometheus.Registerer, src Sources) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "events_total",
			Help: "Event deliveries settled, by outcome (applied, retried, dead_lettered, unrouted, abandoned)."}, []string{"outcome"}),
		ruleEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "rule_events_total",
			Help: "Event deliveries settled, by the subject filter of each matching rule ('none' if no rule matched) and outcome."}, []string{"rule", "outcome"}),
		keysRemoved: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "keys_removed_total",
			Help: "Redis keys removed by UNLINK."}),
		scanKeys: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "scan_keys_total",
			Help: "Keys examined by SCAN while each event's patterns were being swept (shared calls count once per event served)."}),
		scanCalls: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "scan_calls_total",
			Help: "SCAN calls made while each event's patterns were being swept (a call of the shared walk counts once for every event it served; see sweep_passes_total for the walk itself)."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "event_duration_seconds",
			Help: "Time to invalidate the keys of one event.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "event_lag_seconds",
			Help:    "From the event's time (or its publication) to its keys being gone, for applied events.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
		redisUp: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "redis_up",
			Help: "1 while Redis answers the worker's health pings."}),
		redisChanges: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "redis_state_changes_total",
			Help: "Times Redis went down or came back."}),
		warms: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "warm_requests_total",
			Help: "Cache warm requests, by outcome (stored, triggered, skipped_stale, failed, shed, skipped_unsafe)."}, []string{"outcome"}),
		warmLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "warm_duration_seconds",
			Help:    "Time of one warm request, fetch and guarded write included (shed requests excluded).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}),
		scheduled: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "scheduled_refreshes_total",
			Help: "Scheduled refreshes this replica made (it won the interval's lock), by key."}, []string{"key"}),
	}
	m.redisUp.Set(1)
	reg.MustRegister(m.events, m.ruleEvents, m.keysRemoved, m.scanKeys, m.scanCalls, m.duration, m.lag,
		m.redisUp, m.redisChanges, m.warms, m.warmLatency, m.scheduled,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newGauges(src))
	m.sweep = newSweepMetrics(reg)
	m.consistency = newConsistencyMetrics(reg)
	for _, o := range []worker.Outcome{worker.Applied, worker.Retried, worker.DeadLettered, worker.Unrouted, worker.Abandoned} {
		m.events.WithLabelValues(string(o)) // export zeros, so rates work from the start
	}
	for _, o := range []warm.Outcome{warm.Stored, warm.Triggered, warm.SkippedStale, warm.Failed, warm.Shed, warm.SkippedUnsafe, warm.Dropped} {
		m.warms.WithLabelValues(string(o))
	}
	return m
}

// EventDone implements worker.Observer.
func (m *Metrics) EventDone(r worker.Report) {
	o := string(r.Outcome)
	m.events.WithLabelValues(o).Inc()
	if len(r.Rules) == 0 {
		m.ruleEvents.WithLabelValues(noRule, o).Inc()
	}
	for _, rule := range r.Rules {
		m.ruleEvents.WithLabelValues(rule, o).Inc()
	}
	m.keysRemoved.Add(float64(r.Removed))
	m.scanKeys.Add(float64(r.Scanned))
	m.scanCalls.Add(float64(r.ScanCalls))
	if r.Outcome == worker.Applied {
		m.duration.Observe(r.Duration.Seconds())
		m.lag.Observe(r.Lag.Seconds())
	}
}

// RedisUp implements worker.Observer.
func (m *Metrics) RedisUp(up bool) {
	m.redisChanges.Inc()
	if up {
		m.redisUp.Set(1)
	} else {
		m.redisUp.Set(0)
	}
}

// WarmDone implements warm.Observer.
func (m *Metrics) WarmDone(o warm.Outcome, latency time.Duration) {
	m.warms.WithLabelValues(string(o)).Inc()
	if o != warm.Shed && o != warm.SkippedUnsafe {
		m.warmLatency.Observe(latency.Seconds())
	}
}

// Schedules exports a refresh count of zero for each scheduled key, so that
// the series of invalidator_scheduled_refreshes_total exist before a
// schedule first fires. Call it with the keys of the rules file's schedule.
func (m *Metrics) Schedules(keys ...string) {
	for _, k := range keys {
		m.scheduled.WithLabelValues(k)
	}
}

// ScheduledRefresh implements warm.Observer. Keys come from the
// rules file's schedule, so the label is bounded.
func (m *Metrics) ScheduledRefresh(key string) { m.scheduled.WithLabelValues(key).Inc() }

// gauges reads scrape-time values.
type gauges struct {
	src                                Sources
	natsUp, pending, ackPending, busy  *prometheus.Desc
	inFlight, redelivered, concurrency *prometheus.Desc
	deadLetters                        *prometheus.Desc
}

func newGauges(src Sources) *gauges {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, nil, nil)
	}
	return &gauges{
		src:         src,
		natsUp:      d("nats_up", "1 while the NATS connection is up."),
		pending:     d("consumer_pending", "Events in the stream not yet delivered to the consumer."),
		ackPending:  d("consumer_ack_pending", "Events delivered and not yet acknowledged."),
		redelivered: d("consumer_redelivered", "Events delivered more than once and not yet acknowledged."),
		busy:        d("busy_workers", "Handlers working on events now."),
		inFlight:    d("events_in_flight", "Events being handled now."),
		concurrency: d("workers", "Handlers in the pool (WORKER_CONCURRENCY)."),
		deadLetters: d("dead_letters", "Letters in the dead-letter stream, waiting for an operator (invalidator dlq)."),
	}
}

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{g.natsUp, g.pending, g.ackPending, g.redelivered, g.busy, g.inFlight, g.concurrency, g.deadLetters} {
		ch <- d
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	if g.src.NATSConnected != nil {
		gauge(g.natsUp, b2f(g.src.NATSConnected()))
	}
	if g.src.Stats != nil {
		s := g.src.Stats()
		gauge(g.busy, float64(s.BusyHandlers))
		gauge(g.inFlight, float64(s.Busy))
		gauge(g.concurrency, float64(s.Concurrency))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if g.src.DeadLetters != nil {
		if n, err := g.src.DeadLetters(ctx); err == nil {
			gauge(g.deadLetters, float64(n))
		}
	}
	if g.src.Consumer == nil {
		return
	}
	if c := g.src.Consumer(); c != nil {
		if info, err := c.Info(ctx); err == nil {
			gauge(g.pending, float64(info.NumPending))
			gauge(g.ackPending, float64(info.NumAckPending))
			gauge(g.redelivered, float64(info.NumRedelivered))
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
