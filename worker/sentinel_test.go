package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/redis/go-redis/v9"
)

// sentinelHarness is a harness whose Redis is a Sentinel set: h.rdb is a
// failover client (what REDIS_SENTINEL_ADDRS builds), h.redis is nil.
type sentinelHarness struct {
	*harness
	sentinels *servers.SentinelSet
}

func newSentinelHarness(t *testing.T) *sentinelHarness {
	t.Helper()
	set := testserver.Sentinel(t)
	ns := testserver.NATS(t)
	_, js := testserver.JetStream(t, ns)
	pub, err := events.NewPublisher(js, events.WithSource("test"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := cachekeys.Load("../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, rdb: testserver.SentinelClient(t, set), ns: ns, js: js, pub: pub, rules: rules}
	return &sentinelHarness{harness: h, sentinels: set}
}

// master returns the data node the sentinels name as master, and the other.
func (s *sentinelHarness) master() (master, replica *servers.Redis) {
	s.t.Helper()
	addr, err := s.sentinels.MasterAddr(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	for _, n := range s.sentinels.Nodes {
		if n.Addr() == addr {
			master = n
		} else {
			replica = n
		}
	}
	return master, replica
}

// setReplicated writes keys on the master and waits until the replica has them.
func (s *sentinelHarness) setReplicated(keys ...string) {
	s.t.Helper()
	s.set(keys...)
	n, err := s.rdb.Wait(context.Background(), 1, 5*time.Second).Result()
	if err != nil || n != 1 {
		s.t.Fatalf("WAIT 1 = %d, %v: the replica did not acknowledge the keys", n, err)
	}
}

// nodeHas reports whether the node at addr holds key, asking it directly.
func nodeHas(t testing.TB, n *servers.Redis, key string) bool {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: n.Addr()})
	defer c.Close()
	x, err := c.Exists(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("EXISTS %s on %s: %v", key, n.Addr(), err)
	}
	return x == 1
}

// outcomes records the outcomes of every delivery by stream sequence.
type outcomes struct {
	mu  sync.Mutex
	out map[uint64][]worker.Outcome
}

func newOutcomes() *outcomes { return &outcomes{out: map[uint64][]worker.Outcome{}} }

func (o *outcomes) EventDone(r worker.Report) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.out[r.StreamSeq] = append(o.out[r.StreamSeq], r.Outcome)
}
func (o *outcomes) RedisUp(bool) {}

func (o *outcomes) of(seq uint64) []worker.Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.out[seq])
}

// TestSentinelFailoverLosesNoEvent publishes numbered events without pause
// while the master of a Sentinel set is SIGKILLed and a sentinel promotes
// the replica. The worker runs on a failover client (engine.NewRedis takes
// it: it is a *redis.Client). Every event is applied, its keys gone from the
// new master, and none is dead-lettered: events caught by the crash are
// held and retried on the new master, not counted as failed deliveries
// (MaxDeliver is 2, as in TestRedisOutageLosesNothing). Events fetched but
// waiting for a free handler get no progress signal, so the server may
// deliver a few of them again when the failover outlasts AckWait (2s); the
// test logs those duplicates.
func TestSentinelFailoverLosesNoEvent(t *testing.T) {
	t.Parallel()
	s := newSentinelHarness(t)
	const n = 150
	for i := range n {
		s.set("user:"+itoa(i), "user:"+itoa(i)+":profile")
	}
	s.setReplicated("user:keep")
	rec, logs := newOutcomes(), &testserver.Logs{}
	cfg := testConfig()
	cfg.MaxDeliver = 2
	cfg.Logger = slog.New(logs)
	r := s.start(cfg, worker.Deps{Observer: rec})
	master, replica := s.master()

	ctx := context.Background()
	seqs := make([]uint64, n)
	published := make(chan error, 1)
	go func() { // no t.Fatal off the test goroutine
		for i := range n {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			seq, err := s.pub.Publish(pctx, "events.user.updated", map[string]any{"user_id": i})
			cancel()
			if err != nil {
				published <- fmt.Errorf("publish event %d: %w", i, err)
				return
			}
			seqs[i] = seq
			time.Sleep(30 * time.Millisecond)
		}
		published <- nil
	}()
	s.eventually("some events applied", 20*time.Second, func() bool { return r.w.Stats().Applied >= n/5 })
	killed := time.Now()
	if err := s.sentinels.Kill(master); err != nil {
		t.Fatal(err)
	}
	promoted, err := s.sentinels.WaitFailover(ctx, master.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover to %s %v after the kill; %d events applied by then", promoted.Addr(),
		time.Since(killed).Round(time.Millisecond), r.w.Stats().Applied)
	if promoted != replica {
		t.Fatalf("promoted %s, want the replica %s", promoted.Addr(), replica.Addr())
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	s.eventually("every event applied and the consumer idle", 60*time.Second, func() bool {
		for _, seq := range seqs {
			if !slices.Contains(rec.of(seq), worker.Applied) {
				return false
			}
		}
		return s.consumerIdle(r.w)
	})

	for i, seq := range seqs {
		for _, key := range []string{"user:" + itoa(i), "user:" + itoa(i) + ":profile"} {
			if nodeHas(t, promoted, key) {
				t.Errorf("%s (event %d, seq %d, outcomes %v) is still on the new master", key, i, seq, rec.of(seq))
			}
		}
		switch outs := rec.of(seq); {
		case slices.Contains(outs, worker.DeadLettered):
			t.Errorf("event %d (seq %d) outcomes %v: dead-lettered", i, seq, outs)
		case len(outs) > 1:
			t.Logf("event %d (seq %d) was delivered %d times: %v", i, seq, len(outs), outs)
		}
	}
	if !nodeHas(t, promoted, "user:keep") {
		t.Error("user:keep, which no event names, is gone from the new master")
	}
	st := r.w.Stats()
	t.Logf("stats after the failover: %+v; %s", st, logs.Find("failover replay done"))
	if st.DeadLettered != 0 {
		t.Errorf("%d events dead-lettered, want 0", st.DeadLettered)
	}
	if dl := s.deadLetters(); len(dl) != 0 {
		t.Errorf("dead letters = %v, want none", headers(dl))
	}
}
