package engine_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/invalidator/invalidator/engine"
	"github.com/redis/go-redis/v9"
)

// benchBatch is the number of events in one exact-key batch.
const benchBatch = 64

// BenchmarkExact applies a batch of 64 exact-key events (one key each)
// without and with generations, on the same server in the same run, so the
// ratio of the two is the cost of the warming guard. "pipelined-incr" is
// the scheme of worker/engine.go for reference: INCR and PEXPIRE per key
// pipelined with the UNLINKs. The keys are written again, with the timer
// stopped, before each batch.
//
//	go test ./engine -run '^$' -bench BenchmarkExact -count 5
func BenchmarkExact(b *testing.B) {
	_, rdb := newRedis(b, engine.Config{})
	jobs := make([]engine.Job, benchBatch)
	pairs := make([]any, 0, 2*benchBatch)
	for i := range jobs {
		k := "cache:course:" + strconv.Itoa(i)
		jobs[i] = engine.Job{Exact: []string{k}}
		pairs = append(pairs, k, "v")
	}
	for _, bc := range []struct {
		name  string
		apply func(ctx context.Context, jobs []engine.Job) error
	}{
		{"generations=false", engineApply(b, rdb, engine.Config{})},
		{"generations=true", engineApply(b, rdb, engine.Config{Generations: true})},
		{"pipelined-incr", func(ctx context.Context, jobs []engine.Job) error { return pipelinedIncr(ctx, rdb, jobs) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := b.Context()
			for b.Loop() {
				b.StopTimer()
				if err := rdb.MSet(ctx, pairs...).Err(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := bc.apply(ctx, jobs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/event")
		})
	}
}

func engineApply(b *testing.B, rdb *redis.Client, cfg engine.Config) func(context.Context, []engine.Job) error {
	e, err := engine.NewRedis(rdb, cfg)
	if err != nil {
		b.Fatal(err)
	}
	return func(ctx context.Context, jobs []engine.Job) error {
		var failed error
		e.Apply(ctx, jobs, func(_ int, res engine.Result, err error) {
			if err == nil && res.Removed != 1 {
				failed = errBench
			} else if err != nil {
				failed = err
			}
		})
		return failed
	}
}

var errBench = redis.Nil

// pipelinedIncr is worker/engine.go's scheme: INCR and PEXPIRE of each
// generation key, then the UNLINKs, in one pipeline.
func pipelinedIncr(ctx context.Context, rdb *redis.Client, jobs []engine.Job) error {
	pipe := rdb.Pipeline()
	for _, j := range jobs {
		for _, k := range j.Exact {
			g := "legacy:" + engine.GenerationKey(k) // its own keys: INCR needs integers, the engine writes tokens
			pipe.Incr(ctx, g)
			pipe.PExpire(ctx, g, engine.DefaultGenerationTTL)
		}
	}
	for _, j := range jobs {
		pipe.Unlink(ctx, j.Exact...)
	}
	_, err := pipe.Exec(ctx)
	return err
}
