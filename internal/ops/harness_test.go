package ops_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/metrics"
	"github.com/invalidator/invalidator/internal/ops"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
)

// system is the worker, its metrics and the ops server, against real
// servers. t.Cleanup undoes it in reverse order: HTTP server, worker,
// clients, then the servers.
type system struct {
	t     *testing.T
	redis *servers.Redis
	rdb   *redis.Client
	js    jetstream.JetStream
	pub   *events.Publisher
	w     *worker.Worker
	srv   *httptest.Server
	token string
}

type options struct {
	token         string
	redisPassword string
	scanBudget    int // keys/s of the shared sweep; 0 unlimited
	// aclUser runs the worker as the ACL user "invalidator" (all
	// permissions at first), so a test can revoke one.
	aclUser bool
}

func newSystem(t *testing.T, o options) *system {
	t.Helper()
	var ropts []testserver.RedisOption
	if o.redisPassword != "" {
		ropts = append(ropts, testserver.WithPassword(o.redisPassword))
	}
	r := testserver.Redis(t, ropts...)
	ns := testserver.NATS(t)
	nc, js := testserver.JetStream(t, ns)
	rdb := testserver.RedisClient(t, r)
	wrdb := rdb // the worker's client
	if o.aclUser {
		if err := rdb.Do(context.Background(), "ACL", "SETUSER", "invalidator", "on", ">pw", "~*", "+@all").Err(); err != nil {
			t.Fatal(err)
		}
		wrdb = testserver.RedisClientAs(t, r, "invalidator", "pw")
	}
	rules, err := cachekeys.Load("../../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, events.WithSource("ops-test"))
	if err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	var w *worker.Worker
	letters := deadletter.NewStore(js, worker.DefaultDeadLetterStream, worker.DefaultDeadLetterPrefix)
	m := metrics.New(reg, metrics.Sources{
		Stats:         func() worker.Stats { return w.Stats() },
		NATSConnected: nc.IsConnected,
		Consumer:      func() jetstream.Consumer { return w.Consumer() },
		DeadLetters:   letters.Count,
	})
	eng, err := engine.NewRedis(wrdb, engine.Config{Sweep: sweep.Config{Budget: o.scanBudget}, NodeObserver: m.Node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	wcfg := testConfig()
	var timescales []string // as `invalidator run` wires the checker's metrics
	for _, d := range consistency.DefaultDelays {
		timescales = append(timescales, consistency.Timescale(d))
	}
	wcfg.Consistency.Observer = m.Consistency(timescales)
	w, err = worker.New(wcfg, worker.Deps{JetStream: js, Redis: wrdb, Rules: rules, Engine: eng, Observer: m})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop within 30s")
		}
	})

	srv := httptest.NewServer(ops.New("", ops.Deps{
		Redis: rdb, NATS: nc, JS: js, Worker: w, Gatherer: reg, Token: o.token, Sweeps: eng.Sweeps, DeadLetters: letters,
	}).Handler())
	t.Cleanup(srv.Close)

	s := &system{t: t, redis: r, rdb: rdb, js: js, pub: pub, w: w, srv: srv, token: o.token}
	s.eventually("consumer is set up", 10*time.Second, func() bool { return w.Consumer() != nil })
	return s
}

// testConfig is a worker config with short delays, as in worker's tests.
func testConfig() worker.Config { return testserver.WorkerConfig() }

// eventually polls cond until it holds or within has passed.
func (s *system) eventually(what string, within time.Duration, cond func() bool) {
	s.t.Helper()
	testserver.Eventually(s.t, what, within, cond)
}

// response is one HTTP answer, body read.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// json decodes the body into a generic object.
func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("body is not a JSON object: %v\n%s", err, r.body)
	}
	return v
}

// do sends a request; auth is the Authorization header ("" for none).
func (s *system) do(method, path, auth string, body io.Reader) response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.srv.URL+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: b}
}

// api sends a request to /api/v3/..., with the token if one is set.
func (s *system) api(method, path string) response {
	s.t.Helper()
	auth := ""
	if s.token != "" {
		auth = "Bearer " + s.token
	}
	return s.do(method, path, auth, nil)
}

func (s *system) publish(subject string, data map[string]any) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.pub.Publish(ctx, subject, data); err != nil {
		s.t.Fatalf("publish %s: %v", subject, err)
	}
}

// set writes each key with value "v".
func (s *system) set(keys ...string) {
	s.t.Helper()
	ctx := context.Background()
	pipe := s.rdb.Pipeline()
	for i, k := range keys {
		pipe.Set(ctx, k, "v", 0)
		if i%10000 == 9999 {
			if _, err := pipe.Exec(ctx); err != nil {
				s.t.Fatal(err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.t.Fatal(err)
	}
}

// keyspace is every key of the database, sorted, read with SCAN.
func (s *system) keyspace() []string {
	s.t.Helper()
	var keys []string
	iter := s.rdb.Scan(context.Background(), 0, "*", 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		s.t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

func (s *system) dbsize() int64 {
	s.t.Helper()
	n, err := s.rdb.DBSize(context.Background()).Result()
	if err != nil {
		s.t.Fatal(err)
	}
	return n
}

// scrape reads /metrics and parses it with the Prometheus text parser.
func (s *system) scrape() scrape {
	s.t.Helper()
	r := s.do(http.MethodGet, "/metrics", "", nil)
	if r.code != http.StatusOK {
		s.t.Fatalf("GET /metrics = %d: %s", r.code, r.body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(r.body)))
	if err != nil {
		s.t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// scrape is a parsed /metrics page by metric family name.
type scrape map[string]*dto.MetricFamily

// value is the counter, gauge or untyped value of the series of name whose
// labels include labels; ok is false if there is none.
func (sc scrape) value(name string, labels map[string]string) (float64, bool) {
	for _, m := range sc[name].GetMetric() {
		if !includes(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// get is value, 0 for a missing series (a counter not incremented yet).
func (sc scrape) get(name string, labels map[string]string) float64 {
	v, _ := sc.value(name, labels)
	return v
}

// sum adds the counters of name over every series including labels.
func (sc scrape) sum(name string, labels map[string]string) float64 {
	var total float64
	for _, m := range sc[name].GetMetric() {
		if includes(m, labels) {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func (sc scrape) histogramCount(name string) uint64 {
	ms := sc[name].GetMetric()
	if len(ms) != 1 {
		return 0
	}
	return ms[0].GetHistogram().GetSampleCount()
}

func includes(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := labels[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

func outcome(o string) map[string]string { return map[string]string{"outcome": o} }

// assertJSONError checks a 4xx/5xx answer is JSON with an "error" field.
func assertJSONError(t *testing.T, r response, wantCode int) {
	t.Helper()
	if r.code != wantCode {
		t.Errorf("status = %d, want %d (body %s)", r.code, wantCode, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var v struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.body, &v); err != nil || v.Error == "" {
		t.Errorf("body %q: want a JSON object with a non-empty \"error\" (decode error: %v)", r.body, err)
	}
}
