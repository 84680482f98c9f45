package engine_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/enginetest"
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
		{name: "all set", given: engine.Config{ScanCount: 10, MaxScanCalls: 5, SweepConcurrency: 1}},
		{name: "negative ScanCount", given: engine.Config{ScanCount: -1}, wantErr: true},
		{name: "negative MaxScanCalls", given: engine.Config{MaxScanCalls: -1}, wantErr: true},
		{name: "negative SweepConcurrency", given: engine.Config{SweepConcurrency: -4}, wantErr: true},
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
	if d.ScanCount != engine.DefaultScanCount || d.MaxScanCalls != engine.DefaultMaxScanCalls ||
		d.SweepConcurrency != engine.DefaultSweepConcurrency || d.Logger == nil {
		t.Errorf("WithDefaults() = %+v", d)
	}
}

// TestGenerations checks the invalidation side of the warming guard: each
// exact key's generation and each pattern scope's advance by one per job,
// with the TTL set; without Generations nothing is written.
func TestGenerations(t *testing.T) {
	ctx := t.Context()
	e, rdb := newRedis(t, engine.Config{Generations: true})
	rdb.MSet(ctx, "user:1", "a", "user:2", "b", "user:10:x", "c")
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
	want := map[string]string{"user:1": "1", "user:2": "1", "user:10:": "1"}
	for scope, gen := range want {
		k := engine.GenerationKey(scope)
		if got := rdb.Get(ctx, k).Val(); got != gen {
			t.Errorf("GET %s = %q, want %q", k, got, gen)
		}
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= engine.DefaultGenerationTTL-time.Minute || ttl > engine.DefaultGenerationTTL {
			t.Errorf("PTTL %s = %s, want about %s", k, ttl, engine.DefaultGenerationTTL)
		}
	}
	if n := rdb.Exists(ctx, "user:1", "user:2", "user:10:x").Val(); n != 0 {
		t.Errorf("%d keys left", n)
	}

	plain, rdb2 := newRedis(t, engine.Config{})
	rdb2.Set(ctx, "user:1", "a", 0)
	if _, err := plain.Invalidate(ctx, engine.Job{Exact: []string{"user:1"}, Patterns: []string{"user:1:*"}}); err != nil {
		t.Fatal(err)
	}
	if ks := rdb2.Keys(ctx, "*").Val(); len(ks) != 0 {
		t.Errorf("keys left without generations: %v", ks)
	}
}

// TestGenerationsComeFirst watches the server with MONITOR: every
// generation INCR of a key comes before the UNLINK that removes it, and the
// whole batch costs one command from the client (the script).
func TestGenerationsComeFirst(t *testing.T) {
	ctx := t.Context()
	e, rdb := newRedis(t, engine.Config{Generations: true})
	ks := make([]string, 1500) // three script calls of 500 keys and their generations
	for i := range ks {
		ks[i] = "k:" + strconv.Itoa(i)
		rdb.Set(ctx, ks[i], "v", 0)
	}
	if _, err := e.Invalidate(ctx, engine.Job{Exact: []string{"warm-up"}}); err != nil { // loads the script
		t.Fatal(err)
	}
	lines := monitor(t, rdb)
	var jobs []engine.Job
	for c := range slices.Chunk(ks, 100) {
		jobs = append(jobs, engine.Job{Exact: c})
	}
	var failed error
	e.Apply(ctx, jobs, func(_ int, _ engine.Result, err error) { failed = errors.Join(failed, err) })
	rdb.Ping(ctx) // a marker after the batch
	if failed != nil {
		t.Fatal(failed)
	}
	incr, unlinked, evals := map[string]bool{}, map[string]bool{}, 0
	for line := range lines {
		if containsWord(line, `"ping"`) {
			break
		}
		switch {
		case containsWord(line, `"evalsha"`):
			evals++
		case containsWord(line, `"INCR"`):
			incr[field(line, 1)] = true
		case containsWord(line, `"UNLINK"`):
			for _, k := range fields(line)[1:] {
				if !incr[engine.GenerationKey(k)] {
					t.Errorf("UNLINK %s before its generation was advanced", k)
				}
				unlinked[k] = true
			}
		}
	}
	if len(unlinked) != len(ks) || evals != 3 {
		t.Errorf("%d keys unlinked in %d script calls, want %d in 3", len(unlinked), evals, len(ks))
	}
}

// TestScriptReloaded: a server that lost its scripts (SCRIPT FLUSH, a
// restart) costs one more round trip, not a failure.
func TestScriptReloaded(t *testing.T) {
	ctx := t.Context()
	e, rdb := newRedis(t, engine.Config{Generations: true})
	for range 2 {
		rdb.Set(ctx, "user:1", "a", 0)
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		res, err := e.Invalidate(ctx, engine.Job{Exact: []string{"user:1"}})
		if err != nil || res.Removed != 1 {
			t.Fatalf("Invalidate = %+v, %v; want 1 key removed", res, err)
		}
	}
	if gen := rdb.Get(ctx, engine.GenerationKey("user:1")).Val(); gen != "2" {
		t.Errorf("generation %q, want 2", gen)
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
	_, err := e.Invalidate(ctx, engine.Job{Patterns: []string{"k:*"}})
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
		_, err := e.Invalidate(ctx, engine.Job{Exact: []string{"a:1"}})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("generations=%v: error %v, want context.Canceled", gens, err)
		}
	}
}
