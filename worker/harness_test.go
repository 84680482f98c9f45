package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// harness holds the real servers of one test and the worker under test.
type harness struct {
	t     testing.TB
	redis *servers.Redis
	rdb   *redis.Client
	ns    *server.Server
	js    jetstream.JetStream
	pub   *events.Publisher
	rules *cachekeys.Rules
}

func newHarness(t testing.TB, ropts ...testserver.RedisOption) *harness {
	t.Helper()
	ns := testserver.NATS(t)
	_, js := testserver.JetStream(t, ns)
	h := newHarnessOn(t, js, ropts...)
	h.ns = ns
	return h
}

// natsKinds are the NATS servers the tests that depend on server behaviour
// run against: the embedded one (go.mod's version) and the nats-server
// binary on PATH (Debian's 2.9, which users run).
var natsKinds = []struct {
	name  string
	start func(t testing.TB) jetstream.JetStream
}{
	{"embedded", func(t testing.TB) jetstream.JetStream {
		_, js := testserver.JetStream(t, testserver.NATS(t))
		return js
	}},
	{"binary", func(t testing.TB) jetstream.JetStream {
		n := testserver.NATSBinary(t)
		t.Logf("nats-server %s from PATH", n.Version())
		_, js := testserver.JetStreamURL(t, n.URL())
		return js
	}},
}

// newHarnessOn is newHarness on a JetStream of the caller's choosing; its
// ns is nil.
func newHarnessOn(t testing.TB, js jetstream.JetStream, ropts ...testserver.RedisOption) *harness {
	t.Helper()
	r := testserver.Redis(t, ropts...)
	pub, err := events.NewPublisher(js, events.WithSource("test"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := cachekeys.Load("../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, redis: r, rdb: testserver.RedisClient(t, r), js: js, pub: pub, rules: rules}
}

// acl sets the ACL rules of the user "invalidator" (password "pw").
func (h *harness) acl(rules ...any) {
	h.t.Helper()
	if err := h.rdb.Do(context.Background(), append([]any{"ACL", "SETUSER", "invalidator"}, rules...)...).Err(); err != nil {
		h.t.Fatal(err)
	}
}

// user creates the user "invalidator" with every permission and returns a
// client logged in as it; acl changes its permissions.
func (h *harness) user() *redis.Client {
	h.t.Helper()
	h.acl("on", ">pw", "~*", "+@all")
	return testserver.RedisClientAs(h.t, h.redis, "invalidator", "pw")
}

// testConfig is a worker config with short delays, for tests.
func testConfig() worker.Config { return testserver.WorkerConfig() }

// running is a worker started by start; stop cancels it and waits for Run.
type running struct {
	w      *worker.Worker
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			t.Fatal("worker did not stop within 30s")
		}
	})
	return r.err
}

// start runs a worker until the test ends (or stop is called).
func (h *harness) start(cfg worker.Config, deps worker.Deps) *running {
	h.t.Helper()
	if deps.JetStream == nil {
		deps.JetStream = h.js
	}
	if deps.Redis == nil {
		deps.Redis = h.rdb
	}
	if deps.Rules == nil {
		deps.Rules = h.rules
	}
	w, err := worker.New(cfg, deps)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	h.t.Cleanup(func() { _ = r.stop(h.t) })
	h.eventually("consumer is set up", 10*time.Second, func() bool { return w.Consumer() != nil })
	return r
}

func (h *harness) publish(subject string, data map[string]any) uint64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seq, err := h.pub.Publish(ctx, subject, data)
	if err != nil {
		h.t.Fatalf("publish %s: %v", subject, err)
	}
	return seq
}

// eventually polls cond until it holds or within has passed.
func (h *harness) eventually(what string, within time.Duration, cond func() bool) {
	h.t.Helper()
	testserver.Eventually(h.t, what, within, cond)
}

// set writes keys with a pipeline.
func (h *harness) set(keys ...string) {
	h.t.Helper()
	ctx := context.Background()
	pipe := h.rdb.Pipeline()
	for i, k := range keys {
		pipe.Set(ctx, k, "v", 0)
		if i%10000 == 9999 {
			if _, err := pipe.Exec(ctx); err != nil {
				h.t.Fatal(err)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		h.t.Fatal(err)
	}
}

func (h *harness) exists(key string) bool {
	h.t.Helper()
	n, err := h.rdb.Exists(context.Background(), key).Result()
	if err != nil {
		h.t.Fatal(err)
	}
	return n == 1
}

func (h *harness) dbsize() int64 {
	h.t.Helper()
	n, err := h.rdb.DBSize(context.Background()).Result()
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// consumerIdle reports whether the consumer has delivered and had acked
// every message of the stream.
func (h *harness) consumerIdle(w *worker.Worker) bool {
	c := w.Consumer()
	if c == nil {
		return false
	}
	info, err := c.Info(context.Background())
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// deadLetters returns the messages of the dead-letter stream.
func (h *harness) deadLetters() []*jetstream.RawStreamMsg {
	h.t.Helper()
	ctx := context.Background()
	s, err := h.js.Stream(ctx, worker.DefaultDeadLetterStream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			h.t.Fatalf("get dead letter %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

func numbered(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
	}
	return keys
}

func course(id any) map[string]any { return map[string]any{"course_id": fmt.Sprint(id)} }

func itoa(i int) string { return strconv.Itoa(i) }

func headers(ms []*jetstream.RawStreamMsg) []map[string][]string {
	var out []map[string][]string
	for _, m := range ms {
		out = append(out, m.Header)
	}
	return out
}

// newEngine is engine.NewRedis for tests: an error fails the test.
func newEngine(tb testing.TB, rdb *redis.Client, cfg engine.Config) *engine.Redis {
	tb.Helper()
	e, err := engine.NewRedis(rdb, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}
