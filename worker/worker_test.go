package worker_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	redis.SetLogger(discard{}) // outage tests make go-redis log every refused dial
	// go-redis probes a pool whose dials keep failing (a killed master) in a
	// goroutine of its own, which sleeps 1s between dials and ends at the
	// first one after the pool's Close: still asleep when the last test
	// closed its client less than a second before. The consistency
	// checker's reads during a failover (TestConsistencyCheckerFindsTheLostGeneration)
	// fail often enough to start it.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

type discard struct{}

func (discard) Printf(context.Context, string, ...any) {}

// Course 42's keys go; course 420 and 4, and 100k unrelated keys, stay.
func TestEndToEndRemovesOnlyTheEventsKeys(t *testing.T) {
	h := newHarness(t)
	h.set("cache:course_analytics:42", "cache:course_analytics:420", "cache:course_analytics:4",
		"cache:course_analytics:420:summary", "cache:course_analytics:4:summary",
		"cache:system_stats:global", "user:42", "cache:student_risk:42")
	h.set(numbered("cache:course_analytics:42:page:", 500)...)
	h.set(numbered("unrelated:", 100_000)...)
	before := h.dbsize()

	r := h.start(testConfig(), worker.Deps{})
	h.publish("events.course.updated", course(42))
	h.publish("events.unknown.thing", course(42)) // no rule: acked, nothing removed
	h.eventually("event applied", 20*time.Second, func() bool { return r.w.Stats().Applied == 1 })
	h.eventually("unrouted event settled", 20*time.Second, func() bool { return r.w.Stats().Unrouted == 1 })

	for _, gone := range []string{"cache:course_analytics:42", "cache:course_analytics:42:page:0",
		"cache:course_analytics:42:page:499", "cache:system_stats:global"} {
		if h.exists(gone) {
			t.Errorf("%s still exists", gone)
		}
	}
	for _, kept := range []string{"cache:course_analytics:420", "cache:course_analytics:4",
		"cache:course_analytics:420:summary", "cache:course_analytics:4:summary", "user:42",
		"cache:student_risk:42", "unrelated:0", "unrelated:99999"} {
		if !h.exists(kept) {
			t.Errorf("%s was removed", kept)
		}
	}
	if got, want := h.dbsize(), before-502; got != want {
		t.Errorf("DBSIZE = %d, want %d (exactly 502 keys removed)", got, want)
	}
	if s := r.w.Stats(); s.KeysRemoved != 502 || s.DeadLettered != 0 {
		t.Errorf("stats = %+v, want 502 keys removed and no dead letters", s)
	}
	h.eventually("event acked", 5*time.Second, func() bool { return h.consumerIdle(r.w) })

	info, err := r.w.Consumer().Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Durable != "invalidator" || c.AckPolicy != jetstream.AckExplicitPolicy || c.MaxDeliver != 5 ||
		c.MaxAckPending != 1000 || len(c.BackOff) != 0 {
		t.Errorf("consumer config = durable %q, ack %v, max deliver %d, max ack pending %d, backoff %v",
			c.Durable, c.AckPolicy, c.MaxDeliver, c.MaxAckPending, c.BackOff)
	}
}

// Every form of bad input is dead-lettered with its reason and removes nothing.
func TestBadEventsAreDeadLetteredAndRemoveNothing(t *testing.T) {
	h := newHarness(t)
	h.set("cache:course_analytics:1", "cache:course_analytics:1:x", "user:123", "user:123:profile", "user:1234")
	before := h.dbsize()
	r := h.start(testConfig(), worker.Deps{})

	h.publish("events.course.updated", map[string]any{"course_id": "*"})
	h.publish("events.user.updated", map[string]any{"user_id": "123:profile"})
	h.publish("events.course.updated", map[string]any{"title": "no id"})
	h.publish("events.cache.invalidate", map[string]any{"patterns": []any{"secret:*"}})
	for _, body := range []string{`{"course_id": `, `[1,2]`, `{"specversion":"0.3","id":"x","source":"s","type":"t","data":{}}`} {
		if _, err := h.js.PublishMsg(context.Background(), &nats.Msg{Subject: "events.course.updated", Data: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	const bad = 7
	h.eventually("all dead-lettered", 20*time.Second, func() bool { return r.w.Stats().DeadLettered == bad })

	if got := h.dbsize(); got != before {
		t.Errorf("DBSIZE = %d, want %d: a rejected event removed keys", got, before)
	}
	dl := h.deadLetters()
	if len(dl) != bad {
		t.Fatalf("dead-letter stream holds %d messages, want %d", len(dl), bad)
	}
	// By stream sequence: what the reason must mention.
	wantReasons := map[string]string{"1": "glob metacharacter", "2": "separator", "3": "course_id",
		"4": "secret:*", "5": "malformed", "6": "array", "7": "specversion"}
	for _, m := range dl {
		seq := m.Header.Get(worker.HeaderStreamSeq)
		reason := m.Header.Get(worker.HeaderError)
		if !strings.HasPrefix(m.Subject, "dlq.events.") {
			t.Errorf("dead letter of seq %s has subject %q, want dlq.events.*", seq, m.Subject)
		}
		want, ok := wantReasons[seq]
		if !ok || !strings.Contains(reason, want) {
			t.Errorf("dead letter of seq %q: reason %q, want it to mention %q", seq, reason, want)
		}
		delete(wantReasons, seq)
		if m.Header.Get(worker.HeaderDeliveries) != "1" {
			t.Errorf("dead letter of seq %s after %s deliveries, want 1", seq, m.Header.Get(worker.HeaderDeliveries))
		}
	}
	h.eventually("bad events terminated", 5*time.Second, func() bool { return h.consumerIdle(r.w) })
}

// A permission revoked while events flow (a real NOPERM from an ACL
// change) pauses consumption like an outage: one ❌ line names what is
// missing, Stats.Paused says why, nothing is dead-lettered; once the
// permission is granted back, every event is applied.
func TestRefusedPermissionPausesThenResumes(t *testing.T) {
	h := newHarness(t)
	acl := h.acl
	user := h.user()
	var logs syncLog
	const n = 30
	for i := range n {
		h.set("user:" + itoa(i))
	}
	h.set("user:1000")
	cfg := testConfig()
	cfg.MaxDeliver = 2 // a pause must not burn deliveries
	cfg.Logger = logs.logger()
	var gateOpens atomic.Int64
	r := h.start(cfg, worker.Deps{Redis: user, Engine: newEngine(t, user, engine.Config{}), Observer: upCounter{&gateOpens}})
	for i := range n / 3 {
		h.publish("events.user.updated", map[string]any{"user_id": i})
	}
	h.eventually("first third applied", 10*time.Second, func() bool { return r.w.Stats().Applied == n/3 })

	acl("-unlink")
	for i := n / 3; i < n; i++ {
		h.publish("events.user.updated", map[string]any{"user_id": i})
	}
	h.eventually("paused with the reason", 10*time.Second, func() bool {
		return strings.Contains(r.w.Stats().Paused, "NOPERM") && strings.Contains(r.w.Stats().Paused, "unlink")
	})
	// Several retries come and go while refused: each opens the gate for
	// the held events (RedisUp(true)), and Redis refuses them again.
	opened := gateOpens.Load()
	h.eventually("2 retries refused", 20*time.Second, func() bool {
		return gateOpens.Load() >= opened+2 && strings.Contains(r.w.Stats().Paused, "NOPERM")
	})
	if s := r.w.Stats(); s.DeadLettered != 0 || s.Applied != n/3 {
		t.Fatalf("while refused: %+v, want nothing dead-lettered and nothing more applied", s)
	}
	if !h.exists("user:" + itoa(n-1)) {
		t.Fatal("a key went while UNLINK was refused")
	}
	acl("+unlink")
	h.eventually("all applied once granted", 60*time.Second, func() bool { return r.w.Stats().Applied >= n && r.w.Stats().Paused == "" })
	for i := range n {
		if h.exists("user:" + itoa(i)) {
			t.Fatalf("user:%d survived", i)
		}
	}
	if !h.exists("user:1000") {
		t.Error("user:1000, named by no event, is gone")
	}
	if dl := h.deadLetters(); len(dl) != 0 {
		t.Errorf("dead letters = %v, want none", headers(dl))
	}
	if got := logs.count("Redis refuses a permission"); got != 1 {
		t.Errorf("%d ❌ permission lines, want 1:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), `"missing":"NOPERM`) || logs.count("grants the worker's permissions again") != 1 {
		t.Errorf("log does not name the missing permission or the recovery:\n%s", logs.String())
	}
}

// upCounter counts the times the worker's gate opened.
type upCounter struct{ n *atomic.Int64 }

func (upCounter) EventDone(worker.Report) {}
func (c upCounter) RedisUp(up bool) {
	if up {
		c.n.Add(1)
	}
}

// syncLog collects a JSON log safely from many goroutines.
type syncLog struct{ testproc.Buffer }

func (l *syncLog) count(s string) int { return strings.Count(l.String(), s) }

func (l *syncLog) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(l, nil)) }

// Redis stopped and restarted (AOF) mid-stream: every event published
// meanwhile is applied, none is dead-lettered.
func TestRedisOutageLosesNothing(t *testing.T) {
	h := newHarness(t, testserver.WithAOF())
	const n = 60
	for i := range n {
		h.set("user:"+itoa(i), "user:"+itoa(i)+":profile")
	}
	cfg := testConfig()
	cfg.MaxDeliver = 2 // an outage must not burn deliveries
	r := h.start(cfg, worker.Deps{})
	for i := range n / 3 {
		h.publish("events.user.updated", map[string]any{"user_id": i})
	}
	h.eventually("first third applied", 20*time.Second, func() bool { return r.w.Stats().Applied == n/3 })

	if err := h.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	for i := n / 3; i < n; i++ {
		h.publish("events.user.updated", map[string]any{"user_id": i})
	}
	h.eventually("worker sees Redis down", 10*time.Second, func() bool { return !r.w.Stats().RedisUp })
	time.Sleep(500 * time.Millisecond) // stay down for a while; events must wait, not fail
	if err := h.redis.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// At least n: on a loaded machine an event held past AckWait may be
	// redelivered and applied twice, which is harmless; losing one is not.
	h.eventually("all applied", 30*time.Second, func() bool { return r.w.Stats().Applied >= n && h.dbsize() == 0 })

	if s := r.w.Stats(); s.DeadLettered != 0 {
		t.Errorf("stats = %+v, want no dead letters", s)
	}
	if size := h.dbsize(); size != 0 {
		t.Errorf("DBSIZE = %d after all events, want 0", size)
	}
	if dl := h.deadLetters(); len(dl) != 0 {
		t.Errorf("dead letters = %v, want none", headers(dl))
	}
}

// gatedEngine holds every job until released: a way to have events in flight.
type gatedEngine struct {
	engine.Engine
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGatedEngine(inner engine.Engine) *gatedEngine {
	return &gatedEngine{Engine: inner, started: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gatedEngine) Apply(ctx context.Context, jobs []engine.Job, done func(int, engine.Result, error)) {
	for range jobs {
		g.started <- struct{}{}
	}
	select {
	case <-g.release:
	case <-ctx.Done():
		for i := range jobs {
			done(i, engine.Result{}, ctx.Err())
		}
		return
	}
	g.Engine.Apply(ctx, jobs, done)
}

func (g *gatedEngine) open() { g.once.Do(func() { close(g.release) }) }

// A worker that dies without acking: its events are redelivered to a new
// worker and applied.
func TestKilledWorkerEventsAreRedelivered(t *testing.T) {
	h := newHarness(t)
	h.set("user:1", "user:2", "user:3")
	cfg := testConfig()
	cfg.AckWait = time.Second

	// The first worker has its own connection, which is cut mid-event.
	_, js1 := testserver.JetStream(t, h.ns)
	stuck := newGatedEngine(newEngine(t, h.rdb, engine.Config{}))
	cfg1 := cfg
	cfg1.ShutdownTimeout = 50 * time.Millisecond // the events never finish there
	first := h.start(cfg1, worker.Deps{JetStream: js1, Engine: stuck})
	for i := 1; i <= 3; i++ {
		h.publish("events.user.deleted", map[string]any{"user_id": i})
	}
	for range 3 {
		select {
		case <-stuck.started:
		case <-time.After(10 * time.Second):
			t.Fatal("first worker did not take the events")
		}
	}
	js1.Conn().Close() // killed: no ack, no nak can reach the server
	_ = first.stop(t)
	if s := first.w.Stats(); s.Applied != 0 || !h.exists("user:1") || !h.exists("user:2") || !h.exists("user:3") {
		t.Fatalf("the killed worker applied events (stats %+v)", s)
	}

	second := h.start(cfg, worker.Deps{})
	h.eventually("redelivered and applied", 20*time.Second, func() bool { return second.w.Stats().Applied == 3 })
	for _, k := range []string{"user:1", "user:2", "user:3"} {
		if h.exists(k) {
			t.Errorf("%s still exists", k)
		}
	}
	h.eventually("all acked", 5*time.Second, func() bool { return h.consumerIdle(second.w) })
}

// Shutdown waits for events in flight, acks them, then returns.
func TestShutdownDrainsEventsInFlight(t *testing.T) {
	h := newHarness(t)
	h.set("user:5", "user:5:a", "user:6")
	gated := newGatedEngine(newEngine(t, h.rdb, engine.Config{}))
	r := h.start(testConfig(), worker.Deps{Engine: gated})
	h.publish("events.user.updated", map[string]any{"user_id": 5})
	select {
	case <-gated.started:
	case <-time.After(10 * time.Second):
		t.Fatal("event not taken")
	}
	r.cancel() // SIGTERM
	select {
	case <-r.done:
		t.Fatal("Run returned while an event was in flight")
	case <-time.After(300 * time.Millisecond):
	}
	h.publish("events.user.updated", map[string]any{"user_id": 6}) // after shutdown began: not fetched
	gated.open()
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if h.exists("user:5") || h.exists("user:5:a") {
		t.Error("the in-flight event was not finished")
	}
	if !h.exists("user:6") {
		t.Error("an event published after shutdown began was applied")
	}
	if s := r.w.Stats(); s.Applied != 1 {
		t.Errorf("applied = %d, want 1", s.Applied)
	}
	info, err := r.w.Consumer().Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != 1 || info.NumAckPending != 0 {
		t.Errorf("ack floor %d, ack pending %d: want the in-flight event acked", info.AckFloor.Stream, info.NumAckPending)
	}
}

// NATS stopped and started again on the same port and store: the worker
// reconnects and applies the events published after.
func TestNATSRestartResumes(t *testing.T) {
	h := newHarness(t)
	port, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	opts := servers.NATSOptions{Port: port, StoreDir: t.TempDir()}
	ns, err := servers.StartNATS(opts)
	if err != nil {
		t.Fatal(err)
	}
	stopNATS := func() { ns.Shutdown(); ns.WaitForShutdown() }
	t.Cleanup(func() { stopNATS() })
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	h.js = js
	pub, err := events.NewPublisher(js)
	if err != nil {
		t.Fatal(err)
	}
	h.pub = pub
	h.set("user:1", "user:2")
	r := h.start(testConfig(), worker.Deps{})
	h.publish("events.user.updated", map[string]any{"user_id": 1})
	h.eventually("first event applied", 10*time.Second, func() bool { return r.w.Stats().Applied == 1 })

	stopNATS()
	h.eventually("client sees NATS down", 10*time.Second, func() bool { return !nc.IsConnected() })
	if ns, err = servers.StartNATS(opts); err != nil {
		t.Fatal(err)
	}
	h.eventually("client reconnected", 20*time.Second, nc.IsConnected)
	h.publish("events.user.updated", map[string]any{"user_id": 2})
	h.eventually("event after the restart applied", 30*time.Second, func() bool { return r.w.Stats().Applied == 2 })
	if h.exists("user:1") || h.exists("user:2") {
		t.Error("keys left after both events")
	}
}

// A stream configuration the server refuses stops Run with its reason,
// instead of retrying forever.
func TestRunFailsOnARefusedStream(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"events.>"}}); err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(testConfig(), worker.Deps{JetStream: h.js, Redis: h.rdb, Rules: h.rules})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "overlap") {
			t.Errorf("Run = %v, want the server's reason (subjects overlap)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept retrying a configuration the server refuses")
	}
}
