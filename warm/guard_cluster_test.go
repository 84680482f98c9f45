package warm_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/warm"
	"github.com/redis/go-redis/v9"
)

// clusterRig is guardRig on a real 3-master Redis Cluster: a warmer and a
// cluster engine with generations on one cluster client, and a source
// whose answers can be held.
type clusterRig struct {
	rdb     *redis.ClusterClient
	warmer  *warm.Warmer
	eng     *engine.Cluster
	src     *httptest.Server
	version atomic.Int64
	hold    chan chan struct{}
	started chan struct{}
}

func newClusterRig(t *testing.T) *clusterRig {
	t.Helper()
	g := &clusterRig{hold: make(chan chan struct{}, 16), started: make(chan struct{}, 16)}
	g.rdb = testserver.ClusterClient(t, testserver.RedisCluster(t, 3))
	g.src = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		v := g.version.Load()
		select {
		case gate := <-g.hold:
			g.started <- struct{}{}
			<-gate
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"v": %d}`, v)
	}))
	t.Cleanup(g.src.Close)
	var err error
	if g.warmer, err = warm.New(g.rdb, warm.Config{}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if g.eng, err = engine.NewCluster(g.rdb, engine.Config{Generations: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.eng.Close() })
	return g
}

func (g *clusterRig) req(key string) cachekeys.WarmRequest {
	return cachekeys.WarmRequest{Key: key, URL: g.src.URL + "/x", Host: g.src.Listener.Addr().String(), TTL: time.Minute}
}

// A fill overtaken by an exact or a pattern invalidation on the cluster is
// refused and writes nothing; a fill after it stores; the registries it
// joined are left empty.
func TestClusterGuardRefusesAFillOvertaken(t *testing.T) {
	g := newClusterRig(t)
	ctx := t.Context()
	const key = "cache:course_analytics:7"
	for _, job := range []engine.Job{{Exact: []string{key}}, {Patterns: []string{"cache:course_analytics:*"}}, {Patterns: []string{"cache:*"}}} {
		gate := make(chan struct{})
		g.hold <- gate
		out := make(chan warm.Outcome, 1)
		go func() { out <- g.warmer.Warm(context.Background(), g.req(key)) }()
		<-g.started
		g.version.Add(1)
		if _, err := g.eng.Invalidate(ctx, job); err != nil {
			t.Fatal(err)
		}
		close(gate)
		if o := <-out; o != warm.SkippedStale || g.rdb.Exists(ctx, key).Val() != 0 {
			t.Fatalf("%+v: outcome %s, want %s and no write", job, o, warm.SkippedStale)
		}
		if o := g.warmer.Warm(ctx, g.req(key)); o != warm.Stored {
			t.Fatalf("%+v: a fill after the invalidation: %s, want %s", job, o, warm.Stored)
		}
		g.rdb.Del(ctx, key)
	}
	for _, p := range cachekeys.SegmentPrefixes(key) {
		if n := g.rdb.SCard(ctx, engine.FillRegistryKey(p)).Val(); n != 0 {
			t.Errorf("registry of %q holds %d members after the fills ended", p, n)
		}
	}
}

// TestClusterWarmNeverWritesAStaleValue is TestWarmNeverWritesAStaleValue
// (worker) and TestGuardRaceEveryForm on the cluster: a held source races
// an invalidation over 200 interleavings, the invalidation an exact key or
// a pattern over it through the cluster engine; the key always ends absent
// or holding the newer value.
func TestClusterWarmNeverWritesAStaleValue(t *testing.T) {
	g := newClusterRig(t)
	ctx := context.Background()
	const key = "cache:course_analytics:7"
	jobs := []engine.Job{
		{Exact: []string{key}},
		{Patterns: []string{"cache:course_analytics:*"}},
		{Patterns: []string{"cache:course_*"}},
		{Exact: []string{"cache:other"}, Patterns: []string{"cache:course_analytics:7"}},
	}
	outcomes := map[warm.Outcome]int{}
	const rounds = 200
	for round := range rounds {
		gate := make(chan struct{})
		var once sync.Once
		open := func() { once.Do(func() { close(gate) }) }
		g.hold <- gate
		var wg sync.WaitGroup
		wg.Go(func() { outcomes[g.warmer.Warm(ctx, g.req(key))]++ })
		wg.Go(func() {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
			g.version.Add(1) // the application commits newer data, then publishes
			if _, err := g.eng.Invalidate(ctx, jobs[rand.IntN(len(jobs))]); err != nil {
				t.Error(err)
			}
			open()
		})
		wg.Go(func() {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
			if rand.IntN(2) == 0 {
				open()
			}
		})
		wg.Wait()
		<-g.started
		got, err := g.rdb.Get(ctx, key).Result()
		if err == nil && got != fmt.Sprintf(`{"v": %d}`, g.version.Load()) {
			t.Fatalf("round %d: key holds %s, but the data is at version %d: a stale write", round, got, g.version.Load())
		}
		g.rdb.Del(ctx, key)
	}
	t.Logf("outcomes over %d rounds: %v", rounds, outcomes)
	if outcomes[warm.SkippedStale] == 0 {
		t.Errorf("no round raced (outcomes %v): the test did not exercise the guard", outcomes)
	}
}
