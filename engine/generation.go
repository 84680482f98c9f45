package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/redis/go-redis/v9"
)

// The generation guard, invalidation side. Every invalidation first INCRs
// the generation key of each exact key it removes and of each pattern's
// scope (cachekeys.PatternScope), then removes the keys. The warmer reads
// the generations of a key and of each of its segment prefixes before it
// fetches, and writes with a script that SETs the value only if none of
// them changed, so a value fetched before an invalidation is never written
// after it. The warmer (the fill side) imports these constants.
const (
	// DefaultGenerationKeyPrefix starts every generation key.
	DefaultGenerationKeyPrefix = "invalidator:gen:"
	// DefaultGenerationTTL is how long a generation key lives after its
	// last advance; it bounds the fetch time a guard can cover.
	DefaultGenerationTTL = 24 * time.Hour
)

// GenerationKey returns the generation key of scope: an exact cache key, or
// the scope of a pattern (cachekeys.PatternScope).
func GenerationKey(scope string) string { return DefaultGenerationKeyPrefix + scope }

// invalidateScript advances generations and removes keys, for several jobs
// in one call. KEYS holds, segment after segment, the generation keys of a
// segment and then the keys it removes; ARGV[1] is the generation TTL in
// ms and ARGV[2s], ARGV[2s+1] the counts of the two parts of segment s. All
// generations of the call are advanced before its first UNLINK. It returns,
// per segment, the number of keys removed or the error (an error reply) of
// the first command of the segment that failed: commands run under pcall so
// that one segment's failure (NOPERM, say) fails that segment only. A
// segment whose generations failed has its keys removed all the same:
// keeping them would be no fresher, and the job fails and is retried.
var invalidateScript = redis.NewScript(`
local ttl = ARGV[1]
local segs = (#ARGV - 1) / 2
local out, seen, starts = {}, {}, {}
local k = 1
for s = 1, segs do
  local ng, nk = tonumber(ARGV[2 * s]), tonumber(ARGV[2 * s + 1])
  out[s] = 0
  for i = k, k + ng - 1 do
    local g = KEYS[i]
    if seen[g] == nil then
      seen[g] = true
      local r = redis.pcall('INCR', g)
      if type(r) == 'table' and r.err then
        seen[g] = r
      else
        redis.pcall('PEXPIRE', g, ttl)
      end
    end
    if seen[g] ~= true and out[s] == 0 then out[s] = seen[g] end
  end
  starts[s] = k + ng
  k = k + ng + nk
end
for s = 1, segs do
  local from, nk = starts[s], tonumber(ARGV[2 * s + 1])
  local removed = 0
  for i = from, from + nk - 1, 1000 do
    local r = redis.pcall('UNLINK', unpack(KEYS, i, math.min(i + 999, from + nk - 1)))
    if type(r) == 'table' and r.err then
      if out[s] == 0 then out[s] = r end
      break
    end
    removed = removed + r
  end
  if out[s] == 0 then out[s] = removed end
end
return out
`)

// segment is the part of one job that one script call serves: generation
// keys, then keys to remove. A key's own generation is always in the same
// segment as the key, so it is advanced first.
type segment struct {
	job        int
	gens, keys []string
}

// scriptCall is the segments of one call of invalidateScript, at most
// unlinkChunk keys in all, so that no call holds the server for long.
type scriptCall struct {
	segs []segment
	n    int
}

// planCalls splits jobs into script calls of at most limit keys. On a
// Redis Cluster the same plan serves one slot: keys and their generation
// keys must then share a slot, and the cluster engine plans each slot's
// units on their own.
func planCalls(jobs []Job, limit int) []scriptCall {
	var calls []scriptCall
	cur := scriptCall{}
	add := func(job int, gen, key string) {
		n := 1
		if key != "" {
			n = 2
		}
		if cur.n+n > limit && cur.n > 0 {
			calls = append(calls, cur)
			cur = scriptCall{}
		}
		if len(cur.segs) == 0 || cur.segs[len(cur.segs)-1].job != job {
			cur.segs = append(cur.segs, segment{job: job})
		}
		s := &cur.segs[len(cur.segs)-1]
		s.gens = append(s.gens, gen)
		if key != "" {
			s.keys = append(s.keys, key)
		}
		cur.n += n
	}
	for i, job := range jobs {
		seen := make(map[string]bool, len(job.Exact)+len(job.Patterns))
		for _, k := range job.Exact {
			if !seen[k] {
				seen[k] = true
				add(i, GenerationKey(k), k)
			}
		}
		for _, p := range job.Patterns {
			if scope := cachekeys.PatternScope(p); !seen[scope] {
				seen[scope] = true
				add(i, GenerationKey(scope), "")
			}
		}
	}
	if cur.n > 0 {
		calls = append(calls, cur)
	}
	return calls
}

// args returns the KEYS and ARGV of c.
func (c scriptCall) args(ttl time.Duration) ([]string, []any) {
	keys := make([]string, 0, c.n)
	argv := make([]any, 1, 1+2*len(c.segs))
	argv[0] = strconv.FormatInt(ttl.Milliseconds(), 10)
	for _, s := range c.segs {
		keys = append(append(keys, s.gens...), s.keys...)
		argv = append(argv, len(s.gens), len(s.keys))
	}
	return keys, argv
}

// advanceAndUnlink advances the generations of every job and removes their
// exact keys, in one round trip, and returns the count and error of each
// job. Two things cost a second round trip: a server that lost the script
// (NOSCRIPT: it is loaded and the calls sent again), and a call the server
// refused as a whole (NOPERM on one job's key, say: nothing of it ran, so
// each of its jobs is sent again in a call of its own, and only the job at
// fault fails).
func advanceAndUnlink(ctx context.Context, rdb redis.Cmdable, jobs []Job) ([]int64, []error) {
	removed, errs := make([]int64, len(jobs)), make([]error, len(jobs))
	calls := planCalls(jobs, unlinkChunk)
	for attempt := 0; len(calls) > 0; attempt++ {
		last := attempt == 2
		var again []scriptCall
		noScript := false
		for i, cmd := range runCalls(ctx, rdb, calls) {
			err := cmd.Err()
			switch {
			case !last && redis.HasErrorPrefix(err, "NOSCRIPT"):
				noScript = true
				again = append(again, calls[i])
			case !last && isReply(err) && len(calls[i].segs) > 1:
				again = append(again, calls[i].split()...)
			default:
				readCall(calls[i], cmd, removed, errs)
			}
		}
		if noScript {
			_ = invalidateScript.Load(ctx, rdb).Err() // a failure shows in the next calls
		}
		calls = again
	}
	return removed, errs
}

// isReply reports whether err is an error reply of the server (not a
// network or context error).
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// split returns one call per segment of c.
func (c scriptCall) split() []scriptCall {
	calls := make([]scriptCall, len(c.segs))
	for i, s := range c.segs {
		calls[i] = scriptCall{segs: []segment{s}, n: len(s.gens) + len(s.keys)}
	}
	return calls
}

// runCalls sends every call in one pipeline; each command carries its own
// error.
func runCalls(ctx context.Context, rdb redis.Cmdable, calls []scriptCall) []*redis.Cmd {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		keys, argv := c.args(DefaultGenerationTTL)
		cmds[i] = invalidateScript.EvalSha(ctx, pipe, keys, argv...)
	}
	_, err := pipe.Exec(ctx)
	for _, cmd := range cmds {
		if cmd.Err() == nil && err != nil && cmd.Val() == nil {
			cmd.SetErr(err)
		}
	}
	return cmds
}

// readCall adds what cmd did for each segment of c to removed and errs.
func readCall(c scriptCall, cmd *redis.Cmd, removed []int64, errs []error) {
	fail := func(job int, err error) {
		if errs[job] == nil {
			errs[job] = fmt.Errorf("advance generations and unlink: %w", err)
		}
	}
	vals, err := cmd.Slice()
	if err == nil && len(vals) != len(c.segs) {
		err = fmt.Errorf("script returned %d results for %d jobs", len(vals), len(c.segs))
	}
	for i, s := range c.segs {
		if err != nil {
			fail(s.job, err)
			continue
		}
		switch v := vals[i].(type) {
		case int64:
			removed[s.job] += v
		case error:
			fail(s.job, v)
		default:
			fail(s.job, fmt.Errorf("unexpected script result %T", v))
		}
	}
}
