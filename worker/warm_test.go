package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/warm"
	"github.com/invalidator/invalidator/worker"
	"github.com/redis/go-redis/v9"
)

// source is a real HTTP server standing for the application the warmer
// reads from. It records every request URI.
type source struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string
	hits     atomic.Int64
}

func newSource(t testing.TB, h func(w http.ResponseWriter, r *http.Request)) *source {
	s := &source{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.RequestURI)
		s.mu.Unlock()
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *source) uris() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

func jsonBody(body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}
}

// warmRules is a rules file whose warm targets point at base.
func warmRules(t testing.TB, base string) *cachekeys.Rules {
	t.Helper()
	r, err := cachekeys.Parse("warm.yaml", []byte(fmt.Sprintf(`
rules:
  - on: events.course.*
    invalidate:
      - cache:course_analytics:{course_id}
      - cache:course_analytics:{course_id}:*
      - cache:system_stats:*
    warm:
      - key: cache:course_analytics:{course_id}
        from: %[1]s/api/v3/analytics/courses/{course_id}
        ttl: 60s
        headers: {X-Cache-Bypass: "1"}
        headers_from_env: {Authorization: WARM_TOKEN}
      - from: %[1]s/api/v3/system/stats
schedule:
  - key: cache:system_stats:global
    from: %[1]s/api/v3/system/stats
    every: 1s
    ttl: 30s
`, base)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// startWarmer runs w until the test ends.
func startWarmer(t testing.TB, w *warm.Warmer) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// An applied event warms its key (store mode, with the TTL and the
// configured headers) and sends its trigger once; values are URL-escaped.
func TestWarmAfterInvalidation(t *testing.T) {
	var gotAuth, gotBypass atomic.Value
	src := newSource(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/v3/analytics/") {
			gotAuth.Store(r.Header.Get("Authorization"))
			gotBypass.Store(r.Header.Get("X-Cache-Bypass"))
		}
		jsonBody(`{"course": "fresh"}`)(w, r)
	})
	h := newHarness(t)
	h.rules = warmRules(t, src.URL)
	h.set("cache:course_analytics:42", "cache:course_analytics:42:x")
	obs := &warmCounts{}
	warmer := newWarmer(t, h.rdb, warm.Config{Env: map[string]string{"WARM_TOKEN": "Bearer s3cret"}}, nil, obs)
	eng := newEngine(t, h.rdb, engine.Config{Generations: true})
	r := h.start(testConfig(), worker.Deps{Engine: eng, Warmer: warmer})

	h.publish("events.course.updated", course(42))
	h.eventually("key warmed with the source's body", 10*time.Second, func() bool {
		got, _ := h.rdb.Get(context.Background(), "cache:course_analytics:42").Result()
		return got == `{"course": "fresh"}`
	})
	ttl := h.rdb.TTL(context.Background(), "cache:course_analytics:42").Val()
	if ttl <= 0 || ttl > 60*time.Second {
		t.Errorf("TTL = %s, want in (0, 60s]", ttl)
	}
	if h.exists("cache:course_analytics:42:x") {
		t.Error("sub-key not invalidated")
	}
	h.eventually("trigger sent", 10*time.Second, func() bool { return obs.get(warm.Triggered) == 1 })
	if gotAuth.Load() != "Bearer s3cret" || gotBypass.Load() != "1" {
		t.Errorf("headers: Authorization %q, X-Cache-Bypass %q", gotAuth.Load(), gotBypass.Load())
	}

	// Values that mean something in a URL are escaped, not interpreted.
	const odd = "../x%y#z&a=b+c"
	h.publish("events.course.updated", map[string]any{"course_id": odd})
	h.eventually("odd key warmed", 10*time.Second, func() bool { return h.exists("cache:course_analytics:" + odd) })
	want := "/api/v3/analytics/courses/..%2Fx%25y%23z%26a%3Db%2Bc"
	found := false
	for _, u := range src.uris() {
		found = found || u == want
	}
	if !found {
		t.Errorf("requests %q, want one for %q", src.uris(), want)
	}
	if n := countPrefix(src.uris(), "/api/v3/system/stats"); n != 2 {
		t.Errorf("trigger URL hit %d times for 2 events, want 2", n)
	}
	_ = r
}

// A value safe in a key but not in a URL (course ".."): the event's keys
// are invalidated as without warm rules, only the warm request whose URL
// holds it is skipped, with a ⚠️ line and the skipped_unsafe outcome; the
// trigger without the value is still sent, and nothing is dead-lettered.
func TestWarmTargetUnsafeInURLStillInvalidates(t *testing.T) {
	src := newSource(t, jsonBody(`{"course": "fresh"}`))
	h := newHarness(t)
	h.rules = warmRules(t, src.URL)
	h.set("cache:course_analytics:..", "cache:course_analytics:..:x", "cache:course_analytics:4")
	var logs logBuffer
	obs := &warmCounts{}
	warmer := newWarmer(t, h.rdb, warm.Config{Env: map[string]string{"WARM_TOKEN": "t"}},
		slog.New(slog.NewTextHandler(&logs, nil)), obs)
	eng := newEngine(t, h.rdb, engine.Config{Generations: true})
	r := h.start(testConfig(), worker.Deps{Engine: eng, Warmer: warmer})

	h.publish("events.course.updated", map[string]any{"course_id": ".."})
	h.eventually("the trigger sent", 10*time.Second, func() bool { return obs.get(warm.Triggered) == 1 })
	if h.exists("cache:course_analytics:..") || h.exists("cache:course_analytics:..:x") || !h.exists("cache:course_analytics:4") {
		t.Error("course ..'s keys not invalidated, or a neighbour removed")
	}
	if n := obs.get(warm.SkippedUnsafe); n != 1 {
		t.Errorf("skipped_unsafe counted %d times, want 1", n)
	}
	if n := countPrefix(src.uris(), "/api/v3/analytics/"); n != 0 {
		t.Errorf("%d requests for the unsafe URL: %q", n, src.uris())
	}
	if !strings.Contains(logs.String(), "⚠️ warm request skipped") || !strings.Contains(logs.String(), "relative path segment") {
		t.Errorf("no ⚠️ line for the skipped target:\n%s", logs.String())
	}
	if st := r.w.Stats(); st.DeadLettered != 0 || st.Applied != 1 {
		t.Errorf("stats %+v, want 1 applied and none dead-lettered", st)
	}
}

func countPrefix(list []string, prefix string) int {
	n := 0
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// warmCounts counts warm outcomes.
type warmCounts struct {
	mu        sync.Mutex
	n         map[warm.Outcome]int
	scheduled int
}

func (c *warmCounts) WarmDone(o warm.Outcome, _ time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[warm.Outcome]int{}
	}
	c.n[o]++
}

func (c *warmCounts) ScheduledRefresh(string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scheduled++
}

func (c *warmCounts) get(o warm.Outcome) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[o]
}

// Requests for one key while its fetch runs cause one more fetch, not one each.
func TestWarmCoalescesRequestsForOneKey(t *testing.T) {
	h := newHarness(t)
	gate := make(chan struct{})
	started := make(chan struct{}, 10)
	src := newSource(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-gate
		jsonBody(`{}`)(w, r)
	})
	obs := &warmCounts{}
	warmer := newWarmer(t, h.rdb, warm.Config{}, nil, obs)
	startWarmer(t, warmer)
	req := cachekeys.WarmRequest{Key: "cache:k:1", URL: src.URL + "/k/1", Host: src.Listener.Addr().String(), TTL: time.Minute}
	warmer.Enqueue([]cachekeys.WarmRequest{req})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("first fetch did not start")
	}
	for range 10 {
		warmer.Enqueue([]cachekeys.WarmRequest{req})
	}
	close(gate)
	h.eventually("two stores", 10*time.Second, func() bool { return obs.get(warm.Stored) == 2 })
	// Nothing more comes: the state is gone once the second fetch is done.
	warmer.Enqueue(nil)
	if n := src.hits.Load(); n != 2 {
		t.Errorf("source hit %d times for 11 requests during one fetch, want 2", n)
	}
}

// A failing source opens its breaker: requests are then shed, not sent.
func TestWarmBreakerOpensOnAFailingSource(t *testing.T) {
	h := newHarness(t)
	src := newSource(t, func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
	obs := &warmCounts{}
	warmer := newWarmer(t, h.rdb, warm.Config{BreakerFailures: 3, BreakerCooldown: time.Hour}, nil, obs)
	host := src.Listener.Addr().String()
	ctx := context.Background()
	for i := range 10 {
		warmer.Warm(ctx, cachekeys.WarmRequest{Key: fmt.Sprintf("cache:k:%d", i), URL: src.URL + "/x", Host: host, TTL: time.Minute})
	}
	if got := src.hits.Load(); got != 3 {
		t.Errorf("source hit %d times, want 3 (then the breaker opens)", got)
	}
	if obs.get(warm.Failed) != 3 || obs.get(warm.Shed) != 7 || !warmer.Open(host) {
		t.Errorf("outcomes %v, open %v: want 3 failed, 7 shed, breaker open", obs.n, warmer.Open(host))
	}
	if open := warmer.OpenHosts(); !slices.Equal(open, []string{host}) {
		t.Errorf("OpenHosts %v, want [%s]", open, host)
	}
	// Only the generation claims taken before each fetch may be there.
	if keys := h.rdb.Keys(ctx, "*").Val(); slices.ContainsFunc(keys, func(k string) bool { return !strings.HasPrefix(k, guard.KeyPrefix) }) {
		t.Errorf("a failed warm wrote a key: %v", keys)
	}
}

// Two replicas running one schedule refresh once per interval between them,
// and stop with nothing left running (goleak checks the rest).
func TestScheduleRunsOncePerIntervalAcrossReplicas(t *testing.T) {
	h := newHarness(t)
	src := newSource(t, jsonBody(`{"stats": 1}`))
	rules := warmRules(t, src.URL)
	obs := &warmCounts{}
	ctx, cancel := context.WithCancel(context.Background())
	first := time.Now().Unix() // the 1s schedule's interval numbers are Unix seconds
	var wg sync.WaitGroup
	for range 2 {
		warmer := newWarmer(t, h.rdb, warm.Config{}, nil, obs)
		s := warm.NewScheduler(warmer, rules.Schedules())
		wg.Go(func() { s.Run(ctx) })
	}
	h.eventually("three refreshes", 15*time.Second, func() bool { return obs.get(warm.Stored) >= 3 })
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("schedulers did not stop")
	}
	// Refreshes are claimed for the intervals after the start: with two
	// replicas each refreshing, there would be about two per interval.
	intervals := time.Now().Unix() - first
	if hits := src.hits.Load(); hits > intervals || hits < 3 {
		t.Errorf("%d refreshes over %d intervals with two replicas, want at most one per interval", hits, intervals)
	}
	if int(src.hits.Load()) != obs.scheduled {
		t.Errorf("%d source hits, %d scheduled refreshes", src.hits.Load(), obs.scheduled)
	}
	if v, _ := h.rdb.Get(context.Background(), "cache:system_stats:global").Result(); v != `{"stats": 1}` {
		t.Errorf("scheduled key = %q", v)
	}
}

// newWarmer is warm.New for tests: an error fails the test.
func newWarmer(tb testing.TB, rdb redis.UniversalClient, cfg warm.Config, log *slog.Logger, obs warm.Observer) *warm.Warmer {
	tb.Helper()
	cfg.Logger = log
	w, err := warm.New(rdb, cfg, obs)
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

// logBuffer is a bytes.Buffer a logger and the test share.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
