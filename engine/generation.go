package engine

import (
	"context"
	"slices"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/nats-io/nuid"
	"github.com/redis/go-redis/v9"
)

// The generation guard, invalidation side. Every invalidation first
// advances the generation key of each exact key it removes and of each
// pattern's scope (cachekeys.PatternScope), then removes the keys. The
// warmer (the fill side, which imports these constants) reads the
// generations of a key and of each of its segment prefixes before it
// fetches (a missing one reads "0"), and writes with a script that SETs the
// value only if none of them changed, so that a value fetched before an
// invalidation is never written after it.
//
// Advancing is one SET per generation key, to a token unique to the batch,
// with the TTL: not INCR + PEXPIRE, two commands. The guard compares values
// for equality only, and the token scheme is as safe as counting: a warm
// that read value v (or "0") before the SET finds the new token, which was
// never written before and is never "0", so it differs from v; it could
// only find v again if the key expired meanwhile, which takes
// DefaultGenerationTTL with no invalidation of that key, far longer than
// any fetch (the same bound as with INCR). Tokens are NUIDs: 22 characters,
// a crypto-random prefix and a sequence, unique across processes.
const (
	// DefaultGenerationKeyPrefix starts every generation key.
	DefaultGenerationKeyPrefix = "invalidator:gen:"
	// DefaultGenerationTTL is how long a generation key lives after its
	// last advance; it bounds the fetch time the guard covers.
	DefaultGenerationTTL = 24 * time.Hour
)

// GenerationKey returns the generation key of scope: an exact cache key, or
// the scope of a pattern (cachekeys.PatternScope).
func GenerationKey(scope string) string { return DefaultGenerationKeyPrefix + scope }

// newGenerationToken returns a value no generation key ever held.
func newGenerationToken() string { return nuid.Next() }

// advance queues on pipe the SET of the generation of each exact key and
// each pattern scope of job (each once) to token, and returns the commands.
// On a Redis Cluster these are single-key commands that go-redis routes by
// slot; a cluster engine must then make sure that a key's generation is
// advanced before the key is removed (a later round trip, or generation
// keys in the key's slot).
func advance(ctx context.Context, pipe redis.Pipeliner, job Job, token string) []*redis.StatusCmd {
	scopes := make([]string, 0, len(job.Exact)+len(job.Patterns))
	scopes = append(scopes, job.Exact...)
	for _, p := range job.Patterns {
		scopes = append(scopes, cachekeys.PatternScope(p))
	}
	if len(scopes) > 1 {
		slices.Sort(scopes)
		scopes = slices.Compact(scopes)
	}
	cmds := make([]*redis.StatusCmd, len(scopes))
	for i, s := range scopes {
		cmds[i] = pipe.Set(ctx, GenerationKey(s), token, DefaultGenerationTTL)
	}
	return cmds
}
