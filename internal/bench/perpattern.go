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
// swept at once. It passes engine/enginetest (perpattern_test.go). It
// moves no generation: a job's Capture holds only the first
// engine.MaxCapturedKeys keys each pattern's sweep matched.
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
		var capture *engine.Capture
		if job.Capture {
			capture = &engine.Capture{}
		}
		if errs[i] != nil || len(job.Patterns) == 0 {
			done(i, engine.Result{Removed: removed[i], Duration: time.Since(start), Capture: capture}, errs[i])
			continue
		}
		p.Go(func() {
			res, err := e.sweepAll(ctx, job.Patterns, capture)
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
// With capture set, the first engine.MaxCapturedKeys keys each pattern
// matched go to its Removed.
func (e perPattern) sweepAll(ctx context.Context, patterns []string, capture *engine.Capture) (engine.Result, error) {
	total := engine.Result{Capture: capture}
	results := make([]engine.Result, len(patterns))
	kept := make([][]string, len(patterns))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(perPatternConcurrency)
	for i, p := range patterns {
		g.Go(func() (err error) {
			results[i], kept[i], err = e.sweep(gctx, p, capture != nil)
			return err
		})
	}
	err := g.Wait()
	for i, r := range results {
		total.Add(r)
		if capture != nil {
			if capture.Removed == nil {
				capture.Removed = map[string][]string{}
			}
			capture.Removed[patterns[i]] = kept[i]
		}
	}
	return total, err
}

// sweep removes every key matching pattern. Each round trip is one pipeline
// holding UNLINK of the page in hand and SCAN of the next page.
// With keep, it also returns the first engine.MaxCapturedKeys keys matched.
func (e perPattern) sweep(ctx context.Context, pattern string, keep bool) (engine.Result, []string, error) {
	var (
		res     engine.Result
		cursor  uint64
		pending []string
		kept    []string
	)
	for calls := 0; ; calls++ {
		if calls >= perPatternMaxCalls {
			n, _ := e.unlinkPage(ctx, pending)
			res.Removed += n
			return res, kept, fmt.Errorf("sweep %q: %w after %d SCAN calls", pattern, errSweepTooLong, calls)
		}
		keys, next, removed, err := e.page(ctx, pattern, cursor, pending)
		if err != nil {
			return res, kept, fmt.Errorf("sweep %q: %w", pattern, err)
		}
		if keep {
			kept = append(kept, keys[:min(len(keys), engine.MaxCapturedKeys-len(kept))]...)
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
		return res, kept, fmt.Errorf("sweep %q: %w", pattern, err)
	}
	return res, kept, nil
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
