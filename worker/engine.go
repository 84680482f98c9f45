package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/redis/go-redis/v9"
	"github.com/sourcegraph/conc/pool"
	"golang.org/x/sync/errgroup"
)

// Job is what one event asks the engine to remove.
type Job struct {
	// Exact keys are removed with UNLINK, without SCAN.
	Exact []string
	// Patterns are Redis glob patterns, each swept with SCAN MATCH.
	Patterns []string
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
}

func (r *Result) add(o Result) {
	r.Scanned += o.Scanned
	r.Removed += o.Removed
	r.ScanCalls += o.ScanCalls
}

// Engine removes keys from Redis. It is the narrow seam between the consumer
// and the keyspace: the consumer hands it the jobs of a batch of events, so
// strategies such as merging many events into one pass, tag sets or Redis
// Cluster fit behind it without touching the consumer.
type Engine interface {
	// Apply removes every exact key and every key matching a pattern of each
	// job. It calls done exactly once per job, with the job's index, as soon
	// as that job's keys are all gone or it failed (calls may come from
	// several goroutines at once), and returns after the last call.
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

// Engine defaults.
const (
	// DefaultScanCount is the COUNT hint of each SCAN.
	DefaultScanCount = 1000
	// DefaultMaxScanCalls bounds one pattern sweep, a guard against a cursor that never ends.
	DefaultMaxScanCalls = 1 << 22
	// DefaultSweepConcurrency is how many patterns of one job are swept at once.
	DefaultSweepConcurrency = 4
	// unlinkChunk caps the keys of one UNLINK command.
	unlinkChunk = 1000
)

// EngineConfig configures a RedisEngine.
type EngineConfig struct {
	// ScanCount is the COUNT hint for SCAN. Defaults to DefaultScanCount.
	ScanCount int
	// MaxScanCalls bounds the SCAN calls of one pattern. Defaults to DefaultMaxScanCalls.
	MaxScanCalls int
	// SweepConcurrency is how many patterns of a job are swept in parallel.
	// Defaults to DefaultSweepConcurrency.
	SweepConcurrency int
	// Logger gets a debug line per SCAN page. Defaults to a discarding logger.
	Logger *slog.Logger
	// Generations makes every job first advance the generation of each of
	// its exact keys and of each pattern's scope, in the same round trip and
	// before anything is removed: the Warmer's guard against writing a value
	// fetched before the invalidation. Defaults to false (no warming).
	Generations bool
}

func (c EngineConfig) withDefaults() EngineConfig {
	if c.ScanCount <= 0 {
		c.ScanCount = DefaultScanCount
	}
	if c.MaxScanCalls <= 0 {
		c.MaxScanCalls = DefaultMaxScanCalls
	}
	if c.SweepConcurrency <= 0 {
		c.SweepConcurrency = DefaultSweepConcurrency
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// RedisEngine is the SCAN/UNLINK engine for a single Redis server (or a
// primary); Redis Cluster needs an engine that scans every node and groups
// keys by slot. Exact keys go in one pipelined round
// trip; each pattern is swept page by page, and every round trip carries the
// UNLINK of the previous page together with the next SCAN, so a sweep costs
// one round trip per page and never holds more than one page in memory.
type RedisEngine struct {
	rdb redis.UniversalClient
	cfg EngineConfig
}

// NewRedisEngine returns an engine on rdb.
func NewRedisEngine(rdb redis.UniversalClient, cfg EngineConfig) *RedisEngine {
	return &RedisEngine{rdb: rdb, cfg: cfg.withDefaults()}
}

// Invalidate removes the keys of one job.
func (e *RedisEngine) Invalidate(ctx context.Context, job Job) (Result, error) {
	return Invalidate(ctx, e, job)
}

// Apply implements Engine. The exact keys of all jobs go in one pipelined
// round trip; jobs with patterns are then swept concurrently (at most
// SweepConcurrency at once), and a job with exact keys only is done as soon
// as the pipeline returns.
func (e *RedisEngine) Apply(ctx context.Context, jobs []Job, done func(int, Result, error)) {
	start := time.Now()
	removed, errs := e.exactMany(ctx, jobs)
	p := pool.New().WithMaxGoroutines(e.cfg.SweepConcurrency)
	for i, job := range jobs {
		res := Result{Removed: removed[i]}
		if errs[i] != nil || len(job.Patterns) == 0 {
			res.Duration = time.Since(start)
			done(i, res, errs[i])
			continue
		}
		p.Go(func() {
			r, err := e.sweeps(ctx, job.Patterns, false, nil)
			res.add(r)
			res.Duration = time.Since(start)
			done(i, res, err)
		})
	}
	p.Wait()
}

// bump queues INCR and PEXPIRE of the generation keys of job's exact keys
// and pattern scopes.
func bump(ctx context.Context, pipe redis.Pipeliner, job Job) []*redis.IntCmd {
	seen := map[string]bool{}
	var cmds []*redis.IntCmd
	add := func(k string) {
		if k = DefaultGenerationKeyPrefix + k; !seen[k] {
			seen[k] = true
			cmds = append(cmds, pipe.Incr(ctx, k))
			pipe.PExpire(ctx, k, DefaultGenerationTTL)
		}
	}
	for _, k := range job.Exact {
		add(k)
	}
	for _, p := range job.Patterns {
		add(cachekeys.PatternScope(p))
	}
	return cmds
}

// exactMany removes the exact keys of every job in one round trip and
// returns the count and error of each job.
func (e *RedisEngine) exactMany(ctx context.Context, jobs []Job) ([]int64, []error) {
	removed, errs := make([]int64, len(jobs)), make([]error, len(jobs))
	if len(jobs) == 1 && !e.cfg.Generations {
		removed[0], errs[0] = e.exact(ctx, jobs[0].Exact, false, nil)
		return removed, errs
	}
	pipe := e.rdb.Pipeline()
	cmds := make([][]*redis.IntCmd, len(jobs))
	bumps := make([][]*redis.IntCmd, len(jobs))
	if e.cfg.Generations {
		for i, job := range jobs {
			bumps[i] = bump(ctx, pipe, job)
		}
	}
	for i, job := range jobs {
		for c := range slices.Chunk(job.Exact, unlinkChunk) {
			cmds[i] = append(cmds[i], pipe.Unlink(ctx, c...))
		}
	}
	if pipe.Len() == 0 {
		return removed, errs
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, bs := range bumps {
		for _, b := range bs {
			if err := b.Err(); err != nil {
				errs[i] = fmt.Errorf("advance generation: %w", err)
				break
			}
		}
	}
	for i, cs := range cmds {
		if errs[i] != nil {
			continue
		}
		for _, c := range cs {
			if err := c.Err(); err != nil {
				errs[i] = fmt.Errorf("unlink %d keys: %w", len(jobs[i].Exact), err)
				break
			}
			removed[i] += c.Val()
		}
	}
	return removed, errs
}

// Preview reports what Invalidate would remove without removing anything:
// fn is called with each existing exact key and each key a pattern matches
// (a key may be reported once per pattern that matches it). fn is never
// called concurrently.
func (e *RedisEngine) Preview(ctx context.Context, job Job, fn func(key string)) (Result, error) {
	start := time.Now()
	var mu sync.Mutex
	report := func(k string) {
		if fn != nil {
			mu.Lock()
			defer mu.Unlock()
			fn(k)
		}
	}
	job.Exact = slices.Compact(slices.Sorted(slices.Values(job.Exact)))
	res, err := e.run(ctx, job, true, report)
	res.Duration = time.Since(start)
	return res, err
}

func (e *RedisEngine) run(ctx context.Context, job Job, dry bool, fn func(string)) (Result, error) {
	n, err := e.exact(ctx, job.Exact, dry, fn)
	if err != nil {
		return Result{Removed: n}, err
	}
	res, err := e.sweeps(ctx, job.Patterns, dry, fn)
	res.Removed += n
	return res, err
}

// sweeps sweeps patterns concurrently, at most SweepConcurrency at once.
func (e *RedisEngine) sweeps(ctx context.Context, patterns []string, dry bool, fn func(string)) (Result, error) {
	var total Result
	results := make([]Result, len(patterns))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.cfg.SweepConcurrency)
	for i, p := range patterns {
		g.Go(func() (err error) {
			results[i], err = e.sweep(gctx, p, dry, fn)
			return err
		})
	}
	err := g.Wait()
	for _, r := range results {
		total.add(r)
	}
	return total, err
}

// exact removes (or, dry, looks up) keys in one pipelined round trip.
func (e *RedisEngine) exact(ctx context.Context, keys []string, dry bool, fn func(string)) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	if dry {
		return e.exists(ctx, keys, fn)
	}
	if len(keys) <= unlinkChunk {
		n, err := e.rdb.Unlink(ctx, keys...).Result()
		if err != nil {
			return 0, fmt.Errorf("unlink %d keys: %w", len(keys), err)
		}
		return n, nil
	}
	pipe := e.rdb.Pipeline()
	var cmds []*redis.IntCmd
	for c := range slices.Chunk(keys, unlinkChunk) {
		cmds = append(cmds, pipe.Unlink(ctx, c...))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("unlink %d keys: %w", len(keys), err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}

func (e *RedisEngine) exists(ctx context.Context, keys []string, fn func(string)) (int64, error) {
	pipe := e.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Exists(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("exists %d keys: %w", len(keys), err)
	}
	var n int64
	for i, c := range cmds {
		if c.Val() > 0 {
			n++
			if fn != nil {
				fn(keys[i])
			}
		}
	}
	return n, nil
}

// sweep removes every key matching pattern. Each round trip is one pipeline
// holding UNLINK of the page in hand and SCAN of the next page.
func (e *RedisEngine) sweep(ctx context.Context, pattern string, dry bool, fn func(string)) (Result, error) {
	var (
		res     Result
		cursor  uint64
		pending []string
	)
	for calls := 0; ; calls++ {
		if calls >= e.cfg.MaxScanCalls {
			n, _ := e.exact(ctx, pending, false, nil)
			res.Removed += n
			return res, fmt.Errorf("sweep %q: %w after %d SCAN calls", pattern, ErrSweepTooLong, calls)
		}
		keys, next, removed, err := e.page(ctx, pattern, cursor, pending, dry)
		if err != nil {
			return res, fmt.Errorf("sweep %q: %w", pattern, err)
		}
		res.ScanCalls++
		res.Scanned += int64(len(keys))
		res.Removed += removed
		e.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "🔍 scan page",
			slog.String("pattern", pattern), slog.Uint64("cursor", cursor), slog.Int("keys", len(keys)))
		if dry {
			res.Removed += int64(len(keys))
			for _, k := range keys {
				if fn != nil {
					fn(k)
				}
			}
			keys = nil
		}
		pending, cursor = keys, next
		if cursor == 0 {
			break
		}
	}
	n, err := e.exact(ctx, pending, false, nil)
	res.Removed += n
	if err != nil {
		return res, fmt.Errorf("sweep %q: %w", pattern, err)
	}
	return res, nil
}

// page sends UNLINK of pending (if any) and one SCAN in one round trip.
func (e *RedisEngine) page(ctx context.Context, pattern string, cursor uint64, pending []string, dry bool) ([]string, uint64, int64, error) {
	if len(pending) == 0 || dry {
		keys, next, err := e.rdb.Scan(ctx, cursor, pattern, int64(e.cfg.ScanCount)).Result()
		return keys, next, 0, err
	}
	pipe := e.rdb.Pipeline()
	unlink := pipe.Unlink(ctx, pending...)
	scan := pipe.Scan(ctx, cursor, pattern, int64(e.cfg.ScanCount))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, 0, err
	}
	keys, next := scan.Val()
	return keys, next, unlink.Val(), nil
}

// ErrSweepTooLong means a sweep hit EngineConfig.MaxScanCalls.
var ErrSweepTooLong = errors.New("too many SCAN calls")
