package metrics_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/metrics"
	"github.com/invalidator/invalidator/warm"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// An event matching two rules counts once in events_total and once under
// each rule's label; its keys and SCAN work are added once.
func TestEventDoneCountsEachRuleOnce(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Sources{})
	m.EventDone(worker.Report{
		Subject: "events.enrollment.created",
		Rules:   []string{"events.enrollment.*", "events.user.>"},
		Outcome: worker.Applied,
		Result:  engine.Result{Removed: 7, Scanned: 9, ScanCalls: 3, Duration: 2 * time.Millisecond},
		Lag:     50 * time.Millisecond,
	})

	fams := gather(t, reg)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"invalidator_events_total", map[string]string{"outcome": "applied"}, 1},
		{"invalidator_events_total", map[string]string{"outcome": "retried"}, 0},
		{"invalidator_events_total", map[string]string{"outcome": "dead_lettered"}, 0},
		{"invalidator_events_total", map[string]string{"outcome": "unrouted"}, 0},
		{"invalidator_events_total", map[string]string{"outcome": "abandoned"}, 0},
		{"invalidator_rule_events_total", map[string]string{"rule": "events.enrollment.*", "outcome": "applied"}, 1},
		{"invalidator_rule_events_total", map[string]string{"rule": "events.user.>", "outcome": "applied"}, 1},
		{"invalidator_keys_removed_total", nil, 7},
		{"invalidator_scan_keys_total", nil, 9},
		{"invalidator_scan_calls_total", nil, 3},
	} {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s %v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n := len(fams["invalidator_events_total"].GetMetric()); n != 5 {
		t.Errorf("events_total has %d series, want one per outcome (5)", n)
	}
	if n := len(fams["invalidator_rule_events_total"].GetMetric()); n != 2 {
		t.Errorf("rule_events_total has %d series, want 2 (one per rule)", n)
	}
	if got := histogramCount(t, reg, "invalidator_event_duration_seconds"); got != 1 {
		t.Errorf("duration histogram count = %d, want 1", got)
	}
	if got := histogramCount(t, reg, "invalidator_event_lag_seconds"); got != 1 {
		t.Errorf("lag histogram count = %d, want 1", got)
	}
}

// Each outcome lands in its own series; an event without rules is counted
// under rule "none"; only applied events feed the duration and lag histograms.
func TestEventDoneByOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		given         worker.Report
		wantRule      string
		wantHistogram uint64
	}{
		{"applied", worker.Report{Rules: []string{"events.course.*"}, Outcome: worker.Applied}, "events.course.*", 1},
		{"retried", worker.Report{Rules: []string{"events.course.*"}, Outcome: worker.Retried}, "events.course.*", 0},
		{"dead lettered without rules", worker.Report{Outcome: worker.DeadLettered}, "none", 0},
		{"unrouted", worker.Report{Subject: "events.unknown.thing", Outcome: worker.Unrouted}, "none", 0},
		{"abandoned", worker.Report{Rules: []string{"events.user.>"}, Outcome: worker.Abandoned}, "events.user.>", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			m := metrics.New(reg, metrics.Sources{})
			m.EventDone(tt.given)
			outcome := string(tt.given.Outcome)
			fams := gather(t, reg)
			for _, o := range []string{"applied", "retried", "dead_lettered", "unrouted", "abandoned"} {
				want := 0.0
				if o == outcome {
					want = 1
				}
				if got := value(fams, "invalidator_events_total", map[string]string{"outcome": o}); got != want {
					t.Errorf("events_total{outcome=%q} = %v, want %v", o, got, want)
				}
			}
			if got := value(fams, "invalidator_rule_events_total", map[string]string{"rule": tt.wantRule, "outcome": outcome}); got != 1 {
				t.Errorf("rule_events_total{rule=%q,outcome=%q} = %v, want 1", tt.wantRule, outcome, got)
			}
			if n := len(fams["invalidator_rule_events_total"].GetMetric()); n != 1 {
				t.Errorf("rule_events_total has %d series, want 1", n)
			}
			if got := histogramCount(t, reg, "invalidator_event_duration_seconds"); got != tt.wantHistogram {
				t.Errorf("duration histogram count = %d, want %d", got, tt.wantHistogram)
			}
			if got := histogramCount(t, reg, "invalidator_event_lag_seconds"); got != tt.wantHistogram {
				t.Errorf("lag histogram count = %d, want %d", got, tt.wantHistogram)
			}
		})
	}
}

// EventDone is called from many handlers at once; no count is lost.
func TestEventDoneConcurrent(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Sources{})
	const goroutines, each = 8, 250
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				m.EventDone(worker.Report{Rules: []string{"events.course.*"}, Outcome: worker.Applied,
					Result: engine.Result{Removed: 2, ScanCalls: 1}})
			}
		})
	}
	wg.Wait()
	fams := gather(t, reg)
	const n = goroutines * each
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"invalidator_events_total", map[string]string{"outcome": "applied"}, n},
		{"invalidator_rule_events_total", map[string]string{"rule": "events.course.*", "outcome": "applied"}, n},
		{"invalidator_keys_removed_total", nil, 2 * n},
		{"invalidator_scan_calls_total", nil, n},
	} {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s %v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// redis_up starts at 1 and follows the worker's gate; each change is counted.
func TestRedisUp(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Sources{})
	steps := []struct {
		up          bool
		wantUp      float64
		wantChanges float64
	}{
		{false, 0, 1},
		{true, 1, 2},
		{false, 0, 3},
		{true, 1, 4},
	}
	if got := value(gather(t, reg), "invalidator_redis_up", nil); got != 1 {
		t.Fatalf("redis_up before any report = %v, want 1", got)
	}
	for i, s := range steps {
		m.RedisUp(s.up)
		fams := gather(t, reg)
		if got := value(fams, "invalidator_redis_up", nil); got != s.wantUp {
			t.Errorf("step %d: redis_up = %v, want %v", i, got, s.wantUp)
		}
		if got := value(fams, "invalidator_redis_state_changes_total", nil); got != s.wantChanges {
			t.Errorf("step %d: redis_state_changes_total = %v, want %v", i, got, s.wantChanges)
		}
	}
}

// The scrape-time gauges read the sources; a source that is nil (or a
// consumer not set up yet) leaves its gauges out rather than failing.
func TestScrapeTimeGauges(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	metrics.New(reg, metrics.Sources{
		Stats:         func() worker.Stats { return worker.Stats{Concurrency: 16, BusyHandlers: 3, Busy: 40} },
		NATSConnected: func() bool { return false },
		Consumer:      func() jetstream.Consumer { return nil },
	})
	fams := gather(t, reg)
	for name, want := range map[string]float64{
		"invalidator_nats_up":          0,
		"invalidator_busy_workers":     3,
		"invalidator_events_in_flight": 40,
		"invalidator_workers":          16,
	} {
		if got := value(fams, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for _, absent := range []string{"invalidator_consumer_pending", "invalidator_consumer_ack_pending"} {
		if _, ok := fams[absent]; ok {
			t.Errorf("%s exported without a consumer", absent)
		}
	}
}

func TestNilSourcesAndStandardCollectors(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	metrics.New(reg, metrics.Sources{})
	fams := gather(t, reg)
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_start_time_seconds",
		"invalidator_events_total", "invalidator_redis_up"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	for _, absent := range []string{"invalidator_nats_up", "invalidator_busy_workers"} {
		if _, ok := fams[absent]; ok {
			t.Errorf("%s exported without its source", absent)
		}
	}
	var ours []*dto.MetricFamily
	for name, f := range fams {
		if strings.HasPrefix(name, metrics.Namespace+"_") {
			ours = append(ours, f)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	fs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(fs))
	for _, f := range fs {
		out[f.GetName()] = f
	}
	return out
}

// value is the counter or gauge of the series of name with exactly labels,
// or -1 if there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	for _, m := range fams[name].GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func hasLabels(m *dto.Metric, labels map[string]string) bool {
	if len(m.GetLabel()) != len(labels) {
		return false
	}
	for _, l := range m.GetLabel() {
		if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
			return false
		}
	}
	return true
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	ms := gather(t, g)[name].GetMetric()
	if len(ms) != 1 {
		t.Fatalf("%s has %d series, want 1", name, len(ms))
	}
	return ms[0].GetHistogram().GetSampleCount()
}

// Warm outcomes count by label; shed requests (never sent) stay out of the
// latency histogram; scheduled refreshes count by key.
func TestWarmMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Sources{})
	m.WarmDone(warm.Stored, 10*time.Millisecond)
	m.WarmDone(warm.Stored, 20*time.Millisecond)
	m.WarmDone(warm.SkippedStale, 5*time.Millisecond)
	m.WarmDone(warm.Shed, 0)
	m.ScheduledRefresh("cache:system_stats:global")
	fams := gather(t, reg)
	for outcome, want := range map[string]float64{"stored": 2, "skipped_stale": 1, "shed": 1, "failed": 0, "triggered": 0} {
		if got := value(fams, "invalidator_warm_requests_total", map[string]string{"outcome": outcome}); got != want {
			t.Errorf("warm_requests_total{%s} = %v, want %v", outcome, got, want)
		}
	}
	if got := histogramCount(t, reg, "invalidator_warm_duration_seconds"); got != 3 {
		t.Errorf("warm_duration_seconds count = %d, want 3 (shed excluded)", got)
	}
	if got := value(fams, "invalidator_scheduled_refreshes_total", map[string]string{"key": "cache:system_stats:global"}); got != 1 {
		t.Errorf("scheduled_refreshes_total = %v, want 1", got)
	}
}

// The refresh count of each scheduled key is exported as 0 before the
// schedule first fires.
func TestSchedulesExportZeros(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Sources{})
	m.Schedules("cache:system_stats:global", "cache:leaderboard")
	fams := gather(t, reg)
	for _, key := range []string{"cache:system_stats:global", "cache:leaderboard"} {
		if got := value(fams, "invalidator_scheduled_refreshes_total", map[string]string{"key": key}); got != 0 {
			t.Errorf("scheduled_refreshes_total{key=%q} = %v, want 0", key, got)
		}
	}
}
