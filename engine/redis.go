package engine

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

// Redis is the engine for a single Redis server: a standalone server, or
// the master of a Sentinel set through a failover client. It takes a
// *redis.Client only, so a Redis Cluster client (which this engine would
// serve one node of, silently) does not compile.
//
// Exact keys of all jobs of a batch go in one pipelined round trip (with
// Config.Generations, the generations of every job go first in that same
// round trip).
// The patterns of every job then join one shared walk of the keyspace
// (package engine/sweep), which serves them all with one SCAN pass.
type Redis struct {
	rdb    *redis.Client
	cfg    Config
	walker *sweep.Walker
	gensOn atomic.Bool // EnableGenerations was called
}

// EnableGenerations turns Config.Generations on for the jobs applied from
// now on: GENERATIONS=auto does so once a reader of the protocol is seen
// (see guard.ProtocolMarkerKey). It is not turned off again.
func (e *Redis) EnableGenerations() { e.gensOn.Store(true) }

// Generations reports whether jobs advance the generation guard.
func (e *Redis) Generations() bool { return e.cfg.Generations || e.gensOn.Load() }

// NewRedis returns an engine on rdb, or an error wrapping ErrInvalidConfig.
func NewRedis(rdb *redis.Client, cfg Config) (*Redis, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	wcfg := cfg.Sweep
	if cfg.NodeObserver != nil {
		wcfg.Observer = cfg.NodeObserver(rdb.Options().Addr)
	}
	return &Redis{rdb: rdb, cfg: cfg, walker: sweep.New(rdb, wcfg)}, nil
}

// Close stops the shared walk; Apply calls waiting for it fail with
// sweep.ErrClosed. It is safe to call more than once.
func (e *Redis) Close() error { return e.walker.Close() }

// Sweeps reports the shared walk, for the ops endpoint: one status (this
// engine has one node).
func (e *Redis) Sweeps() []sweep.Status { return []sweep.Status{e.walker.Status()} }

// sweep has patterns served by the shared walk, reporting a sample of the
// keys removed when sample > 0.
func (e *Redis) sweep(ctx context.Context, patterns []string, sample int) (Result, error) {
	return walk(ctx, e.walker, patterns, sample)
}

// Apply implements Engine. The exact keys of all jobs (and, with
// Config.Generations, the generations of every job) go in one pipelined
// round trip; the jobs without patterns are then done, before any sweep
// starts; the jobs with patterns all join the shared walk at once.
func (e *Redis) Apply(ctx context.Context, jobs []Job, done func(int, Result, error)) {
	apply(ctx, jobs, done, e.exactMany, e.sweep)
}

// exactMany removes the exact keys of every job in one round trip and
// returns the count and error of each job. With Config.Generations, the
// same round trip first advances the generation of every pattern scope and
// removes the generation of every exact key (see engine/generation.go): a
// pipeline runs in order on one connection, so every generation has moved
// before the first key is removed.
//
// A job with Capture has its generations moved by capturing commands
// queued first, in that same round trip (see Capture): GETDEL of each
// exact key's own generation, SET ... GET of each scope's, so that they
// return the tokens from before the batch even when another job of the
// batch names the same keys.
func (e *Redis) exactMany(ctx context.Context, jobs []Job) ([]int64, []error, captures) {
	removed, errs := make([]int64, len(jobs)), make([]error, len(jobs))
	gensOn := e.Generations()
	caps := newCaptures(jobs, gensOn)
	if len(jobs) == 1 && !gensOn {
		removed[0], errs[0] = e.exact(ctx, jobs[0].Exact)
		return removed, errs, caps
	}
	pipe := e.rdb.Pipeline()
	gens := make([][]redis.Cmder, len(jobs))
	var drops []redis.Cmder
	var fill []func()
	if gensOn {
		token := guard.NewToken()
		var c capturer
		for i, job := range jobs {
			if job.Capture {
				gens[i], fill = capture(ctx, pipe, &c, job, token, caps.of(i), fill)
			}
		}
		for i, job := range jobs {
			if !job.Capture && len(job.Patterns) > 0 {
				gens[i] = advance(ctx, pipe, job, token)
			}
		}
		drops = removeGenerations(ctx, pipe, jobs)
	}
	cmds := make([][]*redis.IntCmd, len(jobs))
	for i, job := range jobs {
		for c := range slices.Chunk(job.Exact, unlinkChunk) {
			cmds[i] = append(cmds[i], pipe.Unlink(ctx, c...))
		}
	}
	if pipe.Len() == 0 {
		return removed, errs, caps
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for _, f := range fill {
		f()
	}
	for i, job := range jobs {
		if len(job.Exact) > 0 && !job.Capture { // the batch's generation UNLINKs serve exact keys only
			gens[i] = append(gens[i], drops...)
		}
		removed[i], errs[i] = readJob(job, gens[i], cmds[i])
	}
	return removed, errs, caps
}

// capture queues the capturing commands of one Capture job on pipe
// through c: GETDEL of each exact key's own generation, SET ... GET of each
// pattern scope's generation to token. It returns the commands the job
// depends on, and appends to fill the functions that record their
// replies in cp once the pipeline ran.
func capture(ctx context.Context, pipe redis.Pipeliner, c *capturer, job Job, token string, cp *Capture, fill []func()) ([]redis.Cmder, []func()) {
	var cmds []redis.Cmder
	for _, k := range slices.Compact(slices.Sorted(slices.Values(job.Exact))) {
		gen := guard.Key(k)
		cmd := c.remove(ctx, pipe, gen)
		cmds = append(cmds, cmd)
		fill = append(fill, func() { cp.Exact = append(cp.Exact, Displaced{Scope: k, Key: gen, Previous: previous(cmd)}) })
	}
	for _, s := range jobScopes(job) {
		gen := guard.Key(s)
		cmd := c.set(ctx, pipe, gen, token)
		cmds = append(cmds, cmd)
		fill = append(fill, func() {
			cp.Scopes = append(cp.Scopes, Displaced{Scope: s, Key: gen, Previous: previous(cmd), Token: token})
		})
	}
	return cmds, fill
}

// exact removes keys in one round trip, in UNLINKs of at most unlinkChunk keys.
func (e *Redis) exact(ctx context.Context, keys []string) (int64, error) {
	return unlink(ctx, e.rdb, keys)
}

// unlink removes keys in one round trip, in UNLINKs of at most unlinkChunk keys.
func unlink(ctx context.Context, rdb *redis.Client, keys []string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	if len(keys) <= unlinkChunk {
		n, err := rdb.Unlink(ctx, keys...).Result()
		if err != nil {
			return 0, fmt.Errorf("unlink %d keys: %w", len(keys), err)
		}
		return n, nil
	}
	pipe := rdb.Pipeline()
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

// Preview reports what Invalidate would remove without removing anything
// (and without advancing generations): fn is called with each existing
// exact key and each key a pattern matches, once, all patterns served by
// one dry pass. fn is never called concurrently.
func (e *Redis) Preview(ctx context.Context, job Job, fn func(key string)) (Result, error) {
	start := time.Now()
	report := serialized(fn)
	job.Exact = slices.Compact(slices.Sorted(slices.Values(job.Exact)))
	n, err := e.exists(ctx, job.Exact, report)
	if err != nil {
		return Result{Removed: n, Duration: time.Since(start)}, err
	}
	var res Result
	if len(job.Patterns) > 0 {
		res, err = dryWalk(ctx, e.rdb, e.cfg.Sweep, job.Patterns, report)
	}
	res.Removed += n
	res.Duration = time.Since(start)
	return res, err
}

// exists reports each of keys that exists to fn, in one round trip.
func (e *Redis) exists(ctx context.Context, keys []string, fn func(string)) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
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
			fn(keys[i])
		}
	}
	return n, nil
}
