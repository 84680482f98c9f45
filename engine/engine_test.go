package engine_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/enginetest"
	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newRedis returns an engine with cfg on a redis-server of its own, and a
// client on that server.
func newRedis(tb testing.TB, cfg engine.Config) (*engine.Redis, *redis.Client) {
	tb.Helper()
	rdb := testserver.RedisClient(tb, testserver.Redis(tb))
	e, err := engine.NewRedis(rdb, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return e, rdb
}

// TestContract runs the shared engine contract against the single-node
// engine, without and with generations (the two exact-key paths).
func TestContract(t *testing.T) {
	for _, gens := range []bool{false, true} {
		t.Run("generations="+strconv.FormatBool(gens), func(t *testing.T) {
			enginetest.Run(t, func(t *testing.T) enginetest.Setup {
				e, rdb := newRedis(t, engine.Config{Generations: gens})
				t.Cleanup(func() { _ = e.Close() })
				return enginetest.Setup{Engine: e, Client: rdb}
			})
		})
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		given   engine.Config
		wantErr bool
	}{
		{name: "zero value", given: engine.Config{}},
		{name: "all set", given: engine.Config{ScanCount: 10, MaxScanCalls: 5}},
		{name: "negative ScanCount", given: engine.Config{ScanCount: -1}, wantErr: true},
		{name: "negative MaxScanCalls", given: engine.Config{MaxScanCalls: -1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.given.Validate()
			if got := errors.Is(err, engine.ErrInvalidConfig); got != tt.wantErr {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig: %v", err, tt.wantErr)
			}
			rdb := redis.NewClient(&redis.Options{})
			defer rdb.Close()
			_, err = engine.NewRedis(rdb, tt.given)
			if got := errors.Is(err, engine.ErrInvalidConfig); got != tt.wantErr {
				t.Fatalf("NewRedis() error = %v, want ErrInvalidConfig: %v", err, tt.wantErr)
			}
		})
	}
	d := engine.Config{}.WithDefaults()
	if d.ScanCount != engine.DefaultScanCount || d.MaxScanCalls != engine.DefaultMaxScanCalls || d.Logger == nil {
		t.Errorf("WithDefaults() = %+v", d)
	}
}

// TestGenerations checks the invalidation side of the warming guard: each
// exact key's generation is removed and each pattern scope's takes a new
// token at each invalidation, with the TTL set, so a fill that claimed
// either before finds its token gone; without Generations nothing is
// written.
func TestGenerations(t *testing.T) {
	ctx := t.Context()
	e, rdb := newRedis(t, engine.Config{Generations: true})
	rdb.MSet(ctx, "user:1", "a", "user:2", "b", "user:10:x", "c")
	// Claims of fills in flight, as package warm makes them.
	claimed := map[string]string{"user:1": "fill-1", "user:2": "fill-2", "user:10:": "fill-3", "user:3": "fill-4"}
	for scope, token := range claimed {
		rdb.Set(ctx, guard.Key(scope), token, time.Hour)
	}
	jobs := []engine.Job{
		{Exact: []string{"user:1", "user:1"}},
		{Exact: []string{"user:1", "user:2"}, Patterns: []string{"user:10:*"}},
		{},
	}
	var errs [3]error
	e.Apply(ctx, jobs, func(i int, _ engine.Result, err error) { errs[i] = err })
	if err := errors.Join(errs[:]...); err != nil {
		t.Fatal(err)
	}
	for _, scope := range []string{"user:1", "user:2"} {
		if n := rdb.Exists(ctx, guard.Key(scope)).Val(); n != 0 {
			t.Errorf("generation of exact key %s still there: a fill's claim would survive", scope)
		}
	}
	k := guard.Key("user:10:")
	first := rdb.Get(ctx, k).Val()
	if first == "" || first == "0" || first == claimed["user:10:"] {
		t.Errorf("GET %s = %q, want a new token", k, first)
	}
	if ttl := rdb.PTTL(ctx, k).Val(); ttl <= guard.TTL-time.Minute || ttl > guard.TTL {
		t.Errorf("PTTL %s = %s, want about %s", k, ttl, guard.TTL)
	}
	if g := rdb.Get(ctx, guard.Key("user:3")).Val(); g != claimed["user:3"] {
		t.Errorf("generation of user:3 moved to %q without an invalidation", g)
	}
	if _, err := engine.Invalidate(ctx, e, engine.Job{Patterns: []string{"user:10:*"}}); err != nil {
		t.Fatal(err)
	}
	if g := rdb.Get(ctx, k).Val(); g == first {
		t.Errorf("generation of user:10: still %q after a second invalidation", g)
	}
	if n := rdb.Exists(ctx, "user:1", "user:2", "user:10:x").Val(); n != 0 {
		t.Errorf("%d keys left", n)
	}

	plain, rdb2 := newRedis(t, engine.Config{})
	rdb2.Set(ctx, "user:1", "a", 0)
	if _, err := engine.Invalidate(ctx, plain, engine.Job{Exact: []string{"user:1"}, Patterns: []string{"user:1:*"}}); err != nil {
		t.Fatal(err)
	}
	if ks := rdb2.Keys(ctx, "*").Val(); len(ks) != 0 {
		t.Errorf("keys left without generations: %v", ks)
	}
}

// TestGenerationsComeFirst watches the server with MONITOR: every key's
// generation is removed (exact keys) or advanced (pattern scopes) before
// the UNLINK that removes the key, all in one round trip.
func TestGenerationsComeFirst(t *testing.T) {
	ctx := t.Context()
	e, rdb := newRedis(t, engine.Config{Generations: true})
	ks := make([]string, 1500) // two UNLINKs for the last job
	for i := range ks {
		ks[i] = "k:" + strconv.Itoa(i)
		rdb.Set(ctx, ks[i], "v", 0)
	}
	lines := monitor(t, rdb)
	jobs := []engine.Job{{Exact: ks[:100]}, {Exact: ks[100:], Patterns: []string{"p:*"}}}
	var failed error
	e.Apply(ctx, jobs, func(_ int, _ engine.Result, err error) { failed = errors.Join(failed, err) })
	rdb.Ping(ctx) // a marker after the batch
	if failed != nil {
		t.Fatal(failed)
	}
	moved, unlinked := map[string]bool{}, map[string]bool{}
	for line := range lines {
		fs := fields(line)
		switch strings.ToLower(fs[0]) {
		case "set":
			moved[fs[1]] = true
		case "unlink":
			for _, k := range fs[1:] {
				if strings.HasPrefix(k, guard.KeyPrefix) {
					moved[k] = true
					continue
				}
				if !moved[guard.Key(k)] {
					t.Errorf("UNLINK %s before its generation was removed", k)
				}
				if !moved[guard.Key("p:")] {
					t.Errorf("UNLINK %s before the pattern scope's generation was advanced", k)
				}
				unlinked[k] = true
			}
		}
		if strings.EqualFold(fs[0], "ping") {
			break
		}
	}
	if len(unlinked) != len(ks) {
		t.Errorf("%d keys unlinked, want %d", len(unlinked), len(ks))
	}
}

func TestSweepTooLong(t *testing.T) {
	ctx := t.Context()
	e, rdb := newRedis(t, engine.Config{MaxScanCalls: 1, ScanCount: 10})
	pipe := rdb.Pipeline()
	for i := range 500 {
		pipe.Set(ctx, "k:"+strconv.Itoa(i), "v", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := engine.Invalidate(ctx, e, engine.Job{Patterns: []string{"k:*"}})
	if !errors.Is(err, engine.ErrSweepTooLong) {
		t.Fatalf("error %v, want ErrSweepTooLong", err)
	}
}

func TestPreview(t *testing.T) {
	ctx := t.Context()
	e, rdb := newRedis(t, engine.Config{Generations: true})
	rdb.MSet(ctx, "user:1", "a", "user:1:x", "b", "user:1:y", "c", "user:10", "d")
	var seen []string
	res, err := e.Preview(ctx, engine.Job{Exact: []string{"user:1", "user:1", "user:2"}, Patterns: []string{"user:1:*"}},
		func(k string) { seen = append(seen, k) })
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(seen)
	if want := []string{"user:1", "user:1:x", "user:1:y"}; !slices.Equal(seen, want) || res.Removed != 3 {
		t.Errorf("Preview saw %v (Removed %d), want %v", seen, res.Removed, want)
	}
	if n := rdb.DBSize(ctx).Val(); n != 4 {
		t.Errorf("DBSIZE %d after Preview, want 4 (nothing removed, no generation)", n)
	}
}

func TestCancelledDuringExactKeys(t *testing.T) {
	for _, gens := range []bool{false, true} {
		e, rdb := newRedis(t, engine.Config{Generations: gens})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		rdb.Set(t.Context(), "a:1", "v", 0)
		_, err := engine.Invalidate(ctx, e, engine.Job{Exact: []string{"a:1"}})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("generations=%v: error %v, want context.Canceled", gens, err)
		}
	}
}
