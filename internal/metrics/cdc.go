package metrics

import (
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/cdc"
	"github.com/prometheus/client_golang/prometheus"
)

// CDC holds the metrics of `invalidator cdc`. It implements cdc.Observer.
type CDC struct {
	transactions prometheus.Counter
	events       *prometheus.CounterVec
	commitToAck  prometheus.Histogram
	slotLost     prometheus.Counter
	visWait      prometheus.Histogram
}

// NewCDC registers the cdc metrics on reg; status is read at scrape time
// for the slot's lag and the standby gauge. It registers no Go or process
// collectors (New does, for a process that also runs the worker).
func NewCDC(reg prometheus.Registerer, status func() cdc.Status) *CDC {
	m := &CDC{
		transactions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "cdc_transactions_total",
			Help: "Transactions whose events are all acknowledged by JetStream and whose end was confirmed to PostgreSQL."}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "cdc_events_total",
			Help: "Events published from the commit log, by entity and action."}, []string{"entity", "action"}),
		commitToAck: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "cdc_commit_to_ack_seconds",
			Help:    "From a transaction's commit (PostgreSQL's clock) to the last PubAck of its events.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}),
		slotLost: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "cdc_slot_lost_total",
			Help: "Replication slots found lost (missing after a recorded position, or wal_status lost): every entity's bulk event was published."}),
		visWait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "cdc_visibility_wait_seconds",
			Help: "Committed transactions whose events waited because a snapshot showed them not yet visible to other sessions " +
				"(the count), and how long: from the decoded commit to the snapshot that showed it visible.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
	}
	lag := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "cdc_slot_lag_bytes",
		Help: "The server's flush LSN minus the slot's confirmed_flush_lsn, sampled every 2 s (-1 before the first sample)."},
		func() float64 { return float64(status().LagBytes) })
	standby := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "cdc_standby",
		Help: "1 while another process holds the slot and this one waits to take over."},
		func() float64 { return b2f(status().Standby) })
	reg.MustRegister(m.transactions, m.events, m.commitToAck, m.slotLost, m.visWait, lag, standby)
	return m
}

// Transaction implements cdc.Observer.
func (m *CDC) Transaction(commitToAck time.Duration) {
	m.transactions.Inc()
	m.commitToAck.Observe(commitToAck.Seconds())
}

// Event implements cdc.Observer. Entities come from the rules file and
// actions from a fixed set, so the labels are bounded.
func (m *CDC) Event(entity, action string) { m.events.WithLabelValues(entity, action).Inc() }

// SlotLost implements cdc.Observer.
func (m *CDC) SlotLost() { m.slotLost.Inc() }

// VisibilityWait implements cdc.Observer.
func (m *CDC) VisibilityWait(wait time.Duration) {
	m.visWait.Observe(wait.Seconds())
}

// Tables exports zero counts for every entity and action of the tables, so
// rates work from the start.
func (m *CDC) Tables(tables []cachekeys.CDCTable) {
	for _, t := range tables {
		for _, a := range []string{cachekeys.ActionCreated, cachekeys.ActionUpdated, cachekeys.ActionDeleted,
			cachekeys.ActionTruncated, cachekeys.ActionBulk} {
			m.events.WithLabelValues(t.Entity, a)
		}
	}
}
