// Benchmarks of the SCAN/UNLINK engine against a real redis-server. The
// figures for the README come from:
//
//	go test ./worker -run '^$' -bench BenchmarkPurge -benchtime 3x -timeout 20m

package worker_test

import (
	"context"
	"testing"

	"github.com/invalidator/invalidator/worker"
	"github.com/redis/go-redis/v9"
)

// The purge benchmark's keyspace: 1,000,000 keys, of which 100,000 match.
var (
	benchUnrelated = seed{"other", 900_000}
	benchMatching  = seed{"cache:course_analytics:42", 100_000}
)

const benchPattern = "cache:course_analytics:42:*"

// purgeFunc removes every key matching pattern and returns how many it removed.
type purgeFunc func(ctx context.Context, rdb *redis.Client, pattern string) (int64, error)

// BenchmarkPurge removes the 100,000 keys of benchPattern from a keyspace of
// 1,000,000, with the engine and with the naive loop, in the same run on the
// same server. The 100,000 keys are loaded again, with the timer stopped,
// before each iteration, and each iteration fails unless exactly the 900,000
// unrelated keys are left. The naive loop takes seconds per iteration; run it
// with -benchtime Nx:
//
//	go test ./worker -run '^$' -bench BenchmarkPurge -benchtime 3x -timeout 20m
func BenchmarkPurge(b *testing.B) {
	if testing.Short() {
		b.Skip("loads 1,000,000 keys into Redis")
	}
	rdb := engineRedis(b)
	loadSeeds(b, rdb, benchUnrelated)
	engine := worker.NewRedisEngine(rdb, worker.EngineConfig{ScanCount: 1000})
	purges := []struct {
		name  string
		purge purgeFunc
	}{
		{"engine", func(ctx context.Context, _ *redis.Client, pattern string) (int64, error) {
			res, err := engine.Invalidate(ctx, worker.Job{Patterns: []string{pattern}})
			return res.Removed, err
		}},
		{"naive", naivePurge},
	}
	for _, p := range purges {
		b.Run(p.name, func(b *testing.B) { benchPurge(b, rdb, p.purge) })
	}
}

// benchPurge times purge alone: loading the matching keys and checking what
// is left happen with the timer stopped.
func benchPurge(b *testing.B, rdb *redis.Client, purge purgeFunc) {
	b.ReportAllocs()
	var removed int64
	for b.Loop() {
		b.StopTimer()
		loadSeeds(b, rdb, benchMatching)
		requireDBSize(b, rdb, int64(benchUnrelated.n+benchMatching.n))
		b.StartTimer()

		n, err := purge(b.Context(), rdb, benchPattern)

		b.StopTimer()
		if err != nil {
			b.Fatalf("purge: %v", err)
		}
		if n != int64(benchMatching.n) {
			b.Fatalf("purge removed %d keys, want %d", n, benchMatching.n)
		}
		requireDBSize(b, rdb, int64(benchUnrelated.n))
		removed += n
		b.StartTimer()
	}
	b.ReportMetric(float64(removed)/b.Elapsed().Seconds(), "keys/s")
}

// naivePurge is the baseline: SCAN MATCH with COUNT 10, then one DEL per key.
func naivePurge(ctx context.Context, rdb *redis.Client, pattern string) (int64, error) {
	var (
		removed int64
		cursor  uint64
	)
	for {
		keys, next, err := rdb.Scan(ctx, cursor, pattern, 10).Result()
		if err != nil {
			return removed, err
		}
		for _, k := range keys {
			n, err := rdb.Del(ctx, k).Result()
			if err != nil {
				return removed, err
			}
			removed += n
		}
		if next == 0 {
			return removed, nil
		}
		cursor = next
	}
}

// BenchmarkExactKeys sends 10,000 jobs of one exact key each, one after the
// other, through Invalidate; one op is the 10,000 jobs.
func BenchmarkExactKeys(b *testing.B) {
	rdb := engineRedis(b)
	engine := worker.NewRedisEngine(rdb, worker.EngineConfig{})
	keys := keysOf(seed{"session", 10_000})
	b.ReportAllocs()
	var jobs int
	for b.Loop() {
		b.StopTimer()
		setKeys(b, rdb, keys...)
		b.StartTimer()

		for _, k := range keys {
			res, err := engine.Invalidate(b.Context(), worker.Job{Exact: []string{k}})
			if err != nil {
				b.Fatalf("Invalidate %q: %v", k, err)
			}
			if res.Removed != 1 {
				b.Fatalf("Invalidate %q removed %d keys, want 1", k, res.Removed)
			}
		}

		b.StopTimer()
		requireDBSize(b, rdb, 0)
		jobs += len(keys)
		b.StartTimer()
	}
	b.ReportMetric(float64(jobs)/b.Elapsed().Seconds(), "jobs/s")
}

func requireDBSize(b *testing.B, rdb *redis.Client, want int64) {
	b.Helper()
	if got := dbSize(b, rdb); got != want {
		b.Fatalf("DBSIZE = %d, want %d", got, want)
	}
}
