package warm_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/warm"
)

// newClusterRig is the rig on a real 3-master Redis Cluster.
func newClusterRig(t *testing.T) *guardRig {
	t.Helper()
	rdb := testserver.ClusterClient(t, testserver.RedisCluster(t, 3))
	eng, err := engine.NewCluster(rdb, engine.Config{Generations: true})
	return newRig(t, rdb, eng, err)
}

// A fill overtaken by an exact or a pattern invalidation on the cluster is
// refused and writes nothing; a fill after it stores; the registries it
// joined are left empty.
func TestClusterGuardRefusesAFillOvertaken(t *testing.T) {
	g := newClusterRig(t)
	ctx := t.Context()
	const key = "cache:course_analytics:7"
	for _, job := range []engine.Job{{Exact: []string{key}}, {Patterns: []string{"cache:course_analytics:*"}}, {Patterns: []string{"cache:*"}}} {
		o := g.warmHeld(t, key, func() {
			g.version.Add(1)
			if _, err := engine.Invalidate(ctx, g.eng, job); err != nil {
				t.Fatal(err)
			}
		})
		if o != warm.SkippedStale || g.rdb.Exists(ctx, key).Val() != 0 {
			t.Fatalf("%+v: outcome %s, want %s and no write", job, o, warm.SkippedStale)
		}
		if o := g.warmer.Warm(ctx, g.req(key)); o != warm.Stored {
			t.Fatalf("%+v: a fill after the invalidation: %s, want %s", job, o, warm.Stored)
		}
		g.rdb.Del(ctx, key)
	}
	for _, p := range cachekeys.SegmentPrefixes(key) {
		if n := g.rdb.SCard(ctx, guard.RegistryKey(p)).Val(); n != 0 {
			t.Errorf("registry of %q holds %d members after the fills ended", p, n)
		}
	}
}

// TestClusterWarmNeverWritesAStaleValue is TestGuardRaceEveryForm on the
// cluster: a held source races an invalidation over 200 interleavings, the
// invalidation an exact key or a pattern over it through the cluster
// engine; the key always ends absent or holding the newer value.
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
	g.raceWarms(t, g.rdb, key, func() error {
		_, err := engine.Invalidate(ctx, g.eng, jobs[rand.IntN(len(jobs))])
		return err
	})
}
