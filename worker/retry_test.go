package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// failing is an engine that fails the jobs with an exact key under
// "cache:fail:" and passes the others to the real engine: it makes chosen events
// fail the way a Redis error would, without touching Redis' permissions.
type failing struct{ next engine.Engine }

func (f failing) Apply(ctx context.Context, jobs []engine.Job, done func(int, engine.Result, error)) {
	var pass []int
	for i, j := range jobs {
		if len(j.Exact) > 0 && strings.HasPrefix(j.Exact[0], "cache:fail:") {
			done(i, engine.Result{}, fmt.Errorf("chosen to fail: %s", j.Exact[0]))
			continue
		}
		pass = append(pass, i)
	}
	sub := make([]engine.Job, len(pass))
	for k, i := range pass {
		sub[k] = jobs[i]
	}
	f.next.Apply(ctx, sub, func(k int, r engine.Result, err error) { done(pass[k], r, err) })
}

// deliveries records when each delivery of each event was settled.
type deliveries struct {
	mu    sync.Mutex
	times map[string][]time.Time
	outs  map[string][]worker.Outcome
}

func (d *deliveries) EventDone(r worker.Report) {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := fmt.Sprint(r.StreamSeq)
	d.times[key] = append(d.times[key], time.Now())
	d.outs[key] = append(d.outs[key], r.Outcome)
}
func (d *deliveries) RedisUp(bool) {}

func (d *deliveries) of(seq uint64) ([]time.Time, []worker.Outcome) {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := fmt.Sprint(seq)
	return append([]time.Time(nil), d.times[key]...), append([]worker.Outcome(nil), d.outs[key]...)
}

// TestRetryGapsAreTheBackoff measures the gaps between the deliveries of a
// failing event with the production schedule scaled down ten times (nak
// delays 1s, 5s, 15s, 30s and ACK_WAIT 30s become 100ms … 3s and 3s), on
// the embedded server and on the nats-server binary. The gaps must be the
// backoff itself: a consumer BackOff list used to add BackOff[n-1]-AckWait
// to each nak delay (+1s, +35s, +105s, +240s in production). The event is
// dead-lettered once on its 5th delivery and never delivered again, also on
// servers before 2.10.4, which ignore TermWithReason.
func TestRetryGapsAreTheBackoff(t *testing.T) {
	for _, kind := range natsKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			h := newHarnessOn(t, kind.start(t))
			rec := &deliveries{times: map[string][]time.Time{}, outs: map[string][]worker.Outcome{}}
			cfg := testConfig()
			cfg.AckWait = 3 * time.Second
			cfg.Backoff = []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second}
			cfg.MaxDeliver = 5
			cfg.FetchMaxWait = time.Second
			r := h.start(cfg, worker.Deps{Engine: failing{newEngine(t, h.rdb, engine.Config{})}, Observer: rec})
			h.set("user:7", "user:8")
			failSeq := h.publish("events.cache.invalidate", map[string]any{"keys": []any{"cache:fail:1"}})
			okSeq := h.publish("events.user.updated", map[string]any{"user_id": "7"})

			h.eventually("the failing event is dead-lettered", 20*time.Second, func() bool {
				_, outs := rec.of(failSeq)
				return len(outs) > 0 && outs[len(outs)-1] == worker.DeadLettered
			})
			// Wait longer than AckWait: a term the server ignored would show as a redelivery.
			time.Sleep(cfg.AckWait + 2*time.Second)

			times, outs := rec.of(failSeq)
			want := []worker.Outcome{worker.Retried, worker.Retried, worker.Retried, worker.Retried, worker.DeadLettered}
			if fmt.Sprint(outs) != fmt.Sprint(want) {
				t.Fatalf("outcomes of the failing event = %v, want %v", outs, want)
			}
			for i := 1; i < len(times); i++ {
				gap, wantGap := times[i].Sub(times[i-1]), cfg.Backoff[i-1]
				t.Logf("gap after delivery %d: %v (backoff %v)", i, gap.Round(time.Millisecond), wantGap)
				if gap < wantGap-20*time.Millisecond || gap > wantGap+500*time.Millisecond {
					t.Errorf("gap after delivery %d = %v, want the backoff %v (+ at most 500ms)", i, gap, wantGap)
				}
			}
			if _, outs := rec.of(okSeq); fmt.Sprint(outs) != fmt.Sprint([]worker.Outcome{worker.Applied}) || h.exists("user:7") || !h.exists("user:8") {
				t.Errorf("the other event: outcomes %v, user:7 exists %v, user:8 exists %v; want applied once, gone, kept",
					outs, h.exists("user:7"), h.exists("user:8"))
			}
			if dl := h.deadLetters(); len(dl) != 1 || !strings.Contains(dl[0].Header.Get(worker.HeaderError), "chosen to fail: cache:fail:1") {
				t.Errorf("dead letters = %v, want exactly one with the reason", headers(dl))
			}
			info, err := r.w.Consumer().Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if info.NumAckPending != 0 || info.NumRedelivered != 0 {
				t.Errorf("consumer: %d ack pending, %d redelivered; want 0 and 0 (the term was honoured)", info.NumAckPending, info.NumRedelivered)
			}
		})
	}
}

// TestMalformedEventIsDeadLetteredOnce publishes a malformed event on both
// servers: it is dead-lettered once, with its reason, and never redelivered.
func TestMalformedEventIsDeadLetteredOnce(t *testing.T) {
	for _, kind := range natsKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			js := kind.start(t)
			h := newHarnessOn(t, js)
			rec := &deliveries{times: map[string][]time.Time{}, outs: map[string][]worker.Outcome{}}
			cfg := testConfig()
			cfg.AckWait = 2 * time.Second
			r := h.start(cfg, worker.Deps{Observer: rec})
			ack, err := js.Publish(context.Background(), "events.course.updated", []byte(`{"course_id": `))
			if err != nil {
				t.Fatal(err)
			}
			h.eventually("dead-lettered", 10*time.Second, func() bool { _, o := rec.of(ack.Sequence); return len(o) > 0 })
			time.Sleep(cfg.AckWait + 2*time.Second)
			if _, outs := rec.of(ack.Sequence); fmt.Sprint(outs) != fmt.Sprint([]worker.Outcome{worker.DeadLettered}) {
				t.Errorf("outcomes = %v, want one dead letter and no redelivery", outs)
			}
			dl := h.deadLetters()
			if len(dl) != 1 || !strings.Contains(dl[0].Header.Get(worker.HeaderError), "invalid JSON") {
				t.Errorf("dead letters = %v, want one with the reason", headers(dl))
			}
			info, err := r.w.Consumer().Info(context.Background())
			if err != nil || info.NumAckPending != 0 {
				t.Errorf("consumer info %+v, %v: want nothing pending", info, err)
			}
		})
	}
}

// TestSetupUpdatesAnOldConsumer: a consumer created by an older version,
// with a BackOff list, loses it when the worker starts (else the nak delays
// would be wrong).
func TestSetupUpdatesAnOldConsumer(t *testing.T) {
	for _, kind := range natsKinds {
		t.Run(kind.name, func(t *testing.T) {
			js := kind.start(t)
			h := newHarnessOn(t, js)
			ctx := context.Background()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: worker.DefaultStream, Subjects: []string{"events.>"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := js.CreateOrUpdateConsumer(ctx, worker.DefaultStream, jetstream.ConsumerConfig{
				Durable: worker.DefaultConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 2 * time.Second,
				MaxDeliver: 5, BackOff: []time.Duration{2 * time.Second, 4 * time.Second},
			}); err != nil {
				t.Fatal(err)
			}
			r := h.start(testConfig(), worker.Deps{})
			info, err := r.w.Consumer().Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(info.Config.BackOff) != 0 {
				t.Errorf("consumer BackOff = %v after start, want none", info.Config.BackOff)
			}
		})
	}
}

// TestStartedAndSecondRun: Started is closed once the consumer exists, and a
// second Run on the same worker is refused.
func TestStartedAndSecondRun(t *testing.T) {
	h := newHarness(t)
	w, err := worker.New(testConfig(), worker.Deps{JetStream: h.js, Redis: h.rdb, Rules: h.rules})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Started():
		t.Fatal("Started closed before Run")
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-w.Started():
	case <-time.After(10 * time.Second):
		t.Fatal("Started not closed 10s after Run")
	}
	if w.Consumer() == nil {
		t.Error("Started closed, but there is no consumer")
	}
	if err := w.Run(ctx); !errors.Is(err, worker.ErrAlreadyRunning) {
		t.Errorf("second Run = %v, want ErrAlreadyRunning", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// TestNoJetStreamFailsFast: a NATS server without JetStream is a mistake that
// waiting will not heal, so Run returns ErrJetStreamDisabled at once.
func TestNoJetStreamFailsFast(t *testing.T) {
	ns := testserver.NATSWith(t, servers.NATSOptions{NoJetStream: true})
	_, js := testserver.JetStream(t, ns)
	h := newHarnessOn(t, js)
	w, err := worker.New(testConfig(), worker.Deps{JetStream: js, Redis: h.rdb, Rules: h.rules})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = w.Run(ctx)
	if !errors.Is(err, worker.ErrJetStreamDisabled) || !strings.Contains(err.Error(), "-js") {
		t.Fatalf("Run = %v, want ErrJetStreamDisabled with a hint", err)
	}
	if ctx.Err() != nil {
		t.Error("Run waited for its context instead of failing fast")
	}
}

// TestClosedConnectionStopsRun: once the NATS connection is closed for good
// (nats.go gives up after repeated authorization failures, or the caller
// closed it), Run returns an error instead of retrying forever.
func TestClosedConnectionStopsRun(t *testing.T) {
	ns := testserver.NATS(t)
	nc, js := testserver.JetStream(t, ns)
	h := newHarnessOn(t, js)
	w, err := worker.New(testConfig(), worker.Deps{JetStream: js, Redis: h.rdb, Rules: h.rules})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	<-w.Started()
	nc.Close()
	select {
	case err := <-done:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("Run = %v, want an error wrapping nats.ErrConnectionClosed", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run still running 15s after the connection was closed")
	}
}
