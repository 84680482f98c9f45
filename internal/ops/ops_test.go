package ops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/ops"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	redis.SetLogger(discard{}) // the outage test makes go-redis log every refused dial
	goleak.VerifyTestMain(m)
}

type discard struct{}

func (discard) Printf(context.Context, string, ...any) {}

func TestHealthEndpoints(t *testing.T) {
	s := newSystem(t, options{})
	for _, path := range []string{"/health", "/health/ready"} {
		r := s.do(http.MethodGet, path, "", nil)
		if r.code != http.StatusOK {
			t.Errorf("GET %s = %d, want 200: %s", path, r.code, r.body)
		}
		v := r.json(t)
		checks, _ := v["checks"].(map[string]any)
		if v["status"] != "healthy" || checks["redis"] != "ok" || checks["nats"] != "ok" {
			t.Errorf("GET %s = %s, want healthy with redis and nats ok", path, r.body)
		}
	}
	r := s.do(http.MethodGet, "/health/live", "", nil)
	if r.code != http.StatusOK || r.json(t)["status"] != "alive" {
		t.Errorf("GET /health/live = %d %s, want 200 alive", r.code, r.body)
	}
}

// /health follows Redis: 503 with a short error (no URL, no password) while
// redis-server is stopped, 200 again once it is back; redis_up follows too.
func TestHealthFollowsRedisOutage(t *testing.T) {
	const password = "hunter2-secret"
	s := newSystem(t, options{redisPassword: password})
	if r := s.do(http.MethodGet, "/health", "", nil); r.code != http.StatusOK {
		t.Fatalf("GET /health before the outage = %d: %s", r.code, r.body)
	}

	if err := s.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	var down response
	s.eventually("/health is 503", 10*time.Second, func() bool {
		down = s.do(http.MethodGet, "/health", "", nil)
		return down.code == http.StatusServiceUnavailable
	})
	v := down.json(t)
	checks, _ := v["checks"].(map[string]any)
	redisCheck, _ := checks["redis"].(string)
	if v["status"] != "unhealthy" || checks["nats"] != "ok" || redisCheck == "" || redisCheck == "ok" {
		t.Errorf("GET /health during the outage = %s, want unhealthy with a redis error and nats ok", down.body)
	}
	for _, secret := range []string{"://", password, s.redis.Addr()} {
		if strings.Contains(string(down.body), secret) {
			t.Errorf("GET /health during the outage leaks %q: %s", secret, down.body)
		}
	}
	if len(redisCheck) > 120 {
		t.Errorf("redis check is %d bytes, want a short error: %q", len(redisCheck), redisCheck)
	}
	if r := s.do(http.MethodGet, "/health/ready", "", nil); r.code != http.StatusServiceUnavailable {
		t.Errorf("GET /health/ready during the outage = %d, want 503", r.code)
	}
	if r := s.do(http.MethodGet, "/health/live", "", nil); r.code != http.StatusOK {
		t.Errorf("GET /health/live during the outage = %d, want 200: liveness must not depend on Redis", r.code)
	}
	s.eventually("redis_up is 0", 10*time.Second, func() bool {
		v, ok := s.scrape().value("invalidator_redis_up", nil)
		return ok && v == 0
	})

	if err := s.redis.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.eventually("/health is 200 again", 15*time.Second, func() bool {
		return s.do(http.MethodGet, "/health", "", nil).code == http.StatusOK
	})
	s.eventually("redis_up is 1 again", 15*time.Second, func() bool {
		v, ok := s.scrape().value("invalidator_redis_up", nil)
		return ok && v == 1
	})
	if got := s.scrape().get("invalidator_redis_state_changes_total", nil); got < 2 {
		t.Errorf("redis_state_changes_total = %v, want at least 2 (down, up)", got)
	}
}

var (
	humanBytes = regexp.MustCompile(`^\d+(\.\d+)?[BKMGT]$`)
	percent    = regexp.MustCompile(`^\d{1,3}\.\d%$`)
)

func TestDetailedHealth(t *testing.T) {
	s := newSystem(t, options{})
	s.set("cache:course_analytics:7", "cache:course_analytics:7:a", "cache:course_analytics:7:b", "keep:me")
	s.publish("events.course.updated", map[string]any{"course_id": "7"})
	s.eventually("event applied", 20*time.Second, func() bool { return s.w.Stats().Applied == 1 })

	r := s.api(http.MethodGet, "/api/v3/system/health/detailed")
	if r.code != http.StatusOK {
		t.Fatalf("GET detailed = %d: %s", r.code, r.body)
	}
	var got struct {
		Status     string `json:"status"`
		Components struct {
			Redis struct {
				Status           string `json:"status"`
				Version          string `json:"version"`
				ConnectedClients *int64 `json:"connected_clients"`
				UsedMemory       string `json:"used_memory"`
				HitRate          string `json:"hit_rate"`
			} `json:"redis"`
			NATS struct {
				Status        string `json:"status"`
				ServerVersion string `json:"server_version"`
				Stream        *struct {
					Name     string `json:"name"`
					Messages uint64 `json:"messages"`
					Bytes    uint64 `json:"bytes"`
				} `json:"stream"`
				Consumer *struct {
					Name        string  `json:"name"`
					Pending     *uint64 `json:"pending"`
					AckPending  *int    `json:"ack_pending"`
					Redelivered *int    `json:"redelivered"`
				} `json:"consumer"`
			} `json:"nats"`
			Worker struct {
				Concurrency        int     `json:"concurrency"`
				Busy               *int64  `json:"busy"`
				EventsApplied      int64   `json:"events_applied"`
				EventsDeadLettered *int64  `json:"events_dead_lettered"`
				KeysRemoved        int64   `json:"keys_removed"`
				LastEventAt        *string `json:"last_event_at"`
			} `json:"worker"`
		} `json:"components"`
	}
	decode(t, r.body, &got)
	c := got.Components
	if got.Status != "healthy" {
		t.Errorf("status = %q, want healthy", got.Status)
	}

	info, err := s.rdb.InfoMap(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.Status != "ok" || c.Redis.Version != info["Server"]["redis_version"] || c.Redis.ConnectedClients == nil ||
		*c.Redis.ConnectedClients < 1 || !humanBytes.MatchString(c.Redis.UsedMemory) || !percent.MatchString(c.Redis.HitRate) {
		t.Errorf("redis component = %+v, want ok, version %s, clients >= 1, human memory, hit rate NN.N%%",
			c.Redis, info["Server"]["redis_version"])
	}

	if c.NATS.Status != "ok" || c.NATS.ServerVersion == "" {
		t.Errorf("nats component = %+v, want ok with a server version", c.NATS)
	}
	if st := c.NATS.Stream; st == nil || st.Name != "EVENTS" || st.Messages != 1 || st.Bytes == 0 {
		t.Errorf("nats stream = %+v, want EVENTS with 1 message and its bytes", st)
	}
	if cons := c.NATS.Consumer; cons == nil || cons.Name != "invalidator" || cons.Pending == nil ||
		cons.AckPending == nil || cons.Redelivered == nil || *cons.Pending != 0 {
		t.Errorf("nats consumer = %+v, want invalidator with pending 0, ack_pending and redelivered", cons)
	}

	wk := c.Worker
	if wk.Concurrency != 4 || wk.Busy == nil || wk.EventsApplied != 1 || wk.EventsDeadLettered == nil ||
		*wk.EventsDeadLettered != 0 || wk.KeysRemoved != 3 || wk.LastEventAt == nil {
		t.Errorf("worker component = %+v, want concurrency 4, 1 applied, 0 dead-lettered, 3 keys removed, a last event time", wk)
	} else if _, err := time.Parse(time.RFC3339Nano, *wk.LastEventAt); err != nil {
		t.Errorf("last_event_at %q: %v", *wk.LastEventAt, err)
	}
}

func TestRedisStats(t *testing.T) {
	s := newSystem(t, options{})
	ctx := context.Background()
	s.set("stats:a", "stats:b")
	before := redisStats(t, s)

	for _, k := range []string{"stats:a", "stats:b", "stats:a"} {
		if err := s.rdb.Get(ctx, k).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.rdb.Get(ctx, "stats:missing").Err(); err != redis.Nil {
		t.Fatalf("GET stats:missing: %v, want redis.Nil", err)
	}
	after := redisStats(t, s)

	info, err := s.rdb.InfoMap(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	if after.Version != info["Server"]["redis_version"] {
		t.Errorf("version = %q, want %q", after.Version, info["Server"]["redis_version"])
	}
	if after.UptimeSeconds < 0 || after.ConnectedClients < 1 || after.UsedMemory <= 0 ||
		!humanBytes.MatchString(after.UsedMemoryHuman) {
		t.Errorf("stats = %+v, want uptime >= 0, clients >= 1, used memory > 0 with a human form", after)
	}
	if after.TotalCommands <= before.TotalCommands {
		t.Errorf("total_commands_processed %d -> %d, want it to grow", before.TotalCommands, after.TotalCommands)
	}
	if d := after.KeyspaceHits - before.KeyspaceHits; d != 3 {
		t.Errorf("keyspace_hits grew by %d, want 3", d)
	}
	if d := after.KeyspaceMisses - before.KeyspaceMisses; d != 1 {
		t.Errorf("keyspace_misses grew by %d, want 1", d)
	}
	want := fmt.Sprintf("%.1f%%", 100*float64(after.KeyspaceHits)/float64(after.KeyspaceHits+after.KeyspaceMisses))
	if after.HitRate != want {
		t.Errorf("hit_rate = %q, want %q", after.HitRate, want)
	}
}

type stats struct {
	Version          string `json:"version"`
	UptimeSeconds    int64  `json:"uptime_seconds"`
	ConnectedClients int64  `json:"connected_clients"`
	UsedMemory       int64  `json:"used_memory"`
	UsedMemoryHuman  string `json:"used_memory_human"`
	TotalCommands    int64  `json:"total_commands_processed"`
	KeyspaceHits     int64  `json:"keyspace_hits"`
	KeyspaceMisses   int64  `json:"keyspace_misses"`
	HitRate          string `json:"hit_rate"`
}

func redisStats(t *testing.T, s *system) stats {
	t.Helper()
	r := s.api(http.MethodGet, "/api/v3/system/redis/stats")
	if r.code != http.StatusOK {
		t.Fatalf("GET redis/stats = %d: %s", r.code, r.body)
	}
	var st stats
	decode(t, r.body, &st)
	return st
}

// The self-test writes, reads and deletes its own key and leaves the
// keyspace exactly as it was, even when run several times at once.
func TestRedisSelfTestLeavesKeyspaceAsItWas(t *testing.T) {
	s := newSystem(t, options{})
	ctx := context.Background()
	s.set("cache:course_analytics:1", "user:9", "invalidator:other")
	if err := s.rdb.Set(ctx, "ttl:key", "v", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.HSet(ctx, "hash:key", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	beforeSize, beforeKeys := s.dbsize(), s.keyspace()

	const runs = 5
	results := make([]response, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() { results[i] = s.api(http.MethodPost, "/api/v3/system/redis/test") })
	}
	wg.Wait()

	seen := map[string]bool{}
	for i, r := range results {
		if r.code != http.StatusOK {
			t.Errorf("run %d: POST redis/test = %d: %s", i, r.code, r.body)
			continue
		}
		var got struct {
			OK         bool   `json:"ok"`
			Key        string `json:"key"`
			Operations map[string]struct {
				OK        bool     `json:"ok"`
				LatencyMS *float64 `json:"latency_ms"`
				Error     string   `json:"error"`
			} `json:"operations"`
		}
		decode(t, r.body, &got)
		if !got.OK || !strings.HasPrefix(got.Key, ops.SelfTestPrefix) || len(got.Key) == len(ops.SelfTestPrefix) {
			t.Errorf("run %d: %s, want ok with a key under %s", i, r.body, ops.SelfTestPrefix)
		}
		if seen[got.Key] {
			t.Errorf("run %d reused key %s", i, got.Key)
		}
		seen[got.Key] = true
		for _, op := range []string{"set", "get", "delete"} {
			o, ok := got.Operations[op]
			if !ok || !o.OK || o.LatencyMS == nil || *o.LatencyMS < 0 || o.Error != "" {
				t.Errorf("run %d: operation %s = %+v, want ok with a latency", i, op, o)
			}
		}
	}

	if got := s.dbsize(); got != beforeSize {
		t.Errorf("DBSIZE = %d after the self-test, want %d", got, beforeSize)
	}
	if got := s.keyspace(); !slices.Equal(got, beforeKeys) {
		t.Errorf("keyspace after the self-test = %v, want %v", got, beforeKeys)
	}
	left, err := s.rdb.Keys(ctx, ops.SelfTestPrefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("self-test keys left behind: %v", left)
	}
	if ttl, err := s.rdb.TTL(ctx, "ttl:key").Result(); err != nil || ttl <= 0 {
		t.Errorf("TTL of ttl:key = %v, %v: the self-test touched another key", ttl, err)
	}
}

// A known batch moves the counters of /metrics by exactly its events and keys.
func TestMetricsCountAKnownBatch(t *testing.T) {
	s := newSystem(t, options{})
	// Each course has 1 exact key and 2 keys under its pattern; the 2
	// system_stats keys go with the first course event. Course 6 and the
	// others are not named by any event and stay.
	var keys []string
	for id := 1; id <= 6; id++ {
		c := "cache:course_analytics:" + strconv.Itoa(id)
		keys = append(keys, c, c+":summary", c+":page:1")
	}
	keys = append(keys, "cache:system_stats:global", "cache:system_stats:daily", "user:123", "user:123:profile", "other:1")
	s.set(keys...)
	const wantRemoved = 5*3 + 2
	beforeSize := s.dbsize()
	base := s.scrape()

	for id := 1; id <= 5; id++ {
		s.publish("events.course.updated", map[string]any{"course_id": strconv.Itoa(id)})
	}
	s.publish("events.course.updated", map[string]any{"course_id": "*"})       // glob in a key: rejected
	s.publish("events.user.updated", map[string]any{"user_id": "123:profile"}) // separator in a key: rejected
	s.publish("events.unknown.thing", map[string]any{"x": "1"})                // no rule: acked once, never redelivered

	var now scrape
	delta := func(name string, labels map[string]string) float64 {
		return now.get(name, labels) - base.get(name, labels)
	}
	s.eventually("8 events settled in /metrics", 20*time.Second, func() bool {
		now = s.scrape()
		return delta("invalidator_events_total", outcome("applied")) == 5 &&
			delta("invalidator_events_total", outcome("dead_lettered")) == 2 &&
			delta("invalidator_events_total", outcome("unrouted")) == 1
	})
	s.eventually("consumer idle", 30*time.Second, func() bool {
		now = s.scrape()
		return now.get("invalidator_consumer_pending", nil) == 0 && now.get("invalidator_consumer_ack_pending", nil) == 0
	})

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"invalidator_events_total", outcome("applied"), 5},
		{"invalidator_events_total", outcome("dead_lettered"), 2},
		{"invalidator_events_total", outcome("unrouted"), 1},
		{"invalidator_events_total", outcome("retried"), 0},
		{"invalidator_events_total", outcome("abandoned"), 0},
		{"invalidator_rule_events_total", map[string]string{"rule": "events.course.*", "outcome": "applied"}, 5},
		{"invalidator_rule_events_total", map[string]string{"rule": "none", "outcome": "unrouted"}, 1},
		{"invalidator_keys_removed_total", nil, wantRemoved},
	} {
		if got := delta(c.name, c.labels); got != c.want {
			t.Errorf("%s %v grew by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := now.sum("invalidator_rule_events_total", outcome("dead_lettered")) -
		base.sum("invalidator_rule_events_total", outcome("dead_lettered")); got != 2 {
		t.Errorf("rule_events_total{outcome=dead_lettered} summed over rules grew by %v, want 2", got)
	}
	if got := delta("invalidator_scan_calls_total", nil); got <= 0 {
		t.Errorf("scan_calls_total grew by %v, want > 0", got)
	}
	if got := delta("invalidator_scan_keys_total", nil); got < 5*2 {
		t.Errorf("scan_keys_total grew by %v, want at least the 10 keys under the course patterns", got)
	}
	for _, h := range []string{"invalidator_event_duration_seconds", "invalidator_event_lag_seconds"} {
		if got := now.histogramCount(h) - base.histogramCount(h); got != 5 {
			t.Errorf("%s count grew by %d, want 5 (applied events)", h, got)
		}
	}
	for name, want := range map[string]float64{
		"invalidator_redis_up": 1, "invalidator_nats_up": 1, "invalidator_workers": 4,
		"invalidator_consumer_pending": 0, "invalidator_consumer_ack_pending": 0,
	} {
		if got, ok := now.value(name, nil); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	for _, name := range []string{"invalidator_busy_workers", "invalidator_consumer_redelivered",
		"go_goroutines", "go_memstats_alloc_bytes", "process_start_time_seconds"} {
		if _, ok := now[name]; !ok {
			t.Errorf("%s missing from /metrics", name)
		}
	}

	if got := s.dbsize(); got != beforeSize-wantRemoved {
		t.Errorf("DBSIZE = %d, want %d", got, beforeSize-wantRemoved)
	}
	if st := s.w.Stats(); st.KeysRemoved != wantRemoved {
		t.Errorf("worker stats keys removed = %d, want %d", st.KeysRemoved, wantRemoved)
	}
}

// With OPS_TOKEN set every /api/v3/... needs the bearer token, while
// /health* and /metrics stay open.
func TestTokenGuard(t *testing.T) {
	const token = "s3cr3t-token"
	s := newSystem(t, options{token: token})
	apis := []struct {
		method, path string
		wantCode     int // with the right token
	}{
		{http.MethodGet, "/api/v3/system/health/detailed", http.StatusOK},
		{http.MethodGet, "/api/v3/system/redis/stats", http.StatusOK},
		{http.MethodPost, "/api/v3/system/redis/test", http.StatusOK},
		{http.MethodGet, "/api/v3/system/redis/test", http.StatusMethodNotAllowed},
		{http.MethodGet, "/api/v3/no/such/thing", http.StatusNotFound},
	}
	auths := []struct {
		name, given string
		ok          bool
	}{
		{"no header", "", false},
		{"wrong token", "Bearer wrong", false},
		{"token as a prefix", "Bearer " + token + "x", false},
		{"token without scheme", token, false},
		{"basic scheme", "Basic " + token, false},
		{"right token", "Bearer " + token, true},
		{"lowercase scheme", "bearer " + token, true},
		{"uppercase scheme", "BEARER " + token, true},
		{"right token, wrong scheme", "Bearers " + token, false},
	}
	for _, a := range apis {
		for _, au := range auths {
			t.Run(a.method+" "+a.path+"/"+au.name, func(t *testing.T) {
				r := s.do(a.method, a.path, au.given, nil)
				if !au.ok {
					assertJSONError(t, r, http.StatusUnauthorized)
					if r.header.Get("WWW-Authenticate") == "" {
						t.Error("401 without WWW-Authenticate")
					}
					if strings.Contains(string(r.body), token) {
						t.Errorf("401 body leaks the token: %s", r.body)
					}
					return
				}
				if r.code != a.wantCode {
					t.Errorf("status = %d, want %d: %s", r.code, a.wantCode, r.body)
				}
			})
		}
	}
	for _, path := range []string{"/health", "/health/ready", "/health/live", "/metrics"} {
		if r := s.do(http.MethodGet, path, "", nil); r.code != http.StatusOK {
			t.Errorf("GET %s without a token = %d, want 200: %s", path, r.code, r.body)
		}
	}
}

// Malformed requests get the right 4xx with a JSON error.
func TestMalformedRequests(t *testing.T) {
	s := newSystem(t, options{})
	big := bytes.Repeat([]byte("x"), 1<<20)
	tests := []struct {
		name      string
		method    string
		path      string
		body      func() io.Reader
		wantCode  int
		wantAllow string
	}{
		{name: "unknown path", method: http.MethodGet, path: "/nope", wantCode: http.StatusNotFound},
		{name: "unknown api path", method: http.MethodGet, path: "/api/v3/system/nope", wantCode: http.StatusNotFound},
		{name: "api root", method: http.MethodGet, path: "/api/v3/", wantCode: http.StatusNotFound},
		{name: "POST /health", method: http.MethodPost, path: "/health", wantCode: http.StatusMethodNotAllowed, wantAllow: "GET"},
		{name: "DELETE /health/live", method: http.MethodDelete, path: "/health/live", wantCode: http.StatusMethodNotAllowed, wantAllow: "GET"},
		{name: "POST /metrics", method: http.MethodPost, path: "/metrics", wantCode: http.StatusMethodNotAllowed, wantAllow: "GET"},
		{name: "PUT stats", method: http.MethodPut, path: "/api/v3/system/redis/stats", wantCode: http.StatusMethodNotAllowed, wantAllow: "GET"},
		{name: "POST detailed", method: http.MethodPost, path: "/api/v3/system/health/detailed", wantCode: http.StatusMethodNotAllowed, wantAllow: "GET"},
		{name: "GET self-test", method: http.MethodGet, path: "/api/v3/system/redis/test", wantCode: http.StatusMethodNotAllowed, wantAllow: "POST"},
		{name: "DELETE self-test", method: http.MethodDelete, path: "/api/v3/system/redis/test", wantCode: http.StatusMethodNotAllowed, wantAllow: "POST"},
		{name: "1 MiB body to self-test", method: http.MethodPost, path: "/api/v3/system/redis/test",
			body: func() io.Reader { return bytes.NewReader(big) }, wantCode: http.StatusRequestEntityTooLarge},
		{name: "1 MiB chunked body to self-test", method: http.MethodPost, path: "/api/v3/system/redis/test",
			body: func() io.Reader { return io.MultiReader(bytes.NewReader(big)) }, wantCode: http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != nil {
				body = tt.body()
			}
			r := s.do(tt.method, tt.path, "", body)
			assertJSONError(t, r, tt.wantCode)
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
		})
	}
	if left, err := s.rdb.Keys(context.Background(), ops.SelfTestPrefix+"*").Result(); err != nil || len(left) != 0 {
		t.Errorf("self-test keys after the refused requests: %v, %v", left, err)
	}
}

func decode(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
}

// TestSweepsEndpointAndMetrics follows a paced sweep: while it runs,
// /api/v3/system/sweeps shows the event's patterns and its progress; once
// the event is applied, the walk is idle and the sweep metrics counted the
// pass, the keys examined and one wait per pattern.
func TestSweepsEndpointAndMetrics(t *testing.T) {
	s := newSystem(t, options{scanBudget: 20000})
	keys := make([]string, 0, 60002)
	for i := range 60000 {
		keys = append(keys, "filler:"+strconv.Itoa(i))
	}
	keys = append(keys, "cache:course_analytics:42:summary", "cache:course_analytics:420:summary")
	s.set(keys...)
	if r := s.do(http.MethodGet, "/api/v3/system/sweeps", "", nil); r.code != http.StatusOK || r.json(t)["running"] != 0.0 {
		t.Fatalf("idle: %d %s", r.code, r.body)
	}
	base := s.scrape()
	s.publish("events.course.updated", map[string]any{"course_id": "42"})

	var node map[string]any
	s.eventually("the sweep shows as running", 10*time.Second, func() bool {
		body := s.do(http.MethodGet, "/api/v3/system/sweeps", "", nil).json(t)
		nodes, _ := body["nodes"].([]any)
		if body["running"] != 1.0 || len(nodes) != 1 {
			return false
		}
		node = nodes[0].(map[string]any)
		return node["active_patterns"].(float64) >= 1
	})
	pats := fmt.Sprint(node["patterns"])
	if !strings.Contains(pats, "cache:course_analytics:42:*") {
		t.Errorf("patterns = %s, want the event's", pats)
	}
	if p := node["progress"].(float64); p < 0 || p >= 1 {
		t.Errorf("progress = %v, want a fraction", p)
	}
	s.eventually("event applied", 30*time.Second, func() bool { return s.w.Stats().Applied == 1 })
	if n, _ := s.rdb.Exists(context.Background(), "cache:course_analytics:42:summary").Result(); n != 0 {
		t.Error("course 42's key survived")
	}
	if n, _ := s.rdb.Exists(context.Background(), "cache:course_analytics:420:summary").Result(); n != 1 {
		t.Error("course 420's key was removed")
	}
	s.eventually("walk idle", 10*time.Second, func() bool {
		return s.do(http.MethodGet, "/api/v3/system/sweeps", "", nil).json(t)["running"] == 0.0
	})
	now := s.scrape()
	if d := now.get("invalidator_sweep_passes_total", nil) - base.get("invalidator_sweep_passes_total", nil); d < 1 {
		t.Errorf("sweep_passes_total grew by %v, want at least 1", d)
	}
	if _, ok := now.value("invalidator_sweep_passes_total", map[string]string{"node": s.redis.Addr()}); !ok {
		t.Errorf("no sweep_passes_total series with node=%q", s.redis.Addr())
	}
	// With a server-side MATCH ("cache:*" here) the walk counts COUNT per
	// call, an estimate: Redis visits about COUNT buckets a call.
	if d := now.get("invalidator_sweep_keys_examined_total", nil) - base.get("invalidator_sweep_keys_examined_total", nil); d < 0.8*60000 || d > 1.5*60000 {
		t.Errorf("sweep_keys_examined_total grew by %v, want about the 60000 keys of one pass", d)
	}
	if now.get("invalidator_sweep_active_patterns", nil) != 0 {
		t.Error("sweep_active_patterns is not back to 0")
	}
	if d := now.histogramCount("invalidator_sweep_pattern_wait_seconds") - base.histogramCount("invalidator_sweep_pattern_wait_seconds"); d != 2 {
		t.Errorf("sweep_pattern_wait_seconds_count grew by %v, want 2 (the rule's two patterns)", d)
	}
}

// TestDeadLettersEndpointAndGauge dead-letters two rejected events and one
// malformed one: /api/v3/system/dlq counts them by kind with the oldest's
// age, and the dead_letters gauge shows 3.
func TestDeadLettersEndpointAndGauge(t *testing.T) {
	s := newSystem(t, options{})
	if body := s.do(http.MethodGet, "/api/v3/system/dlq", "", nil).json(t); body["total"] != 0.0 {
		t.Fatalf("before: %v", body)
	}
	s.publish("events.course.updated", map[string]any{"course_id": "*"})
	s.publish("events.user.updated", map[string]any{"user_id": "1:2"})
	if _, err := s.js.Publish(context.Background(), "events.user.updated", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	s.eventually("three letters", 10*time.Second, func() bool {
		body = s.do(http.MethodGet, "/api/v3/system/dlq", "", nil).json(t)
		return body["total"] == 3.0
	})
	kinds, _ := body["by_kind"].(map[string]any)
	if kinds["rejected"] != 2.0 || kinds["malformed"] != 1.0 || body["oldest_age_seconds"].(float64) <= 0 {
		t.Errorf("dlq = %v", body)
	}
	if got := s.scrape().get("invalidator_dead_letters", nil); got != 3 {
		t.Errorf("invalidator_dead_letters = %v, want 3", got)
	}
	if r := s.do(http.MethodPost, "/api/v3/system/dlq", "", nil); r.code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", r.code)
	}
}

// TestReadyShowsARefusedPermission revokes UNLINK from the worker's ACL
// user: /health/ready answers 503 naming the refused permission, while
// /health (Redis and NATS answer) stays 200; granted back, ready is 200
// and the event is applied.
func TestReadyShowsARefusedPermission(t *testing.T) {
	s := newSystem(t, options{aclUser: true})
	ctx := context.Background()
	s.set("user:5")
	if err := s.rdb.Do(ctx, "ACL", "SETUSER", "invalidator", "-unlink").Err(); err != nil {
		t.Fatal(err)
	}
	s.publish("events.user.updated", map[string]any{"user_id": "5"})
	var body map[string]any
	s.eventually("ready reports the pause", 10*time.Second, func() bool {
		r := s.do(http.MethodGet, "/health/ready", "", nil)
		body = r.json(t)
		return r.code == http.StatusServiceUnavailable
	})
	checks, _ := body["checks"].(map[string]any)
	if why, _ := checks["worker"].(string); !strings.Contains(why, "NOPERM") || !strings.Contains(why, "unlink") {
		t.Errorf("ready = %v, want the refused permission named", body)
	}
	if r := s.do(http.MethodGet, "/health", "", nil); r.code != http.StatusOK {
		t.Errorf("/health = %d during a permission pause, want 200 (Redis answers)", r.code)
	}
	if err := s.rdb.Do(ctx, "ACL", "SETUSER", "invalidator", "+unlink").Err(); err != nil {
		t.Fatal(err)
	}
	s.eventually("applied and ready again", 60*time.Second, func() bool {
		return s.w.Stats().Applied == 1 && s.do(http.MethodGet, "/health/ready", "", nil).code == http.StatusOK
	})
	if n := s.rdb.Exists(ctx, "user:5").Val(); n != 0 {
		t.Error("user:5 survived")
	}
}

// A 21 KiB header, over the 16 KiB limit, gets the JSON 431 every other
// error has, from the server as New configures it.
func TestHeaderTooLarge(t *testing.T) {
	srv := ops.New("127.0.0.1:0", ops.Deps{})
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	for _, tt := range []struct {
		name string
		size int
		want int
	}{
		{"21 KiB", 21 << 10, http.StatusRequestHeaderFieldsTooLarge},
		{"15 KiB", 15 << 10, http.StatusNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/nope", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Big", strings.Repeat("x", tt.size))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			assertJSONError(t, response{code: resp.StatusCode, header: resp.Header, body: body}, tt.want)
		})
	}
	http.DefaultClient.CloseIdleConnections()
}
