package engine_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

// benchBatch is the number of events in one exact-key batch.
const benchBatch = 64

// BenchmarkExact applies a batch of 64 exact-key events (one key each)
// without and with generations, on the same server in the same run, so the
// ratio of the two is the cost of the warming guard. For reference:
// "pipelined-incr" is the scheme of worker/engine.go, INCR and PEXPIRE per
// key pipelined with the UNLINKs; "unlink-with-gen" and "unlink-gens-first"
// are the cheaper form for exact keys that claiming fills allow (see
// engine/generation.go): the generation removed in the key's own UNLINK, or
// in one UNLINK of every generation of the batch queued before the keys'. The keys are written again, with the timer
// stopped, before each batch, and each scheme starts on an empty server.
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
		{"unlink-with-gen", func(ctx context.Context, jobs []engine.Job) error { return unlinkWithGen(ctx, rdb, jobs) }},
		{"unlink-gens-first", func(ctx context.Context, jobs []engine.Job) error { return unlinkGensFirst(ctx, rdb, jobs) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := b.Context()
			if err := rdb.FlushDB(ctx).Err(); err != nil { // no generation left by the previous scheme
				b.Fatal(err)
			}
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
			g := "legacy:" + guard.Key(k) // its own keys: INCR needs integers, the engine writes tokens
			pipe.Incr(ctx, g)
			pipe.PExpire(ctx, g, guard.TTL)
		}
	}
	for _, j := range jobs {
		pipe.Unlink(ctx, j.Exact...)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// unlinkWithGen removes each job's keys and their generation keys in one
// UNLINK per job: UNLINK k gen:k.
func unlinkWithGen(ctx context.Context, rdb *redis.Client, jobs []engine.Job) error {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(jobs))
	for i, j := range jobs {
		args := make([]string, 0, 2*len(j.Exact))
		for _, k := range j.Exact {
			args = append(args, k, guard.Key(k))
		}
		cmds[i] = pipe.Unlink(ctx, args...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	for _, c := range cmds {
		if c.Val() != 1 { // no fill claimed a generation here
			return errBench
		}
	}
	return nil
}

// unlinkGensFirst removes the generation keys of the whole batch in one
// UNLINK, then each job's keys in an UNLINK of its own, in one pipeline.
func unlinkGensFirst(ctx context.Context, rdb *redis.Client, jobs []engine.Job) error {
	pipe := rdb.Pipeline()
	var gens []string
	for _, j := range jobs {
		for _, k := range j.Exact {
			gens = append(gens, guard.Key(k))
		}
	}
	pipe.Unlink(ctx, gens...)
	cmds := make([]*redis.IntCmd, len(jobs))
	for i, j := range jobs {
		cmds[i] = pipe.Unlink(ctx, j.Exact...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	for _, c := range cmds {
		if c.Val() != 1 {
			return errBench
		}
	}
	return nil
}
