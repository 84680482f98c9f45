package engine

import (
	"context"
	"slices"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

// The generation guard, invalidation side; the protocol's keys, its fill
// and read sides and the proof are in package guard. Before it removes
// anything, every invalidation removes the generation of each exact key
// (removeGenerations: one UNLINK of the batch's generation keys, queued
// before the keys' own UNLINK on the same connection) and sets the
// generation of each pattern's scope (cachekeys.PatternScope) to a token
// unique to the batch (advance: one SET with the TTL per scope, not INCR +
// PEXPIRE). Removing an exact key's generation is as safe as setting it,
// given fills that claim (guard.Protocol.Claim: point 2 of the proof holds
// for removal), and it costs one command per batch where a SET per key
// would cost as much as the removal itself. BenchmarkExact measured both
// forms.
//
// On a Redis Cluster, UNLINK k gen:k and the guarded script span slots:
// the cluster form is in cluster_generation.go.

// advance queues on pipe the SET of the generation of each pattern scope
// of job (each once) to token, and returns the commands. An exact key's
// generation is removed instead (see removeGenerations): cheaper, and as
// safe given claiming fills. On a Redis Cluster these are single-key
// commands that go-redis routes by slot; a cluster engine must then make
// sure that a generation is advanced before the keys are removed (a later
// round trip, or generation keys in the key's slot).
func advance(ctx context.Context, pipe redis.Pipeliner, job Job, token string) []redis.Cmder {
	scopes := jobScopes(job)
	cmds := make([]redis.Cmder, len(scopes))
	for i, s := range scopes {
		cmds[i] = pipe.Set(ctx, guard.Key(s), token, guard.TTL)
	}
	return cmds
}

// jobScopes returns the distinct scopes (cachekeys.PatternScope) of the
// job's patterns.
func jobScopes(job Job) []string {
	scopes := make([]string, 0, len(job.Patterns))
	for _, p := range job.Patterns {
		scopes = append(scopes, cachekeys.PatternScope(p))
	}
	if len(scopes) > 1 {
		slices.Sort(scopes)
		scopes = slices.Compact(scopes)
	}
	return scopes
}

// removeGenerations queues on pipe the UNLINK of the generation keys of
// the exact keys of all jobs, in commands of at most unlinkChunk keys, and
// returns them: one command for a whole batch, where a SET per key would
// cost as much as the removal itself. Queued before the keys' own UNLINK on
// the same connection, it runs first: a fill that claimed before it finds
// its token gone. The exact keys of Capture jobs are left out: capture
// removes their generations with GETDEL, earlier in the same pipeline. An error fails every job of the batch (they are retried).
func removeGenerations(ctx context.Context, pipe redis.Pipeliner, jobs []Job) []redis.Cmder {
	var gens []string
	for _, job := range jobs {
		if job.Capture {
			continue // their generations went with GETDEL (capture)
		}
		for _, k := range job.Exact {
			gens = append(gens, guard.Key(k))
		}
	}
	var cmds []redis.Cmder
	for c := range slices.Chunk(gens, unlinkChunk) {
		cmds = append(cmds, pipe.Unlink(ctx, c...))
	}
	return cmds
}
