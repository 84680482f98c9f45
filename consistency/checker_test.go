package consistency_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/internal/metrics"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// testDelays are short delays: the checks of a sample are done within
// a quarter of a second.
var testDelays = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond}

// rig is one real redis-server, the single-node engine with generations,
// the guard protocol (the fill side services run), and a running checker
// whose metrics go to a registry of their own and whose lines are kept.
type rig struct {
	t       *testing.T
	rdb     redis.UniversalClient
	eng     engine.Engine
	proto   *guard.Protocol
	checker *consistency.Checker
	reg     *prometheus.Registry
	logs    *testserver.Logs
}

func newRig(t *testing.T, cfg consistency.Config) *rig {
	t.Helper()
	rdb := testserver.RedisClient(t, testserver.Redis(t))
	eng, err := engine.NewRedis(rdb, engine.Config{Generations: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	return newRigOn(t, rdb, eng, cfg)
}

// newRigOn is newRig on a Redis and an engine of the caller's.
func newRigOn(t *testing.T, rdb redis.UniversalClient, eng engine.Engine, cfg consistency.Config) *rig {
	t.Helper()
	proto, err := guard.New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, rdb: rdb, eng: eng, proto: proto, reg: prometheus.NewRegistry(), logs: &testserver.Logs{}}
	cfg.Sample = 1
	if cfg.Delays == nil {
		cfg.Delays = testDelays
	}
	var labels []string
	for _, d := range cfg.Delays {
		labels = append(labels, consistency.Timescale(d))
	}
	cfg.Observer = metrics.New(r.reg, metrics.Sources{}).Consistency(labels)
	cfg.Logger = slog.New(r.logs)
	if r.checker, err = consistency.New(rdb, cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.checker.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return r
}

// fill writes key through the guard as cache.Fetch does (claim, then a
// guarded fill) and returns the value stored, stamp included.
func (r *rig) fill(key, payload string) string {
	r.t.Helper()
	ctx := context.Background()
	c, err := r.proto.Claim(ctx, key)
	if err != nil {
		r.t.Fatal(err)
	}
	if ok, err := r.proto.Fill(ctx, c, []byte(payload), time.Minute); err != nil || !ok {
		r.t.Fatalf("fill %s = %v, %v", key, ok, err)
	}
	return r.get(key)
}

func (r *rig) get(key string) string {
	r.t.Helper()
	v, err := r.rdb.Get(context.Background(), key).Result()
	if err != nil {
		r.t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

func (r *rig) set(key, value string) {
	r.t.Helper()
	if err := r.rdb.Set(context.Background(), key, value, time.Minute).Err(); err != nil {
		r.t.Fatal(err)
	}
}

// invalidate runs job through the engine with Capture, as the worker does
// for a sampled event, and returns the sample the worker would submit.
func (r *rig) invalidate(id string, job engine.Job) consistency.Sample {
	r.t.Helper()
	job.Capture = true
	res, err := engine.Invalidate(context.Background(), r.eng, job)
	if err != nil {
		r.t.Fatal(err)
	}
	if res.Capture == nil {
		r.t.Fatal("the engine captured nothing")
	}
	return consistency.Sample{EventID: id, Subject: "events.test", Applied: time.Now(), Exact: job.Exact, Capture: res.Capture}
}

func (r *rig) submit(s consistency.Sample) {
	r.t.Helper()
	if !r.checker.Submit(s) {
		r.t.Fatal("Submit refused the sample")
	}
}

// checked waits until every timescale has checked n keys (unknown ones
// included) in the last hour, and returns the report.
func (r *rig) checked(n int64) consistency.Report {
	r.t.Helper()
	var rep consistency.Report
	testserver.Eventually(r.t, "every timescale checked", 10*time.Second, func() bool {
		rep = r.checker.Report(time.Now())
		for _, ts := range rep.Timescales {
			if ts.LastHour.Checked+ts.LastHour.Unknown < n {
				return false
			}
		}
		return true
	})
	return rep
}

// count is the value of invalidator_consistency_checks_total with labels.
func (r *rig) count(timescale string, kind consistency.Kind, result consistency.Result) float64 {
	r.t.Helper()
	return counter(r.t, r.reg, "invalidator_consistency_checks_total",
		map[string]string{"timescale": timescale, "kind": string(kind), "result": string(result)})
}

// results returns, per timescale label, the results counted for kind.
func (r *rig) results(kind consistency.Kind) map[string]map[consistency.Result]float64 {
	out := map[string]map[consistency.Result]float64{}
	for _, d := range r.checker.Config().Delays {
		ts := consistency.Timescale(d)
		out[ts] = map[consistency.Result]float64{}
		for _, res := range consistency.Results {
			if n := r.count(ts, kind, res); n > 0 {
				out[ts][res] = n
			}
		}
	}
	return out
}

func counter(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	return testserver.MetricValue(t, g, name, labels)
}

type want map[string]map[consistency.Result]float64

func same(a, b map[string]map[consistency.Result]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w := b[k]
		if len(v) != len(w) {
			return false
		}
		for r, n := range v {
			if w[r] != n {
				return false
			}
		}
	}
	return true
}

// TestExactKeyClasses makes each class of the table happen for real to an
// exact key filled through the guard and invalidated by the engine, and
// reads the checker's metrics, report and log:
//   - nothing changes after the invalidation: consistent;
//   - a fill through the guard after it: refilled;
//   - a plain SET (outside the protocol): unknown;
//   - a buggy restore writes the old stamped value back, without its
//     generation (the value's stamp is then not current): masked;
//   - a buggy snapshot restore writes back the old generation token and
//     the old stamped value: stale, at both timescales, logged once.
func TestExactKeyClasses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		after func(r *rig, key, old, oldToken string)
		want  consistency.Result
	}{
		{"nothing changed", func(*rig, string, string, string) {}, consistency.Consistent},
		{"refill through the guard", func(r *rig, key, _, _ string) { r.fill(key, "new") }, consistency.Refilled},
		{"plain SET", func(r *rig, key, _, _ string) { r.set(key, "raw") }, consistency.Unknown},
		{"old stamped value restored alone", func(r *rig, key, old, _ string) { r.set(key, old) }, consistency.Masked},
		{"old generation and stamped value restored", func(r *rig, key, old, tok string) {
			r.set(guard.Key(key), tok)
			r.set(key, old)
		}, consistency.Stale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, consistency.Config{})
			const key = "cache:course:1"
			old := r.fill(key, "old")
			oldToken := r.get(guard.Key(key))
			s := r.invalidate("ev-1", engine.Job{Exact: []string{key}})
			if len(s.Capture.Exact) != 1 || s.Capture.Exact[0].Previous != oldToken {
				t.Fatalf("capture %+v, want the displaced token %s", s.Capture.Exact, oldToken)
			}
			tc.after(r, key, old, oldToken)
			r.submit(s)
			rep := r.checked(1)
			w := want{"50ms": {tc.want: 1}, "200ms": {tc.want: 1}}
			if got := r.results(consistency.Exact); !same(got, w) {
				t.Errorf("checks_total = %v, want %v", got, w)
			}
			if got := r.results(consistency.Pattern); !same(got, want{"50ms": {}, "200ms": {}}) {
				t.Errorf("pattern checks_total = %v, want none", got)
			}
			var wantChecked, wantStale, wantUnknown int64 = 1, 0, 0
			switch tc.want {
			case consistency.Stale:
				wantStale = 1
			case consistency.Unknown:
				wantChecked, wantUnknown = 0, 1
			}
			for _, ts := range rep.Timescales {
				if h := ts.LastHour; h.Checked != wantChecked || h.Stale != wantStale || h.Unknown != wantUnknown || !sameWindow(h, ts.LastDay) {
					t.Errorf("%s: last hour %+v, last day %+v; want checked %d, stale %d, unknown %d", ts.Timescale, h, ts.LastDay, wantChecked, wantStale, wantUnknown)
				}
			}
			warns := r.logs.Containing("⚠️ stale value")
			if tc.want != consistency.Stale {
				if len(rep.Recent) != 0 || len(warns) != 0 {
					t.Errorf("findings %+v, lines %q: want none", rep.Recent, warns)
				}
				return
			}
			if len(warns) != 1 {
				t.Errorf("⚠️ lines %q, want one", warns)
			}
			for _, field := range []string{"id=ev-1", "key=" + key, "displaced=" + oldToken, "generation=" + guard.Key(key), "timescale=50ms"} {
				if len(warns) > 0 && !strings.Contains(warns[0], field) {
					t.Errorf("the ⚠️ line %q lacks %s", warns[0], field)
				}
			}
			if len(rep.Recent) != 1 {
				t.Fatalf("findings %+v, want one", rep.Recent)
			}
			f := rep.Recent[0]
			if f.EventID != "ev-1" || f.Key != key || f.Kind != consistency.Exact || f.Displaced != oldToken || f.Set != "" ||
				f.Stamp != "@gen "+oldToken+" "+strings.Join(f.Current[1:], " ") || !slices.Equal(f.Timescales, []string{"50ms", "200ms"}) {
				t.Errorf("finding %+v", f)
			}
			if n := counter(t, r.reg, "invalidator_consistency_stale_age_seconds", nil); n != 2 {
				t.Errorf("stale_age_seconds has %v observations, want 2 (one per stale read)", n)
			}
		})
	}
}

func sameWindow(a, b consistency.Window) bool {
	return a.Checked == b.Checked && a.Stale == b.Stale && a.Unknown == b.Unknown
}

// TestPatternKeyClasses invalidates a pattern over keys filled through the
// guard: the checker reads the keys the sweep removed (a sample of at most
// engine.MaxCapturedKeys of them, reported by the engine), and finds each
// class for real: most stay absent (consistent); one is filled again
// through the guard (refilled); one gets the old stamped value back alone
// (the scope's generation moved: masked); one gets both the old value and
// the scope's old token back (stale, kind pattern).
func TestPatternKeyClasses(t *testing.T) {
	t.Parallel()
	r := newRig(t, consistency.Config{})
	const scope = "cache:course:7:"
	keys := make([]string, 120)
	old := map[string]string{}
	for i := range keys {
		keys[i] = scope + "w" + strconv.Itoa(i)
		old[keys[i]] = r.fill(keys[i], "old")
	}
	oldScope := r.get(guard.Key(scope))
	s := r.invalidate("ev-p", engine.Job{Patterns: []string{scope + "*"}})
	sampled := s.Capture.Removed[scope+"*"]
	if len(sampled) != engine.MaxCapturedKeys {
		t.Fatalf("%d keys sampled, want %d", len(sampled), engine.MaxCapturedKeys)
	}
	if len(s.Capture.Scopes) != 1 || s.Capture.Scopes[0].Previous != oldScope || s.Capture.Scopes[0].Token != r.get(guard.Key(scope)) {
		t.Fatalf("scope capture %+v, want %s displaced by the current token", s.Capture.Scopes, oldScope)
	}
	refilled, masked := sampled[0], sampled[1]
	r.fill(refilled, "new")
	r.set(masked, old[masked])
	r.submit(s)
	rep := r.checked(engine.MaxCapturedKeys)
	n := float64(engine.MaxCapturedKeys)
	w := want{}
	for _, ts := range []string{"50ms", "200ms"} {
		w[ts] = map[consistency.Result]float64{consistency.Consistent: n - 2, consistency.Refilled: 1, consistency.Masked: 1}
	}
	if got := r.results(consistency.Pattern); !same(got, w) {
		t.Errorf("checks_total = %v, want %v", got, w)
	}
	if len(rep.Recent) != 0 {
		t.Errorf("findings %+v, want none", rep.Recent)
	}

	// A buggy snapshot restore of the scope's generation and of a value:
	// stale for the checks of a second invalidation of the same scope.
	stale := scope + "wstale"
	staleOld := r.fill(stale, "old")
	staleToken := r.get(guard.Key(scope))
	s2 := r.invalidate("ev-p2", engine.Job{Patterns: []string{scope + "*"}})
	r.set(guard.Key(scope), staleToken)
	r.set(stale, staleOld)
	r.submit(s2)
	testserver.Eventually(t, "the stale read counted at both timescales", 10*time.Second, func() bool {
		return r.count("200ms", consistency.Pattern, consistency.Stale) >= 1
	})
	rep = r.checker.Report(time.Now())
	if len(rep.Recent) != 1 || rep.Recent[0].Key != stale || rep.Recent[0].Kind != consistency.Pattern ||
		rep.Recent[0].Generation != guard.Key(scope) || rep.Recent[0].Displaced != staleToken || rep.Recent[0].Set != s2.Capture.Scopes[0].Token {
		t.Errorf("findings %+v, want %s stale with the scope's displaced token %s", rep.Recent, stale, staleToken)
	}
	if warns := r.logs.Containing("⚠️ stale value"); len(warns) != 1 {
		t.Errorf("⚠️ lines %q, want one", warns)
	}
}

// TestStaleCountsOnlyWhileStillStale is Polaris's rule: a key found stale
// at the first delay and repaired before the second counts stale at the
// first timescale only, and consistent at the second; its finding names
// the first timescale alone, and it is logged once.
func TestStaleCountsOnlyWhileStillStale(t *testing.T) {
	t.Parallel()
	r := newRig(t, consistency.Config{Delays: []time.Duration{50 * time.Millisecond, 600 * time.Millisecond}})
	const key = "cache:course:2"
	old := r.fill(key, "old")
	tok := r.get(guard.Key(key))
	s := r.invalidate("ev-2", engine.Job{Exact: []string{key}})
	r.set(guard.Key(key), tok)
	r.set(key, old)
	r.submit(s)
	testserver.Eventually(t, "stale at 50ms", 5*time.Second, func() bool { return r.count("50ms", consistency.Exact, consistency.Stale) == 1 })
	if err := r.rdb.Del(context.Background(), key).Err(); err != nil { // an operator repairs it
		t.Fatal(err)
	}
	rep := r.checked(1)
	w := want{"50ms": {consistency.Stale: 1}, "600ms": {consistency.Consistent: 1}}
	if got := r.results(consistency.Exact); !same(got, w) {
		t.Errorf("checks_total = %v, want %v", got, w)
	}
	if len(rep.Recent) != 1 || !slices.Equal(rep.Recent[0].Timescales, []string{"50ms"}) {
		t.Errorf("findings %+v, want one, stale at 50ms only", rep.Recent)
	}
	if h := rep.Timescales[1].LastHour; h.Stale != 0 || h.Checked != 1 || h.NinesAtLeast == nil || h.Nines != nil {
		t.Errorf("600ms last hour %+v, want 1 checked, 0 stale, a bound on the nines", h)
	}
	if h := rep.Timescales[0].LastHour; h.Stale != 1 || h.Nines == nil || *h.Nines != 0 {
		t.Errorf("50ms last hour %+v, want 1 stale of 1: 0 nines", h)
	}
	if warns := r.logs.Containing("⚠️ stale value"); len(warns) != 1 {
		t.Errorf("⚠️ lines %q, want one", warns)
	}
}

// TestReportJSON checks the report's JSON for the endpoint: nines with
// stale reads, the bound without, and the finding's fields.
func TestReportJSON(t *testing.T) {
	t.Parallel()
	r := newRig(t, consistency.Config{})
	var samples []consistency.Sample
	for i := range 4 {
		key := "cache:course:j" + strconv.Itoa(i)
		old := r.fill(key, "old")
		tok := r.get(guard.Key(key))
		samples = append(samples, r.invalidate("ev-j"+strconv.Itoa(i), engine.Job{Exact: []string{key}}))
		if i == 0 {
			r.set(guard.Key(key), tok)
			r.set(key, old)
		}
	}
	for _, s := range samples {
		r.submit(s)
	}
	r.checked(4)
	b, err := json.Marshal(r.checker.Report(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Sample     float64
		Delays     []string
		Timescales []struct {
			Timescale string
			LastHour  map[string]any `json:"last_hour"`
		}
		Recent []map[string]any `json:"recent_stale"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Sample != 1 || !slices.Equal(got.Delays, []string{"50ms", "200ms"}) || len(got.Timescales) != 2 {
		t.Fatalf("report %s", b)
	}
	h := got.Timescales[0].LastHour
	// 1 stale of 4: -log10(1/4) = 0.602 nines.
	if h["checked"] != 4.0 || h["stale"] != 1.0 || h["nines"] == nil || h["nines_at_least"] != nil {
		t.Errorf("last hour %v, want 4 checked, 1 stale and nines", h)
	}
	if n, _ := h["nines"].(float64); n < 0.60 || n > 0.61 {
		t.Errorf("nines %v, want -log10(1/4) = 0.602", n)
	}
	if len(got.Recent) != 1 {
		t.Fatalf("recent %v", got.Recent)
	}
	for _, k := range []string{"event_id", "key", "stamp", "generation", "displaced", "set", "current", "applied", "timescales"} {
		if _, ok := got.Recent[0][k]; !ok {
			t.Errorf("a finding has no %q: %v", k, got.Recent[0])
		}
	}
}

// TestDefaultDelays runs the checker with the production delays, parsed
// from the setting's default: the first check comes a second after the
// event (the later ones are not waited for), under the labels the alert
// and the dashboard use.
func TestDefaultDelays(t *testing.T) {
	t.Parallel()
	delays, err := consistency.ParseDelays("1s,10s,60s")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(delays, consistency.DefaultDelays) {
		t.Fatalf("ParseDelays(default) = %v, want %v", delays, consistency.DefaultDelays)
	}
	r := newRig(t, consistency.Config{Delays: delays})
	rep := r.checker.Report(time.Now())
	if !slices.Equal(rep.Delays, []string{"1s", "10s", "60s"}) {
		t.Errorf("timescales %v, want 1s, 10s, 60s", rep.Delays)
	}
	const key = "cache:course:d"
	r.fill(key, "v")
	start := time.Now()
	r.submit(r.invalidate("ev-d", engine.Job{Exact: []string{key}}))
	testserver.Eventually(t, "the 1s check", 5*time.Second, func() bool { return r.count("1s", consistency.Exact, consistency.Consistent) == 1 })
	if d := time.Since(start); d < time.Second {
		t.Errorf("the 1s check came %v after the event", d)
	}
	if n := r.count("10s", consistency.Exact, consistency.Consistent); n != 0 {
		t.Errorf("a 10s check already: %v", n)
	}
	if p := r.checker.Report(time.Now()).Pending; p != 1 {
		t.Errorf("pending %d, want the sample held for its 10s and 60s checks", p)
	}
}

// TestFullQueueDrops: a full queue drops the sample at once and counts
// it, without blocking the caller.
func TestFullQueueDrops(t *testing.T) {
	t.Parallel()
	rdb := testserver.RedisClient(t, testserver.Redis(t))
	reg := prometheus.NewRegistry()
	c, err := consistency.New(rdb, consistency.Config{Sample: 1, Queue: 2, Observer: metrics.New(reg, metrics.Sources{}).Consistency(nil)})
	if err != nil {
		t.Fatal(err)
	}
	s := consistency.Sample{Applied: time.Now(), Exact: []string{"k"}, Capture: &engine.Capture{}}
	// Not running: nothing takes samples off the queue.
	got := []bool{c.Submit(s), c.Submit(s), c.Submit(s)}
	if !slices.Equal(got, []bool{true, true, false}) {
		t.Errorf("Submit = %v, want the third dropped", got)
	}
	if n := counter(t, reg, "invalidator_consistency_dropped_total", nil); n != 1 {
		t.Errorf("dropped_total = %v, want 1", n)
	}
	if r := c.Report(time.Now()); r.Dropped != 1 || r.Pending != 2 {
		t.Errorf("report dropped %d, pending %d; want 1 and 2", r.Dropped, r.Pending)
	}
	if c.Submit(consistency.Sample{}) {
		t.Error("a sample without a capture was taken")
	}
}

// TestRunStops: Run returns once its context ends, with a sample still
// pending, and a checker runs once.
func TestRunStops(t *testing.T) {
	t.Parallel()
	rdb := testserver.RedisClient(t, testserver.Redis(t))
	c, err := consistency.New(rdb, consistency.Config{Sample: 1, Delays: []time.Duration{time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	c.Submit(consistency.Sample{Applied: time.Now(), Exact: []string{"k"}, Capture: &engine.Capture{}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if err := c.Run(context.Background()); !errors.Is(err, consistency.ErrAlreadyRunning) {
		t.Errorf("second Run = %v, want ErrAlreadyRunning", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		given   consistency.Config
		wantErr bool
	}{
		{name: "zero value", given: consistency.Config{}},
		{name: "off", given: consistency.Config{Sample: -1}},
		{name: "every event", given: consistency.Config{Sample: 1}},
		{name: "sample over 1", given: consistency.Config{Sample: 1.01}, wantErr: true},
		{name: "delays descending", given: consistency.Config{Delays: []time.Duration{time.Second, time.Millisecond}}, wantErr: true},
		{name: "delay twice", given: consistency.Config{Delays: []time.Duration{time.Second, time.Second}}, wantErr: true},
		{name: "delay zero", given: consistency.Config{Delays: []time.Duration{0}}, wantErr: true},
		{name: "delay over an hour", given: consistency.Config{Delays: []time.Duration{2 * time.Hour}}, wantErr: true},
		{name: "negative rate", given: consistency.Config{Rate: -1}, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.given.Validate()
			if (err != nil) != tt.wantErr || err != nil && !errors.Is(err, consistency.ErrInvalidConfig) {
				t.Errorf("Validate() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
	if (consistency.Config{Sample: -1}).Enabled() || !(consistency.Config{}).Enabled() {
		t.Error("Enabled: want off for a negative sample, on by default")
	}
}

func TestTimescale(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		time.Second: "1s", 10 * time.Second: "10s", time.Minute: "60s", 50 * time.Millisecond: "50ms",
		1500 * time.Millisecond: "1500ms", 1500 * time.Microsecond: "1.5ms",
	} {
		if got := consistency.Timescale(d); got != want {
			t.Errorf("Timescale(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestClusterClasses runs the checker on a Redis Cluster, whose read
// protocol GETs each generation on its own master and whose own
// generations are hash-tagged into their key's slot: the cluster engine
// captures with GETDEL of guard.ClusterKey, and the checker finds a
// restored key stale, a refilled one refilled and a plain SET unknown.
func TestClusterClasses(t *testing.T) {
	t.Parallel()
	rdb := testserver.ClusterClient(t, testserver.RedisCluster(t, 3))
	eng, err := engine.NewCluster(rdb, engine.Config{Generations: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	r := newRigOn(t, rdb, eng, consistency.Config{})
	stale, refilled, plain := "cache:course:c1", "cache:course:c2", "cache:course:c3"
	old := r.fill(stale, "old")
	tok := r.get(guard.ClusterKey(stale))
	r.fill(refilled, "old")
	r.fill(plain, "old")
	s := r.invalidate("ev-c", engine.Job{Exact: []string{stale, refilled, plain}})
	if i := slices.IndexFunc(s.Capture.Exact, func(d engine.Displaced) bool { return d.Scope == stale }); i < 0 || s.Capture.Exact[i].Previous != tok || s.Capture.Exact[i].Key != guard.ClusterKey(stale) {
		t.Fatalf("capture %+v, want %s's own generation %s displaced", s.Capture.Exact, stale, tok)
	}
	r.set(guard.ClusterKey(stale), tok)
	r.set(stale, old)
	r.fill(refilled, "new")
	r.set(plain, "raw")
	r.submit(s)
	r.checked(3)
	w := want{}
	for _, ts := range []string{"50ms", "200ms"} {
		w[ts] = map[consistency.Result]float64{consistency.Stale: 1, consistency.Refilled: 1, consistency.Unknown: 1}
	}
	if got := r.results(consistency.Exact); !same(got, w) {
		t.Errorf("checks_total = %v, want %v", got, w)
	}
	if rep := r.checker.Report(time.Now()); len(rep.Recent) != 1 || rep.Recent[0].Key != stale || rep.Recent[0].Generation != guard.ClusterKey(stale) {
		t.Errorf("findings %+v, want %s stale by its own generation", rep.Recent, stale)
	}
}
