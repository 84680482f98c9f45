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
// pattern's scope (cachekeys.PatternScope), then removes the keys. The fill
// side (package warm, and any service following the README's protocol)
// claims the generations of a key and of each of its segment prefixes
// before it fetches, and writes with a script that SETs the value only if
// none of them moved, so that a value fetched before an invalidation is
// never written after it.
//
// Advancing is one SET per generation key, to a token unique to the batch,
// with the TTL: not INCR + PEXPIRE, two commands. Tokens are NUIDs: 22
// characters, a crypto-random prefix and a sequence, unique across
// processes, and never "0".
//
// # The fill side: claim, fetch, guarded write
//
// A fill F of cache key K has a guard set G(K): GenerationKey(K) and
// GenerationKey(P) for each P in cachekeys.SegmentPrefixes(K). For each g in
// G(K), before the fetch, F runs SET g <fresh token> NX GET PX ttl (one
// round trip for all of them) and remembers the token g then holds: the one
// returned, or its own on a nil reply. After the fetch one script SETs K
// only if every g still holds the token F remembered (a missing g reads
// "0", which no token is).
//
// # Why no value fetched before an invalidation is written after it
//
// Let I be an invalidation covering K (an exact job naming K, or a pattern
// matching K, whose scope is then one of K's segment prefixes), and g the
// generation key of G(K) that I invalidates: w(I) is the command that SETs g
// to I's batch token (today, for exact keys and scopes) or removes g (the
// cheaper form for exact keys, below). w(I) runs no later than the command
// that removes K (an earlier command of the same pipeline on one
// connection, or the same UNLINK), and I starts after the application
// committed the newer data (it published the event after its write).
//
//  1. Written once: every token written to a generation key is written
//     there once. A fill's claim writes its fresh token only where the key
//     is missing (NX); a batch writes its fresh token to each key once
//     (advance deduplicates, and a retried batch takes a new token). So
//     once g stops holding a token r (SET to another, removed, or expired),
//     g never holds r again: no ABA.
//  2. If F claimed g before w(I), it remembered the token r that g held at
//     its claim. Either its script ran before w(I): its value was written
//     before K's removal, which removes it. Or the script ran after w(I):
//     w(I) moved g away from r (or g had already moved), and by 1 it never
//     holds r again, while a missing g reads "0" and r is never "0". The
//     script refuses.
//  3. If F claimed g after w(I), its fetch started after the newer data was
//     committed, so its value is not older than I: writing it is correct,
//     even after K's removal. (This assumes the source reads its own
//     committed writes, not a lagging replica.)
//
// Consequences: two fills sharing one token (the second found the first's)
// both claimed after every invalidation before that token's claim, and are
// judged by 2 and 3 on their own. A generation that expires during a fetch
// reads "0", or a newer fill's token: the write is refused, a skipped warm,
// never a stale one. A fill that remembered "0" for a missing generation
// (the protocol before claiming) is safe against w(I) = SET, but not
// against w(I) = remove: missing, then SET, then removed reads "0" again.
// Claiming every key of G(K), prefixes included, rules that out, also for
// a key that ends with the separator, whose own generation key is a
// scope's too.
//
// # The cheaper form for exact keys (not wired yet)
//
// Given claiming fills, an exact key's generation need not be SET: removing
// it is enough (2 holds for removal), and removal can ride on the UNLINK
// that removes the key: UNLINK k1 gen:k1 k2 gen:k2 … is atomic and costs no
// extra command. Its reply then counts generation keys too, so Result.Removed
// would overcount keys a fill had claimed; one UNLINK of all the batch's
// exact generation keys, queued before the keys' UNLINKs in the same
// pipeline, counts exactly and costs one command per batch (not atomic with
// the keys' removal, but before it, which is all 2 needs; if that command
// fails while the keys' UNLINK succeeds, the job reports the error and is
// retried). Pattern scopes keep their SET: a scope covers many keys. The
// switch needs every filler to claim first (package warm does), because
// older fills that read a missing generation as "0" are unsafe against
// removal; it is in exactMany (redis.go) and the tests that expect exact
// generations to hold tokens. BenchmarkExact measures both forms.
//
// # Redis Cluster
//
// UNLINK k gen:k and the guarded script span slots there: the cluster form
// is in cluster_generation.go (and, for readers of stamped values, in
// package cache's cluster.go).
const (
	// DefaultGenerationKeyPrefix starts every generation key.
	DefaultGenerationKeyPrefix = "invalidator:gen:"
	// DefaultGenerationTTL is how long a generation key lives after its
	// last advance; it bounds the fetch time the guard covers.
	DefaultGenerationTTL = 24 * time.Hour
	// ProtocolMarkerKey is the key a reader or filler of the read/fill
	// protocol keeps alive, so that a worker with GENERATIONS=auto sees it
	// and turns generations on: SET it to a short name of the client
	// ("go", "python", "node") with PX ProtocolMarkerTTL, at least every
	// ProtocolMarkerRefresh while the client reads or fills.
	ProtocolMarkerKey = "invalidator:protocol"
	// ProtocolMarkerTTL is the marker's time to live.
	ProtocolMarkerTTL = time.Minute
	// ProtocolMarkerRefresh is how often a client renews the marker.
	ProtocolMarkerRefresh = 20 * time.Second
)

// GenerationKey returns the generation key of scope: an exact cache key, or
// the scope of a pattern (cachekeys.PatternScope).
func GenerationKey(scope string) string { return DefaultGenerationKeyPrefix + scope }

// NewGenerationToken returns a value no generation key ever held, for a
// batch of invalidations or a fill's claim.
func NewGenerationToken() string { return nuid.Next() }

func newGenerationToken() string { return NewGenerationToken() }

// advance queues on pipe the SET of the generation of each pattern scope
// of job (each once) to token, and returns the commands. An exact key's
// generation is removed instead (see removeGenerations): cheaper, and as
// safe given claiming fills. On a Redis Cluster these are single-key
// commands that go-redis routes by slot; a cluster engine must then make
// sure that a generation is advanced before the keys are removed (a later
// round trip, or generation keys in the key's slot).
func advance(ctx context.Context, pipe redis.Pipeliner, job Job, token string) []*redis.StatusCmd {
	scopes := make([]string, 0, len(job.Patterns))
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

// removeGenerations queues on pipe the UNLINK of the generation keys of
// the exact keys of all jobs, in commands of at most unlinkChunk keys, and
// returns them: one command for a whole batch, where a SET per key would
// cost as much as the removal itself. Queued before the keys' own UNLINK on
// the same connection, it runs first: a fill that claimed before it finds
// its token gone. An error fails every job of the batch (they are retried).
func removeGenerations(ctx context.Context, pipe redis.Pipeliner, jobs []Job) []*redis.IntCmd {
	var gens []string
	for _, job := range jobs {
		for _, k := range job.Exact {
			gens = append(gens, GenerationKey(k))
		}
	}
	var cmds []*redis.IntCmd
	for c := range slices.Chunk(gens, unlinkChunk) {
		cmds = append(cmds, pipe.Unlink(ctx, c...))
	}
	return cmds
}
