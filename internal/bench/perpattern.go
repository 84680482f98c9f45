package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/redis/go-redis/v9"
	"github.com/sourcegraph/conc/pool"
	"golang.org/x/sync/errgroup"
)

// perPattern is the engine as it was before shared sweeps, kept here as
// the benchmark's baseline: each pattern walks the whole keyspace with its
// own SCAN MATCH cursor, so every pattern of every event costs a pass.
// Exact keys of a batch go in one pipelined round trip; then at most
// perPatternConcurrency pattern jobs, and as many patterns of one job, are
// swept at once. It passes engine/enginetest (perpattern_test.go).
type perPattern struct {
	rdb *redis.Client
}

const (
	perPatternConcurrency = 4    // the engine's SweepConcurrency default then
	perPatternScanCount   = 1000 // engine.DefaultScanCount
	perPatternMaxCalls    = 1 << 22
	perPatternUnlinkChunk = 1000
)

// errSweepTooLong: a sweep hit perPatternMaxCalls.
var errSweepTooLong = errors.New("too many SCAN calls")

// Apply implements engine.Engine.
func (e perPattern) Apply(ctx context.Context, jobs []engine.Job, done func(int, engine.Result, error)) {
	start := time.Now()
	removed, errs := make([]int64, len(jobs)), make([]error, len(jobs))
	if err := ctx.Err(); err != nil {
		for i := range jobs {
			done(i, engine.Result{}, fmt.Errorf("invalidate: %w", err))
		}
		return
	}
	e.exactMany(ctx, jobs, removed, errs)
	p := pool.New().WithMaxGoroutines(perPatternConcurrency)
	for i, job := range jobs {
		if errs[i] != nil || len(job.Patterns) == 0 {
			done(i, engine.Result{Removed: removed[i], Duration: time.Since(start)}, errs[i])
			continue
		}
		p.Go(func() {
			res, err := e.sweepAll(ctx, job.Patterns)
			res.Removed += removed[i]
			res.Duration = time.Since(start)
			done(i, res, err)
		})
	}
	p.Wait()
}

// exactMany removes the exact keys of every job in one pipelined round
// trip, and fills each job's count and error.
func (e perPattern) exactMany(ctx context.Context, jobs []engine.Job, removed []int64, errs []error) {
	pipe := e.rdb.Pipeline()
	cmds := make([][]*redis.IntCmd, len(jobs))
	for i, job := range jobs {
		for c := range slices.Chunk(job.Exact, perPatternUnlinkChunk) {
			cmds[i] = append(cmds[i], pipe.Unlink(ctx, c...))
		}
	}
	if pipe.Len() == 0 {
		return
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, job := range jobs {
		for _, c := range cmds[i] {
			if err := c.Err(); err != nil {
				errs[i] = fmt.Errorf("unlink %d keys: %w", len(job.Exact), err)
				break
			}
			removed[i] += c.Val()
		}
	}
}

// sweepAll sweeps patterns concurrently, at most perPatternConcurrency at
// once; the first failure cancels the others.
func (e perPattern) sweepAll(ctx context.Context, patterns []string) (engine.Result, error) {
	var total engine.Result
	results := make([]engine.Result, len(patterns))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(perPatternConcurrency)
	for i, p := range patterns {
		g.Go(func() (err error) {
			results[i], err = e.sweep(gctx, p)
			return err
		})
	}
	err := g.Wait()
	for _, r := range results {
		total.Add(r)
	}
	return total, err
}

// sweep removes every key matching pattern. Each round trip is one pipeline
// holding UNLINK of the page in hand and SCAN of the next page.
func (e perPattern) sweep(ctx context.Context, pattern string) (engine.Result, error) {
	var (
		res     engine.Result
		cursor  uint64
		pending []string
	)
	for calls := 0; ; calls++ {
		if calls >= perPatternMaxCalls {
			n, _ := e.unlinkPage(ctx, pending)
			res.Removed += n
			return res, fmt.Errorf("sweep %q: %w after %d SCAN calls", pattern, errSweepTooLong, calls)
		}
		keys, next, removed, err := e.page(ctx, pattern, cursor, pending)
		if err != nil {
			return res, fmt.Errorf("sweep %q: %w", pattern, err)
		}
		res.ScanCalls++
		res.Scanned += int64(len(keys))
		res.Removed += removed
		pending, cursor = keys, next
		if cursor == 0 {
			break
		}
	}
	n, err := e.unlinkPage(ctx, pending)
	res.Removed += n
	if err != nil {
		return res, fmt.Errorf("sweep %q: %w", pattern, err)
	}
	return res, nil
}

// page sends UNLINK of pending (if any) and one SCAN in one round trip.
func (e perPattern) page(ctx context.Context, pattern string, cursor uint64, pending []string) ([]string, uint64, int64, error) {
	if len(pending) == 0 {
		keys, next, err := e.rdb.Scan(ctx, cursor, pattern, perPatternScanCount).Result()
		return keys, next, 0, err
	}
	pipe := e.rdb.Pipeline()
	unlink := pipe.Unlink(ctx, pending...)
	scan := pipe.Scan(ctx, cursor, pattern, perPatternScanCount)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, 0, err
	}
	keys, next := scan.Val()
	return keys, next, unlink.Val(), nil
}

// unlinkPage removes the keys of one SCAN page (at most about
// perPatternScanCount), in one UNLINK.
func (e perPattern) unlinkPage(ctx context.Context, keys []string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	n, err := e.rdb.Unlink(ctx, keys...).Result()
	if err != nil {
		return 0, fmt.Errorf("unlink %d keys: %w", len(keys), err)
	}
	return n, nil
}
