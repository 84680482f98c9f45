package worker_test

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/redis/go-redis/v9"
)

// seed asks for the keys prefix:0 … prefix:n-1, the names DEBUG POPULATE makes.
type seed struct {
	prefix string
	n      int
}

// keysOf returns the names of seed s.
func keysOf(s seed) []string {
	keys := make([]string, s.n)
	for i := range keys {
		keys[i] = s.prefix + ":" + strconv.Itoa(i)
	}
	return keys
}

// msetBatch is how many keys one MSET of loadSeeds carries.
const msetBatch = 10_000

// engineRedis starts a redis-server of its own and returns a client on it.
func engineRedis(tb testing.TB) *redis.Client {
	tb.Helper()
	return testserver.RedisClient(tb, testserver.Redis(tb))
}

// loadSeeds creates every key of seeds with pipelined MSETs of msetBatch keys.
func loadSeeds(tb testing.TB, rdb *redis.Client, seeds ...seed) {
	tb.Helper()
	for _, s := range seeds {
		setKeys(tb, rdb, keysOf(s)...)
	}
}

// setKeys creates keys (value "v") with pipelined MSETs of msetBatch keys.
func setKeys(tb testing.TB, rdb *redis.Client, keys ...string) {
	tb.Helper()
	if len(keys) == 0 {
		return
	}
	pipe := rdb.Pipeline()
	for chunk := range slices.Chunk(keys, msetBatch) {
		pairs := make([]any, 0, 2*len(chunk))
		for _, k := range chunk {
			pairs = append(pairs, k, "v")
		}
		pipe.MSet(context.Background(), pairs...)
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		tb.Fatalf("load %d keys: %v", len(keys), err)
	}
}

func dbSize(tb testing.TB, rdb *redis.Client) int64 {
	tb.Helper()
	n, err := rdb.DBSize(context.Background()).Result()
	if err != nil {
		tb.Fatalf("DBSIZE: %v", err)
	}
	return n
}

// existing returns the keys, among keys, that exist, with one pipelined
// EXISTS per key so the failure message can name them.
func existing(tb testing.TB, rdb *redis.Client, keys []string) []string {
	tb.Helper()
	if len(keys) == 0 {
		return nil
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Exists(context.Background(), k)
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		tb.Fatalf("EXISTS %d keys: %v", len(keys), err)
	}
	var out []string
	for i, c := range cmds {
		if c.Val() == 1 {
			out = append(out, keys[i])
		}
	}
	return out
}

// scanAll returns every key matching pattern.
func scanAll(tb testing.TB, rdb *redis.Client, pattern string) []string {
	tb.Helper()
	var keys []string
	iter := rdb.Scan(context.Background(), 0, pattern, 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		tb.Fatalf("SCAN %q: %v", pattern, err)
	}
	return keys
}

func requireGone(tb testing.TB, rdb *redis.Client, keys []string) {
	tb.Helper()
	if left := existing(tb, rdb, keys); len(left) > 0 {
		tb.Errorf("%d of %d keys still exist, first %q", len(left), len(keys), left[0])
	}
}

func requireKept(tb testing.TB, rdb *redis.Client, keys []string) {
	tb.Helper()
	if got := existing(tb, rdb, keys); len(got) != len(keys) {
		missing := slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return slices.Contains(got, k) })
		tb.Errorf("%d of %d keys are gone, first %q", len(missing), len(keys), missing[0])
	}
}

func concat(parts ...[]string) []string { return slices.Concat(parts...) }

// Course 42's key space, the neighbours a sloppy pattern would also hit.
var course42Neighbours = []string{
	"cache:course_analytics:42",
	"cache:course_analytics:420",
	"cache:course_analytics:420:x",
	"cache:course_analytics:4",
}

func TestEngineInvalidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		givenKeys   []string
		givenSeeds  []seed
		givenConfig worker.EngineConfig
		job         worker.Job
		// wantRemoved is Result.Removed, and the keys the job took out of DBSIZE.
		wantRemoved       int64
		wantGone          []string
		wantKept          []string
		wantScanCallsOver int64
	}{
		{
			name:        "exact keys in one call, missing keys ignored",
			givenKeys:   []string{"session:1", "session:2", "session:3", "session:4"},
			job:         worker.Job{Exact: []string{"session:1", "session:2", "session:3", "session:missing"}},
			wantRemoved: 3,
			wantGone:    []string{"session:1", "session:2", "session:3"},
			wantKept:    []string{"session:4"},
		},
		{
			name:      "only missing exact keys",
			givenKeys: []string{"session:1"},
			job:       worker.Job{Exact: []string{"session:2", "session:3"}},
			wantKept:  []string{"session:1"},
		},
		{
			name:        "pattern sweep leaves course 420, 4 and unrelated keys",
			givenKeys:   course42Neighbours,
			givenSeeds:  []seed{{"cache:course_analytics:42", 5000}, {"other", 10_000}},
			job:         worker.Job{Patterns: []string{"cache:course_analytics:42:*"}},
			wantRemoved: 5000,
			wantGone:    keysOf(seed{"cache:course_analytics:42", 5000}),
			wantKept:    concat(course42Neighbours, keysOf(seed{"other", 10_000})),
		},
		{
			name:       "several patterns and an exact key in one job",
			givenSeeds: []seed{{"cache:course:1", 1000}, {"cache:user:7", 2000}, {"cache:course:2", 500}},
			job: worker.Job{
				Exact:    []string{"cache:course:2:0"},
				Patterns: []string{"cache:course:1:*", "cache:user:7:*"},
			},
			wantRemoved: 3001,
			wantGone:    concat(keysOf(seed{"cache:course:1", 1000}), keysOf(seed{"cache:user:7", 2000}), []string{"cache:course:2:0"}),
			wantKept:    keysOf(seed{"cache:course:2", 500})[1:],
		},
		{
			name:        "exact keys beyond one UNLINK command",
			givenSeeds:  []seed{{"big", 2500}, {"other", 100}},
			job:         worker.Job{Exact: concat(keysOf(seed{"big", 2500}), keysOf(seed{"absent", 10}))},
			wantRemoved: 2500,
			wantGone:    keysOf(seed{"big", 2500}),
			wantKept:    keysOf(seed{"other", 100}),
		},
		{
			name:              "small ScanCount pages through everything",
			givenSeeds:        []seed{{"cache:page", 3000}, {"other", 3000}},
			givenConfig:       worker.EngineConfig{ScanCount: 10},
			job:               worker.Job{Patterns: []string{"cache:page:*"}},
			wantRemoved:       3000,
			wantGone:          keysOf(seed{"cache:page", 3000}),
			wantKept:          keysOf(seed{"other", 3000}),
			wantScanCallsOver: 1,
		},
		{
			name:        "exact keys with glob metacharacters are literal",
			givenKeys:   []string{"user:*", "user:?", "user:[ab]", "user:1", "user:a"},
			job:         worker.Job{Exact: []string{"user:*", "user:?", "user:[ab]"}},
			wantRemoved: 3,
			wantGone:    []string{"user:*", "user:?", "user:[ab]"},
			wantKept:    []string{"user:1", "user:a"},
		},
		{
			name:        "escaped pattern matches only the literal key",
			givenKeys:   []string{"user:*", "user:1", "user:a"},
			job:         worker.Job{Patterns: []string{`user:\*`}},
			wantRemoved: 1,
			wantGone:    []string{"user:*"},
			wantKept:    []string{"user:1", "user:a"},
		},
		{
			name:        "key both exact and matched is counted once",
			givenSeeds:  []seed{{"cache:dup", 100}},
			job:         worker.Job{Exact: []string{"cache:dup:0"}, Patterns: []string{"cache:dup:*"}},
			wantRemoved: 100,
			wantGone:    keysOf(seed{"cache:dup", 100}),
		},
		{
			name:        "overlapping patterns swept at once count each key once",
			givenSeeds:  []seed{{"cache:course", 1000}, {"cache:misc", 1000}, {"other", 500}},
			job:         worker.Job{Patterns: []string{"cache:*", "cache:course:*"}},
			wantRemoved: 2000,
			wantGone:    concat(keysOf(seed{"cache:course", 1000}), keysOf(seed{"cache:misc", 1000})),
			wantKept:    keysOf(seed{"other", 500}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rdb := engineRedis(t)
			setKeys(t, rdb, tt.givenKeys...)
			loadSeeds(t, rdb, tt.givenSeeds...)
			before := dbSize(t, rdb)

			got, err := worker.NewRedisEngine(rdb, tt.givenConfig).Invalidate(t.Context(), tt.job)
			if err != nil {
				t.Fatalf("Invalidate: %v", err)
			}

			if got.Removed != tt.wantRemoved {
				t.Errorf("Removed = %d, want %d", got.Removed, tt.wantRemoved)
			}
			if after := dbSize(t, rdb); after != before-tt.wantRemoved {
				t.Errorf("DBSIZE = %d, want %d", after, before-tt.wantRemoved)
			}
			requireGone(t, rdb, tt.wantGone)
			requireKept(t, rdb, tt.wantKept)
			for _, p := range tt.job.Patterns {
				if left := scanAll(t, rdb, p); len(left) > 0 {
					t.Errorf("%d keys still match %q, first %q", len(left), p, left[0])
				}
			}
			if got.ScanCalls <= tt.wantScanCallsOver && tt.wantScanCallsOver > 0 {
				t.Errorf("ScanCalls = %d, want more than %d", got.ScanCalls, tt.wantScanCallsOver)
			}
			if len(tt.job.Patterns) == 0 && got.ScanCalls != 0 {
				t.Errorf("ScanCalls = %d for a job without patterns, want 0", got.ScanCalls)
			}
			if len(tt.job.Exact) == 0 && got.Scanned < got.Removed {
				t.Errorf("Scanned = %d < Removed = %d for a pattern-only job", got.Scanned, got.Removed)
			}
		})
	}
}

func TestEngineInvalidateErrors(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name        string
		givenSeeds  []seed
		givenConfig worker.EngineConfig
		givenCtx    context.Context
		job         worker.Job
		wantErr     error
		// wantScanCalls is Result.ScanCalls when the job fails.
		wantScanCalls int64
	}{
		{
			name:          "MaxScanCalls stops a sweep of a large keyspace",
			givenSeeds:    []seed{{"cache:long", 20_000}},
			givenConfig:   worker.EngineConfig{ScanCount: 10, MaxScanCalls: 1},
			job:           worker.Job{Patterns: []string{"cache:long:*"}},
			wantErr:       worker.ErrSweepTooLong,
			wantScanCalls: 1,
		},
		{
			name:       "cancelled context, exact keys",
			givenSeeds: []seed{{"session", 100}},
			givenCtx:   cancelled,
			job:        worker.Job{Exact: keysOf(seed{"session", 100})},
			wantErr:    context.Canceled,
		},
		{
			name:       "cancelled context, patterns",
			givenSeeds: []seed{{"cache:a", 1000}, {"cache:b", 1000}},
			givenCtx:   cancelled,
			job:        worker.Job{Patterns: []string{"cache:a:*", "cache:b:*"}},
			wantErr:    context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rdb := engineRedis(t)
			loadSeeds(t, rdb, tt.givenSeeds...)
			before := dbSize(t, rdb)
			ctx := cmpCtx(tt.givenCtx, t.Context())

			got, err := worker.NewRedisEngine(rdb, tt.givenConfig).Invalidate(ctx, tt.job)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Invalidate error = %v, want %v", err, tt.wantErr)
			}

			after := dbSize(t, rdb)
			if after == 0 {
				t.Errorf("DBSIZE = 0, want keys left after a job that failed")
			}
			if after != before-got.Removed {
				t.Errorf("DBSIZE = %d, want %d - Removed %d = %d", after, before, got.Removed, before-got.Removed)
			}
			if got.ScanCalls != tt.wantScanCalls {
				t.Errorf("ScanCalls = %d, want %d", got.ScanCalls, tt.wantScanCalls)
			}
		})
	}
}

func cmpCtx(ctx, fallback context.Context) context.Context {
	if ctx == nil {
		return fallback
	}
	return ctx
}

// cancelOnPage is a slog.Handler that cancels a context when the engine logs
// its nth SCAN page (EngineConfig.Logger gets one debug line per page).
type cancelOnPage struct {
	n      int64
	pages  atomic.Int64
	cancel context.CancelFunc
}

func (h *cancelOnPage) Enabled(context.Context, slog.Level) bool { return true }
func (h *cancelOnPage) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *cancelOnPage) WithGroup(string) slog.Handler            { return h }

func (h *cancelOnPage) Handle(context.Context, slog.Record) error {
	if h.pages.Add(1) == h.n {
		h.cancel()
	}
	return nil
}

// A context cancelled between two pages stops the sweep at the next round trip.
func TestEngineSweepStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	rdb := engineRedis(t)
	loadSeeds(t, rdb, seed{"cache:course:9", 5000})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	h := &cancelOnPage{n: 2, cancel: cancel}
	eng := worker.NewRedisEngine(rdb, worker.EngineConfig{ScanCount: 100, Logger: slog.New(h)})

	got, err := eng.Invalidate(ctx, worker.Job{Patterns: []string{"cache:course:9:*"}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Invalidate error = %v, want context.Canceled", err)
	}

	if got.ScanCalls != 2 {
		t.Errorf("ScanCalls = %d, want 2 (cancelled after the 2nd page)", got.ScanCalls)
	}
	left := dbSize(t, rdb)
	if left == 0 || left != 5000-got.Removed {
		t.Errorf("DBSIZE = %d, want 5000 - Removed %d, above 0", left, got.Removed)
	}
}

func TestEnginePreview(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		givenKeys   []string
		givenSeeds  []seed
		givenConfig worker.EngineConfig
		job         worker.Job
		want        []string
	}{
		{
			name:       "exact keys and patterns",
			givenKeys:  []string{"session:1", "session:2"},
			givenSeeds: []seed{{"cache:p", 3000}, {"cache:q", 200}, {"other", 1000}},
			job: worker.Job{
				Exact:    []string{"session:1", "session:missing"},
				Patterns: []string{"cache:p:*", "cache:q:*"},
			},
			want: concat(keysOf(seed{"cache:p", 3000}), keysOf(seed{"cache:q", 200}), []string{"session:1"}),
		},
		{
			name:        "small ScanCount",
			givenSeeds:  []seed{{"cache:course_analytics:42", 2000}, {"other", 2000}},
			givenKeys:   course42Neighbours,
			givenConfig: worker.EngineConfig{ScanCount: 7},
			job:         worker.Job{Patterns: []string{"cache:course_analytics:42:*"}},
			want:        keysOf(seed{"cache:course_analytics:42", 2000}),
		},
		{
			name:       "overlapping patterns",
			givenSeeds: []seed{{"cache:course", 500}, {"cache:misc", 500}, {"other", 500}},
			job:        worker.Job{Patterns: []string{"cache:*", "cache:course:*"}},
			want:       concat(keysOf(seed{"cache:course", 500}), keysOf(seed{"cache:misc", 500})),
		},
		{
			name:      "glob metacharacters in exact keys",
			givenKeys: []string{"user:*", "user:1"},
			job:       worker.Job{Exact: []string{"user:*", "user:?"}},
			want:      []string{"user:*"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rdb := engineRedis(t)
			setKeys(t, rdb, tt.givenKeys...)
			loadSeeds(t, rdb, tt.givenSeeds...)
			before := dbSize(t, rdb)

			var (
				mu    sync.Mutex
				seen  = map[string]bool{}
				calls int64
			)
			got, err := worker.NewRedisEngine(rdb, tt.givenConfig).Preview(t.Context(), tt.job, func(k string) {
				mu.Lock()
				defer mu.Unlock()
				seen[k] = true
				calls++
			})
			if err != nil {
				t.Fatalf("Preview: %v", err)
			}

			reported := slices.Sorted(maps.Keys(seen))
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(reported, want) {
				t.Errorf("Preview reported %d keys, want %d; extra %q, missing %q",
					len(reported), len(want), firstNotIn(reported, want), firstNotIn(want, reported))
			}
			if got.Removed != calls {
				t.Errorf("Removed = %d, want %d (the keys reported)", got.Removed, calls)
			}
			if after := dbSize(t, rdb); after != before {
				t.Errorf("DBSIZE = %d after Preview, want %d", after, before)
			}
			requireKept(t, rdb, tt.want)
		})
	}
}

// firstNotIn returns the first key of a not in sorted b, or "".
func firstNotIn(a, b []string) string {
	for _, k := range a {
		if _, ok := slices.BinarySearch(b, k); !ok {
			return k
		}
	}
	return ""
}
