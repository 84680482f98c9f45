package cache

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// benchValue is a course analytics answer of about 1 KiB.
func benchValue() map[string]any {
	v := map[string]any{"course": "42", "students": 31, "score": 0.8}
	weeks := make([]map[string]any, 20)
	for i := range weeks {
		weeks[i] = map[string]any{"week": i, "active": 25 + i, "completion": 0.5 + float64(i)/100}
	}
	v["weeks"] = weeks
	return v
}

// BenchmarkGetHit compares a hit through Cache.Get (one EVALSHA of
// read.lua, checking 4 generations) with a bare GET + json.Unmarshal of
// the same value, interleaved, and reports both p99s and their ratio.
func BenchmarkGetHit(b *testing.B) {
	rdb, c, _ := newTestCache(b, WithLogger(slog.New(slog.DiscardHandler)))
	ctx := context.Background()
	const key = "cache:course_analytics:42:summary"
	if err := c.Set(ctx, key, benchValue(), time.Hour); err != nil {
		b.Fatal(err)
	}
	body, _ := json.Marshal(benchValue())
	rdb.Set(ctx, "bare:course_analytics:42:summary", body, time.Hour)
	var viaCache, bare []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		var v map[string]any
		start := time.Now()
		if found, err := c.Get(ctx, key, &v); !found || err != nil {
			b.Fatal(found, err)
		}
		viaCache = append(viaCache, time.Since(start))
		var w map[string]any
		start = time.Now()
		raw, err := rdb.Get(ctx, "bare:course_analytics:42:summary").Bytes()
		if err != nil || json.Unmarshal(raw, &w) != nil {
			b.Fatal(err)
		}
		bare = append(bare, time.Since(start))
	}
	pc, pb := p99(viaCache), p99(bare)
	b.ReportMetric(float64(pc.Microseconds()), "cache-p99-µs")
	b.ReportMetric(float64(pb.Microseconds()), "bare-p99-µs")
	b.ReportMetric(float64(pc)/float64(pb), "p99-ratio")
}

func p99(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)*99/100]
}

// BenchmarkGetMissDefaultLogger reads a missing key through a Cache made
// with no WithLogger (so slog.Default(), as a service that does not choose
// meets it), interleaved with a bare GET of a missing key, and reports the
// mean of each and their ratio. Run it with stderr redirected to a file,
// as a service's log would be.
func BenchmarkGetMissDefaultLogger(b *testing.B) {
	rdb := testserver.RedisClient(b, testserver.Redis(b))
	c := mustNew(b, rdb)
	ctx := context.Background()
	var viaCache, bare time.Duration
	b.ReportAllocs()
	for b.Loop() {
		var v map[string]any
		start := time.Now()
		if found, err := c.Get(ctx, "cache:course_analytics:42:missing", &v); found || err != nil {
			b.Fatal(found, err)
		}
		viaCache += time.Since(start)
		start = time.Now()
		if err := rdb.Get(ctx, "bare:course_analytics:42:missing").Err(); err != redis.Nil {
			b.Fatal(err)
		}
		bare += time.Since(start)
	}
	b.ReportMetric(float64(viaCache.Nanoseconds())/float64(b.N), "cache-miss-ns")
	b.ReportMetric(float64(bare.Nanoseconds())/float64(b.N), "bare-miss-ns")
	b.ReportMetric(float64(viaCache)/float64(bare), "miss-ratio")
}
