package sweep_test

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/redis/go-redis/v9"
)

var (
	benchKeys     = flag.Int("sweep.keys", 200_000, "keys in the keyspace of BenchmarkSharedSweep (20 per course)")
	benchPatterns = flag.Int("sweep.patterns", 200, "patterns (courses) swept per iteration of BenchmarkSharedSweep")
	benchSample   = flag.Int("sweep.sample", 10, "patterns swept one pass each for the per-pattern baseline, scaled to -sweep.patterns")
)

// BenchmarkSharedSweep compares, in the same run and on the same server,
// -sweep.patterns patterns served by one Walker with one full SCAN MATCH +
// UNLINK pass per pattern (timed on -sweep.sample patterns and scaled, as
// each pass costs the same). It reports both per iteration and their
// ratios.
func BenchmarkSharedSweep(b *testing.B) {
	rdb := newRedis(b)
	ctx := context.Background()
	all := courseKeys(*benchKeys/20, 20)
	fill(b, rdb, all)
	swept := all[:*benchPatterns*20]
	patterns := make([]string, *benchPatterns)
	for c := range patterns {
		patterns[c] = fmt.Sprintf("cache:course_analytics:%d:*", c)
	}
	w := newWalker(b, rdb, sweep.Config{})
	var shared, perPattern time.Duration
	var sharedCalls, perPatternCalls int64
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		fill(b, rdb, swept)
		calls := scanCalls(b, rdb)
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for _, p := range patterns {
			wg.Go(func() {
				if _, err := w.Sweep(ctx, []string{p}); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		shared += time.Since(start)
		b.StopTimer()
		sharedCalls += scanCalls(b, rdb) - calls

		fill(b, rdb, swept)
		calls = scanCalls(b, rdb)
		start = time.Now()
		for _, p := range patterns[:*benchSample] {
			onePass(b, rdb, p)
		}
		scale := float64(len(patterns)) / float64(*benchSample)
		perPattern += time.Duration(float64(time.Since(start)) * scale)
		perPatternCalls += int64(float64(scanCalls(b, rdb)-calls) * scale)
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(shared.Milliseconds())/n, "shared-ms/op")
	b.ReportMetric(float64(perPattern.Milliseconds())/n, "per-pattern-ms/op")
	b.ReportMetric(float64(perPattern)/float64(shared), "time-ratio")
	b.ReportMetric(float64(sharedCalls)/n, "shared-scans/op")
	b.ReportMetric(float64(perPatternCalls)/float64(max(sharedCalls, 1)), "scan-calls-ratio")
}

// onePass removes pattern's keys with one SCAN MATCH pass, each page's
// UNLINK pipelined with the next SCAN, as the one-pass-per-pattern engine
// (worker.RedisEngine) does.
func onePass(b *testing.B, rdb *redis.Client, pattern string) {
	ctx := context.Background()
	var cursor uint64
	var pending []string
	for {
		pipe := rdb.Pipeline()
		if len(pending) > 0 {
			pipe.Unlink(ctx, pending...)
		}
		scan := pipe.Scan(ctx, cursor, pattern, sweep.DefaultScanCount)
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		pending, cursor = scan.Val()
		if cursor == 0 {
			break
		}
	}
	if len(pending) > 0 {
		rdb.Unlink(ctx, pending...)
	}
}
