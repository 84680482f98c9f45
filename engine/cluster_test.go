package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/enginetest"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// newCluster returns an engine with cfg on c (a 3-master cluster of its
// own when c is nil), and a cluster client; the engine is closed on cleanup.
func newCluster(t testing.TB, c *servers.RedisCluster, cfg engine.Config) (*engine.Cluster, *redis.ClusterClient) {
	t.Helper()
	if c == nil {
		c = testserver.RedisCluster(t, 3)
	}
	rdb := testserver.ClusterClient(t, c)
	e, err := engine.NewCluster(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, rdb
}

// TestClusterContract runs the shared engine contract against the cluster
// engine on a real 3-master cluster, without and with generations.
func TestClusterContract(t *testing.T) {
	c := testserver.RedisCluster(t, 3)
	for _, gens := range []bool{false, true} {
		t.Run("generations="+strconv.FormatBool(gens), func(t *testing.T) {
			enginetest.Run(t, func(t *testing.T) enginetest.Setup {
				e, rdb := newCluster(t, c, engine.Config{Generations: gens})
				return enginetest.Setup{Engine: e, Client: rdb}
			})
		})
	}
}

// A single-node engine is not given a cluster client (that does not
// compile), and the cluster engine refuses a nil client and a bad config.
func TestNewClusterRefuses(t *testing.T) {
	if _, err := engine.NewCluster(nil, engine.Config{}); err == nil {
		t.Error("NewCluster(nil) succeeded")
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer rdb.Close()
	if _, err := engine.NewCluster(rdb, engine.Config{ScanCount: -1}); !errors.Is(err, engine.ErrInvalidConfig) {
		t.Errorf("NewCluster with ScanCount -1 = %v, want ErrInvalidConfig", err)
	}
}

// Slot agrees with the server's CLUSTER KEYSLOT, hash tags included, and
// every slot's tag maps to it.
func TestSlot(t *testing.T) {
	_, rdb := newCluster(t, nil, engine.Config{})
	for _, k := range []string{"foo", "{user1000}.following", "a{}b", "x{y}z{w}", "cache:course_analytics:42", "", "{}", "é{ü}"} {
		want, err := rdb.ClusterKeySlot(t.Context(), k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := cachekeys.Slot(k); int64(got) != want {
			t.Errorf("cachekeys.Slot(%q) = %d, server says %d", k, got, want)
		}
		if g := guard.ClusterKey(k); cachekeys.Slot(g) != cachekeys.Slot(k) {
			t.Errorf("guard.ClusterKey(%q) = %q is in slot %d, not %d", k, g, cachekeys.Slot(g), cachekeys.Slot(k))
		}
	}
	for s := range cachekeys.SlotCount {
		if got := cachekeys.Slot("{" + cachekeys.SlotTag(s) + "}k"); got != s {
			t.Fatalf("cachekeys.SlotTag(%d) = %q maps to %d", s, cachekeys.SlotTag(s), got)
		}
	}
}

// Exact keys with generations: each key's generation (in its slot) is gone
// with the key, a batch of keys across many slots needs no multi-slot
// command, and a fill registry of a pattern's scope is drained and its
// fills' generations removed before the sweep, and the scope's own
// generation advanced.
func TestClusterGenerations(t *testing.T) {
	e, rdb := newCluster(t, nil, engine.Config{Generations: true})
	ctx := t.Context()
	const p = "clustergen:"
	var keys []string
	for i := range 300 {
		keys = append(keys, p+"k:"+strconv.Itoa(i))
	}
	for _, k := range keys {
		rdb.Set(ctx, k, "v", 0)
		rdb.Set(ctx, guard.ClusterKey(k), "tok", 0)
	}
	filled := p + "s:7:x"
	rdb.Set(ctx, guard.ClusterKey(filled), "tok", 0)
	rdb.SAdd(ctx, guard.RegistryKey(p+"s:7:"), guard.Member("tok", filled))
	res, err := engine.Invalidate(ctx, e, engine.Job{Exact: keys})
	if err != nil || res.Removed != int64(len(keys)) {
		t.Fatalf("Invalidate: removed %d, %v; want %d", res.Removed, err, len(keys))
	}
	for _, k := range keys {
		if n := rdb.Exists(ctx, k, guard.ClusterKey(k)).Val(); n != 0 {
			t.Fatalf("%s or its generation is still there", k)
		}
	}
	if _, err := engine.Invalidate(ctx, e, engine.Job{Patterns: []string{p + "s:7:*"}}); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, guard.ClusterKey(filled), guard.RegistryKey(p+"s:7:")).Val(); n != 0 {
		t.Errorf("the drained fill's generation or the registry is still there")
	}
	// The scope's generation holds a fresh token (stamped readers miss),
	// and a second invalidation replaces it.
	first, err := rdb.Get(ctx, guard.Key(p+"s:7:")).Result()
	if err != nil || first == "" || first == "0" {
		t.Fatalf("scope generation after the pattern = %q, %v; want a token", first, err)
	}
	if _, err := engine.Invalidate(ctx, e, engine.Job{Patterns: []string{p + "s:7:*"}}); err != nil {
		t.Fatal(err)
	}
	if again := rdb.Get(ctx, guard.Key(p+"s:7:")).Val(); again == first {
		t.Errorf("a second pattern invalidation left the scope's token %q", first)
	}
}

// TestClusterSweepDuringReshard moves slots between masters (redis-cli
// --cluster reshard, keys moved with MIGRATE) while pattern sweeps run, over
// several rounds: every key that existed throughout and matches is gone
// when its job completes, and the neighbours are all still there.
func TestClusterSweepDuringReshard(t *testing.T) {
	c := testserver.RedisCluster(t, 3)
	rdb := testserver.ClusterClient(t, c)
	e, err := engine.NewCluster(rdb, engine.Config{Sweep: sweepSlow()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := t.Context()
	const perRound = 30_000
	addrs := c.Addrs()
	for round := range 3 {
		gone := fmt.Sprintf("rs%d:gone:", round)
		kept := fmt.Sprintf("rs%d:kept:", round)
		seedN(t, rdb, gone, perRound)
		seedN(t, rdb, kept, perRound/10)
		done := make(chan error, 1)
		var res engine.Result
		go func() {
			var err error
			res, err = engine.Invalidate(ctx, e, engine.Job{Patterns: []string{gone + "*"}})
			done <- err
		}()
		from, to := addrs[round%3], addrs[(round+1)%3]
		if err := c.Reshard(ctx, from, to, 600, 50); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if left := countKeys(t, rdb, gone+"*"); left != 0 {
			t.Errorf("round %d: %d keys that existed throughout are left after the job completed", round, left)
		}
		if n := countKeys(t, rdb, kept+"*"); n != perRound/10 {
			t.Errorf("round %d: %d neighbours left, want %d", round, n, perRound/10)
		}
		t.Logf("round %d: moved 600 slots %s → %s; removed %d, %d SCAN calls, %d master sweeps restarted so far",
			round, from, to, res.Removed, res.ScanCalls, e.Restarts())
	}
	if e.Restarts() == 0 {
		t.Error("no sweep was restarted: the reshards did not overlap a sweep")
	}
}

// sweepSlow paces the walk so that a reshard overlaps it.
func sweepSlow() sweep.Config { return sweep.Config{Budget: 200_000} }

func seedN(t *testing.T, rdb *redis.ClusterClient, prefix string, n int) {
	t.Helper()
	for lo := 0; lo < n; lo += 5000 {
		pipe := rdb.Pipeline()
		for i := lo; i < min(n, lo+5000); i++ {
			pipe.Set(t.Context(), prefix+strconv.Itoa(i), "v", 0)
		}
		if _, err := pipe.Exec(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// countKeys counts the keys matching pattern on every master.
func countKeys(t *testing.T, rdb *redis.ClusterClient, pattern string) int {
	t.Helper()
	var (
		mu  sync.Mutex
		all []string
	)
	err := rdb.ForEachMaster(t.Context(), func(ctx context.Context, n *redis.Client) error {
		iter := n.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			all = append(all, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(all)
	return len(slices.Compact(all))
}

// passRecorder counts the finished passes of one node's walk.
type passRecorder struct {
	mu     *sync.Mutex
	passes map[string]int
	node   string
}

func (p passRecorder) PassFinished(sweep.Pass) {
	p.mu.Lock()
	p.passes[p.node]++
	p.mu.Unlock()
}
func (passRecorder) KeysExamined(int)          {}
func (passRecorder) KeysRemoved(int)           {}
func (passRecorder) ActivePatterns(int)        {}
func (passRecorder) PatternWait(time.Duration) {}
func (passRecorder) Progress(float64)          {}

// TestClusterNodeObservers: each master's walk reports to the observer
// NodeObserver gives for its address (the metrics' node label).
func TestClusterNodeObservers(t *testing.T) {
	c := testserver.RedisCluster(t, 3)
	rdb := testserver.ClusterClient(t, c)
	var mu sync.Mutex
	passes := map[string]int{}
	e, err := engine.NewCluster(rdb, engine.Config{NodeObserver: func(node string) sweep.Observer {
		return passRecorder{mu: &mu, passes: passes, node: node}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	ctx := context.Background()
	for i := range 300 {
		rdb.Set(ctx, "obs:"+strconv.Itoa(i), "v", 0)
	}
	if _, err := engine.Invalidate(ctx, e, engine.Job{Patterns: []string{"obs:*"}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(passes) != 3 {
		t.Errorf("passes by node = %v, want the 3 masters", passes)
	}
	for _, addr := range c.Addrs() {
		if passes[addr] < 1 {
			t.Errorf("master %s reported no pass (%v)", addr, passes)
		}
	}
}
