package worker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
)

// On a 3-server cluster, NATS_STREAM_REPLICAS=3 gives R3 streams (the
// events and the dead letters), each with a leader and two followers; an
// existing R1 stream is used as it is, with a warning naming both values.
func TestStreamReplicasOnNATSCluster(t *testing.T) {
	c := testserver.NATSCluster(t)
	_, js := testserver.JetStreamCluster(t, c.URL())
	h := newHarnessOn(t, js)
	ctx := context.Background()
	setup := func(t *testing.T, name string, log *slog.Logger) {
		t.Helper()
		cfg := testConfig()
		cfg.Stream, cfg.Subjects, cfg.StreamReplicas = name, []string{strings.ToLower(name) + ".>"}, 3
		cfg.DeadLetterStream, cfg.DeadLetterPrefix = name+"_DLQ", strings.ToLower(name)+"dlq"
		cfg.Logger = log
		w, err := worker.New(cfg, worker.Deps{JetStream: js, Redis: h.rdb, Rules: h.rules})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Setup(ctx); err != nil {
			t.Fatalf("setup: %v", err)
		}
	}

	t.Run("creates R3 streams", func(t *testing.T) {
		setup(t, "FRESH", nil)
		for _, name := range []string{"FRESH", "FRESH_DLQ"} {
			info := streamInfo(t, js, name)
			if info.Config.Replicas != 3 {
				t.Errorf("stream %s: %d replicas, want 3", name, info.Config.Replicas)
			}
			if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
				t.Errorf("stream %s: cluster %+v, want a leader and 2 followers", name, info.Cluster)
			}
		}
	})

	t.Run("warns about an existing stream of other replicas", func(t *testing.T) {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OLD", Subjects: []string{"old.>"}, Replicas: 1}); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		setup(t, "OLD", slog.New(slog.NewTextHandler(&buf, nil)))
		var warned []string
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "⚠️ stream exists with other replicas") {
				warned = append(warned, l)
			}
		}
		if len(warned) != 1 || !strings.Contains(warned[0], "stream=OLD replicas=1 setting=3") {
			t.Errorf("want one warning naming stream=OLD replicas=1 setting=3, got %q\nlog:\n%s", warned, buf.String())
		}
		if got := streamInfo(t, js, "OLD").Config.Replicas; got != 1 {
			t.Errorf("the existing stream was changed to %d replicas", got)
		}
		if got := streamInfo(t, js, "OLD_DLQ").Config.Replicas; got != 3 {
			t.Errorf("the dead-letter stream the worker created has %d replicas, want 3", got)
		}
	})
}

func streamInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	return info
}

// applications counts, per event ID, the deliveries that applied it.
type applications struct {
	mu      sync.Mutex
	applied map[string]int
	other   map[worker.Outcome]int
	maxDlv  uint64
}

func newApplications() *applications {
	return &applications{applied: map[string]int{}, other: map[worker.Outcome]int{}}
}

func (a *applications) EventDone(r worker.Report) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.Outcome == worker.Applied {
		a.applied[r.ID]++
	} else {
		a.other[r.Outcome]++
	}
	a.maxDlv = max(a.maxDlv, r.Deliveries)
}

func (a *applications) RedisUp(bool) {}

// count returns how many distinct events were applied and how many of them
// more than once.
func (a *applications) count() (distinct, duplicated, extra int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, n := range a.applied {
		distinct++
		if n > 1 {
			duplicated++
			extra += n - 1
		}
	}
	return distinct, duplicated, extra
}

// testCluster is a 3-server JetStream cluster of one kind, and how a
// server of it is lost and brought back.
type testCluster struct {
	url     string
	name    func(int) string
	index   func(string) int
	lose    func(int) // the leader's server goes away
	restart func(int) error
}

// clusterKinds are the clusters the leader-loss test runs on: embedded
// servers (go.mod's version), whose Shutdown hands the leadership over, and
// nats-server processes from PATH (Debian's 2.9), killed with SIGKILL, so
// the followers notice only when the heartbeats stop and elect a leader.
var clusterKinds = []struct {
	name  string
	start func(t *testing.T) testCluster
}{
	{"embedded, leader shut down", func(t *testing.T) testCluster {
		c := testserver.NATSCluster(t)
		return testCluster{url: c.URL(), name: c.Name, index: c.Index, lose: c.Stop, restart: c.Restart}
	}},
	{"binary, leader killed", func(t *testing.T) testCluster {
		c := testserver.NATSBinaryCluster(t)
		t.Logf("nats-server %s from PATH", c.Version())
		return testCluster{url: c.URL(), name: c.Name, index: c.Index, lose: c.Kill,
			restart: func(i int) error { return c.Restart(context.Background(), i) }}
	}},
}

// The stream leader's server goes away while 1,000 numbered events are
// being published and consumed. The publisher retries each event, with the
// same Nats-Msg-Id, until a leader stores it; the worker's connection moves
// to a live server. Every event is applied (its key is gone from a real
// redis-server), the stream holds each exactly once, nothing is
// dead-lettered; the events applied more than once (their ack was lost with
// the leader) are reported. The lost server then restarts and catches up.
func TestStreamLeaderLossLosesNoEvent(t *testing.T) {
	for _, kind := range clusterKinds {
		t.Run(kind.name, func(t *testing.T) { leaderLoss(t, kind.start(t)) })
	}
}

func leaderLoss(t *testing.T, c testCluster) {
	const n = 1000
	_, wjs := testserver.JetStreamCluster(t, c.url)
	_, pjs := testserver.JetStreamCluster(t, c.url)
	h := newHarnessOn(t, wjs)
	keys := numbered("user:", n)
	h.set(keys...)

	obs := newApplications()
	cfg := testConfig()
	cfg.StreamReplicas = 3
	r := h.start(cfg, worker.Deps{Observer: obs})
	var leader string
	h.eventually("a stream leader", 10*time.Second, func() bool {
		leader = leaderOf(wjs, worker.DefaultStream)
		return leader != ""
	})

	pub, err := events.NewPublisher(pjs, events.WithSource("test"))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	third := make(chan struct{})
	var retries int
	published := make(chan error, 1)
	go func() {
		for i, k := range keys {
			if i == n/3 {
				close(third)
			}
			ev := events.NewEvent(cachekeys.InvalidateSubject, map[string]any{"keys": []any{k}})
			ids[i] = ev.ID
			tries, err := publishUntilStored(pub, ev, 60*time.Second)
			retries += tries - 1
			if err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()

	<-third
	lostAt := time.Now()
	lost := c.index(leader)
	c.lose(lost)
	var newLeader string
	h.eventually("a new stream leader", 30*time.Second, func() bool {
		newLeader = leaderOf(pjs, worker.DefaultStream)
		return newLeader != "" && newLeader != leader
	})
	t.Logf("lost %s, the leader of %s, after %d events were published; %s leads after %s",
		leader, worker.DefaultStream, n/3, newLeader, time.Since(lostAt).Round(time.Millisecond))
	if err := <-published; err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Logf("all %d events published %s after the loss, %d publish attempts retried", n, time.Since(lostAt).Round(time.Millisecond), retries)

	h.eventually("every key removed", 60*time.Second, func() bool { return h.dbsize() == 0 })
	h.eventually("every event applied and acked", 30*time.Second, func() bool {
		distinct, _, _ := obs.count()
		return distinct == n && h.consumerIdle(r.w)
	})
	t.Logf("every event applied and acked %s after the loss", time.Since(lostAt).Round(time.Millisecond))
	distinct, duplicated, extra := obs.count()
	obs.mu.Lock()
	for i, id := range ids {
		if obs.applied[id] == 0 {
			t.Errorf("event %d (%s) was never applied", i, id)
		}
	}
	t.Logf("duplicates: %d of %d events applied more than once (%d extra applications); most deliveries of one event: %d; other outcomes: %v",
		duplicated, distinct, extra, obs.maxDlv, obs.other)
	if obs.other[worker.DeadLettered] > 0 {
		t.Errorf("%d events dead-lettered", obs.other[worker.DeadLettered])
	}
	obs.mu.Unlock()
	if dl := h.deadLetters(); len(dl) > 0 {
		t.Errorf("%d dead letters: %v", len(dl), headers(dl))
	}
	if msgs := streamInfo(t, wjs, worker.DefaultStream).State.Msgs; msgs != n {
		t.Errorf("the stream holds %d events, want %d: the Nats-Msg-Id must make a retried publish a no-op", msgs, n)
	}

	restartedAt := time.Now()
	if err := c.restart(lost); err != nil {
		t.Fatal(err)
	}
	h.eventually(leader+" current again", 30*time.Second, func() bool {
		info := streamInfo(t, wjs, worker.DefaultStream)
		current := 0
		for _, p := range info.Cluster.Replicas {
			if p.Current && !p.Offline {
				current++
			}
		}
		return info.Cluster.Leader != "" && current == 2
	})
	t.Logf("%s restarted and caught up in %s", leader, time.Since(restartedAt).Round(time.Millisecond))
}

// leaderOf names the stream's leader, or "" when it cannot be asked (an
// election is under way).
func leaderOf(js jetstream.JetStream, stream string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// publishUntilStored publishes ev until the stream acknowledges it, at most
// for within, and returns how many attempts it took. Every attempt carries
// the same Nats-Msg-Id, so one that was stored but not acknowledged is not
// stored twice.
func publishUntilStored(pub *events.Publisher, ev events.Event, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := pub.PublishEvent(ctx, ev)
		cancel()
		if err == nil {
			return attempt, nil
		}
		if time.Now().After(deadline) {
			return attempt, errors.Join(errors.New("publish: gave up"), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
