// Package engine removes cache keys from Redis: the seam between the
// consumer, which turns events into jobs, and the keyspace.
//
// An [Engine] takes the jobs of a batch of events and reports each job's
// outcome on its own, so strategies such as one shared SCAN walk for many
// patterns, or a Redis Cluster that scans every master and groups keys by
// slot, fit behind it without touching the consumer. [Redis] is the engine
// for a single server (a standalone Redis or the master a Sentinel names).
// Every engine passes the contract suite in package enginetest.
//
// The invalidation side of the generation guard lives here too (the
// protocol and its keys are in package guard): an engine with
// [Config.Generations] set removes the generation of every exact key and
// gives every pattern's scope a fresh one before it removes anything.
package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/redis/go-redis/v9"
	"github.com/sourcegraph/conc/pool"
)

// Job is what one event asks the engine to remove.
type Job struct {
	// Exact keys are removed with UNLINK, without SCAN.
	Exact []string
	// Patterns are Redis glob patterns; every key matching one is removed.
	Patterns []string
	// Capture asks the engine to report, in Result.Capture, the generation
	// tokens the job displaced and a sample of the keys its patterns
	// removed (see Capture), for the consistency checker. It costs a reply
	// per generation key and keeps the job's own generations out of the
	// batch's UNLINK; the keys removed are the same.
	Capture bool
}

// Result counts what the engine did for one job.
type Result struct {
	// Scanned is the number of keys the SCAN pages returned (keys matching a pattern).
	Scanned int64
	// Removed is the number of keys UNLINK removed.
	Removed int64
	// ScanCalls is the number of SCAN commands sent.
	ScanCalls int64
	// Duration is the wall time of the job.
	Duration time.Duration
	// Capture is what the job moved in the generation guard, for a job
	// with Job.Capture set; nil otherwise.
	Capture *Capture
}

// Add adds the counts of o to r (not the duration, nor the capture).
func (r *Result) Add(o Result) {
	r.Scanned += o.Scanned
	r.Removed += o.Removed
	r.ScanCalls += o.ScanCalls
}

// Engine removes keys from Redis.
type Engine interface {
	// Apply removes every exact key and every key matching a pattern of each
	// job. It calls done exactly once per job, with the job's index, as soon
	// as that job's keys are all gone or it failed (calls may come from
	// several goroutines at once), and returns after the last call. A job
	// with exact keys only never waits for another job's patterns. Once ctx
	// is done, the work stops and the jobs not yet complete fail with an
	// error wrapping ctx.Err().
	Apply(ctx context.Context, jobs []Job, done func(i int, res Result, err error))
}

// Invalidate runs one job through e and returns its result.
func Invalidate(ctx context.Context, e Engine, job Job) (Result, error) {
	var (
		res Result
		err error
	)
	e.Apply(ctx, []Job{job}, func(_ int, r Result, e error) { res, err = r, e })
	return res, err
}

// ErrSweepTooLong means a pass of the shared walk hit [Config.MaxScanCalls].
var ErrSweepTooLong = errors.New("too many SCAN calls")

// apply is the flow every engine's Apply shares: the exact keys of all
// jobs first (exact), then the exact-only jobs are done, before any sweep
// starts; then every pattern job joins the shared walk (sweep) in its own
// goroutine at once, and is done as soon as it completes.
//
// A job with Capture gets its Capture from exact, and the sample of the
// keys its sweep removed (sweep's sample argument is then
// MaxCapturedKeys, else 0).
func apply(ctx context.Context, jobs []Job, done func(int, Result, error),
	exact func(context.Context, []Job) ([]int64, []error, captures), sweep func(context.Context, []string, int) (Result, error)) {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		for i := range jobs {
			done(i, Result{}, fmt.Errorf("invalidate: %w", err))
		}
		return
	}
	removed, errs, caps := exact(ctx, jobs)
	var sweeps []int
	for i, job := range jobs {
		if errs[i] != nil || len(job.Patterns) == 0 {
			done(i, Result{Removed: removed[i], Duration: time.Since(start), Capture: caps.of(i)}, errs[i])
			continue
		}
		sweeps = append(sweeps, i)
	}
	p := pool.New()
	for _, i := range sweeps {
		p.Go(func() {
			sample, cp := 0, caps.of(i)
			if cp != nil {
				sample = MaxCapturedKeys
			}
			res, err := sweep(ctx, jobs[i].Patterns, sample)
			res.Removed += removed[i]
			res.Duration = time.Since(start)
			if cp != nil {
				if res.Capture != nil {
					cp.Removed = res.Capture.Removed
				}
				res.Capture = cp
			}
			done(i, res, err)
		})
	}
	p.Wait()
}

// readJob returns the count and the first error of one job's commands: the
// generation commands it depends on (gens), then its UNLINKs.
func readJob(job Job, gens []redis.Cmder, unlinks []*redis.IntCmd) (int64, error) {
	for _, g := range gens {
		if err := g.Err(); !capturedOK(err) {
			return 0, fmt.Errorf("generations: %w", err)
		}
	}
	var n int64
	for _, c := range unlinks {
		if err := c.Err(); err != nil {
			return n, fmt.Errorf("unlink %d keys: %w", len(job.Exact), err)
		}
		n += c.Val()
	}
	return n, nil
}

// walk has patterns served by the shared walk w. With sample > 0 the
// result's Capture holds up to sample of the keys removed per pattern.
func walk(ctx context.Context, w *sweep.Walker, patterns []string, sample int) (Result, error) {
	r, err := w.SweepSample(ctx, patterns, sample)
	if errors.Is(err, sweep.ErrPassTooLong) {
		err = fmt.Errorf("%w: %w", ErrSweepTooLong, err)
	}
	res := Result{Scanned: r.Examined, Removed: r.Removed, ScanCalls: r.ScanCalls}
	if sample > 0 {
		res.Capture = &Capture{Removed: r.Keys}
	}
	return res, err
}

// dryWalk reports to report every key of rdb that patterns match, in one
// dry pass of a walk of its own (removing nothing).
func dryWalk(ctx context.Context, rdb *redis.Client, cfg sweep.Config, patterns []string, report func(string)) (Result, error) {
	cfg.Observer, cfg.DryRun = nil, report
	dry := sweep.New(rdb, cfg)
	defer dry.Close()
	r, err := dry.Sweep(ctx, patterns)
	return Result{Scanned: r.Examined, Removed: r.Removed, ScanCalls: r.ScanCalls}, err
}

// serialized returns fn guarded by a mutex, so that a Preview's callback is
// never called concurrently; nil fn gives a no-op.
func serialized(fn func(key string)) func(string) {
	var mu sync.Mutex
	return func(k string) {
		if fn != nil {
			mu.Lock()
			defer mu.Unlock()
			fn(k)
		}
	}
}
