package warm

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/redis/go-redis/v9"
)

// GenerationKeys are the generation keys that guard key: its own and those
// of each segment prefix, where pattern invalidations count.
func GenerationKeys(key string) []string {
	keys := []string{engine.GenerationKey(key)}
	for _, p := range cachekeys.SegmentPrefixes(key) {
		keys = append(keys, engine.GenerationKey(p))
	}
	return keys
}

// generations claims the generations that guard key before the fetch, in
// one round trip: for each generation key (the key's own, then each
// segment prefix's),
//
//	SET <generation key> <fresh token> NX GET PX <ttl>
//
// leaves a token there, the one already held (the reply) or this fill's own
// (a nil reply), and that token is what the fill remembers. So every value
// remembered is a token, never "0", and the guarded write matches only if
// no generation was advanced (SET to a new token), removed (UNLINK) or
// expired since: tokens are unique and each is written to a key once, so a
// token that left a key never comes back (no ABA). This holds whichever
// way an invalidation invalidates a generation; see engine/generation.go
// for the proof. SET with both NX and GET needs Redis 7.0.
func (w *Warmer) generations(ctx context.Context, key string) ([]string, error) {
	if c, ok := w.rdb.(*redis.ClusterClient); ok {
		return claimOnCluster(ctx, c, key, w.cfg.Stamp)
	}
	keys := GenerationKeys(key)
	token := engine.NewGenerationToken()
	pipe := w.rdb.Pipeline()
	cmds := make([]*redis.StatusCmd, len(keys))
	for i, g := range keys {
		cmds[i] = pipe.SetArgs(ctx, g, token, redis.SetArgs{Mode: "NX", Get: true, TTL: engine.DefaultGenerationTTL})
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	gens := make([]string, len(keys))
	for i, c := range cmds {
		switch held, err := c.Result(); {
		case err == nil:
			gens[i] = held
		case errors.Is(err, redis.Nil):
			gens[i] = token
		default:
			return nil, fmt.Errorf("claim generation: %w", err)
		}
	}
	return gens, nil
}

// guardedSet writes KEYS[1] only if every generation key KEYS[2..] still
// holds the token claimed before the fetch (ARGV[3..]). A missing key reads
// "0", which no claimed token is, so a generation removed or expired since
// the claim never matches. (Readers that remember "0" for a missing key, as
// this package did before claiming, are safe only against invalidations
// that SET generations, never against ones that remove them.)
// StampedFillScript is package cache's fill script (cache/fill.lua, the
// same text: a test compares them): guardedSet that writes
// "@gen <tokens>\n" before the value. It is copied, not imported, so that
// package cache's own tests can use the test servers, which import the
// worker, which imports this package.
const StampedFillScript = `-- fill.lua: the guarded write after reading the source.
-- KEYS[1]   the cache key K
-- KEYS[2..] its guard generations, in the order of read.lua
-- ARGV[1]   the payload (JSON)
-- ARGV[2]   the value's TTL in ms
-- ARGV[3..] the tokens claim.lua returned, in the same order
-- Writes '@gen <token> <token> ...\n' .. payload to K and returns 1 only if
-- every generation still holds its claimed token; otherwise writes nothing
-- and returns 0: an invalidation ran since the claim, the payload may be
-- older than it.
local head = '@gen'
for i = 2, #KEYS do
  local g = redis.call('GET', KEYS[i]) or '0'
  if g ~= ARGV[i + 1] then return 0 end
  head = head .. ' ' .. g
end
redis.call('SET', KEYS[1], head .. '\n' .. ARGV[1], 'PX', ARGV[2])
return 1
`

// stampedSet runs StampedFillScript.
var stampedSet = redis.NewScript(StampedFillScript)

var guardedSet = redis.NewScript(`
for i = 2, #KEYS do
  local g = redis.call('GET', KEYS[i]) or '0'
  if g ~= ARGV[i + 1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

func (w *Warmer) store(ctx context.Context, req cachekeys.WarmRequest, body []byte, gens []string) (bool, error) {
	if c, ok := w.rdb.(*redis.ClusterClient); ok {
		return storeOnCluster(ctx, c, req, body, gens, w.cfg.Stamp)
	}
	keys := append([]string{req.Key}, GenerationKeys(req.Key)...)
	args := []any{body, strconv.FormatInt(req.TTL.Milliseconds(), 10)}
	for _, g := range gens {
		args = append(args, g)
	}
	script := guardedSet
	if w.cfg.Stamp {
		script = stampedSet // same keys and arguments; the value gets the stamp
	}
	n, err := script.Run(ctx, w.rdb, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("guarded set: %w", err)
	}
	return n == 1, nil
}

// The fill side on a Redis Cluster, where a script must stay in one slot
// (the protocol and its proof are in engine/cluster_generation.go):
//
//  1. register: SADD engine.FillMember(t, key) to the fill registry of each
//     segment prefix of key (with the generation TTL), and wait for every
//     reply: an invalidation of a pattern over key that drains a registry
//     after this finds the fill and removes key's own generation;
//  2. claim key's own generation, engine.ClusterGenerationKey(key), in
//     key's slot, with SET NX GET PX, as on one node;
//  3. after the fetch, the guarded script checks that one generation and
//     SETs key: both keys are in key's slot;
//  4. leave the registries (SREM, best effort; the TTL bounds what is left).
//
// With Config.Stamp, step 2 also claims the generation of each segment
// prefix (SET NX GET, one pipeline with the own one), and step 3 writes the
// value with package cache's stamp of the claimed tokens
// (ClusterStampedFillScript), so that readers through package cache find
// it; they compare the stamp with the current generations themselves.
//
// claimOnCluster does 1 and 2 and returns the claimed token, t, and with
// stamp the tokens of the segment prefixes' generations.
func claimOnCluster(ctx context.Context, c *redis.ClusterClient, key string, stamp bool) ([]string, error) {
	token := engine.NewGenerationToken()
	member := engine.FillMember(token, key)
	pipe := c.Pipeline()
	for _, p := range cachekeys.SegmentPrefixes(key) {
		reg := engine.FillRegistryKey(p)
		pipe.SAdd(ctx, reg, member)
		pipe.PExpire(ctx, reg, engine.DefaultGenerationTTL)
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("register fill: %w", err)
		}
	}
	guards := []string{engine.ClusterGenerationKey(key)}
	if stamp {
		for _, p := range cachekeys.SegmentPrefixes(key) {
			guards = append(guards, engine.GenerationKey(p))
		}
	}
	pipe = c.Pipeline()
	cmds := make([]*redis.StatusCmd, len(guards))
	for i, g := range guards {
		cmds[i] = pipe.SetArgs(ctx, g, token, redis.SetArgs{Mode: "NX", Get: true, TTL: engine.DefaultGenerationTTL})
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	gens := make([]string, 0, 1+len(guards))
	for _, cmd := range cmds {
		held, err := cmd.Result()
		switch {
		case errors.Is(err, redis.Nil):
			held = token
		case err != nil:
			return nil, fmt.Errorf("claim generation: %w", err)
		}
		gens = append(gens, held)
		if len(gens) == 1 {
			gens = append(gens, token)
		}
	}
	return gens, nil
}

// ClusterStampedFillScript is package cache's cluster fill script
// (cache/cluster_fill.lua, the same text: a test compares them), copied for
// the reason StampedFillScript is.
const ClusterStampedFillScript = `-- cluster_fill.lua: the guarded write on a Redis Cluster, in the key's slot.
-- KEYS[1]  the cache key K
-- KEYS[2]  its own generation, invalidator:gen:{<tag>}K: hash-tagged into
--          K's slot (see the README for the tag of each slot)
-- ARGV[1]  the payload (JSON)
-- ARGV[2]  the value's TTL in ms
-- ARGV[3]  the token claimed on KEYS[2]
-- ARGV[4]  the stamp: '@gen <token> <token> ...\n', the tokens claimed on
--          the guard generations in the order of read.lua
-- Writes the stamp .. payload to K and returns 1 only if K's own
-- generation still holds its claimed token; otherwise 0. The scope
-- generations live in other slots: the client checks them after this
-- (GET each) and runs cluster_unfill.lua if one moved.
local g = redis.call('GET', KEYS[2]) or '0'
if g ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[4] .. ARGV[1], 'PX', ARGV[2])
return 1
`

var clusterStampedSet = redis.NewScript(ClusterStampedFillScript)

// storeOnCluster does 3 and 4: gens is what claimOnCluster returned.
func storeOnCluster(ctx context.Context, c *redis.ClusterClient, req cachekeys.WarmRequest, body []byte, gens []string, stamp bool) (bool, error) {
	keys := []string{req.Key, engine.ClusterGenerationKey(req.Key)}
	ttl := strconv.FormatInt(req.TTL.Milliseconds(), 10)
	var n int
	var err error
	if stamp {
		tokens := append([]string{gens[0]}, gens[2:]...) // the own token, then the prefixes'
		head := "@gen " + strings.Join(tokens, " ") + "\n"
		n, err = clusterStampedSet.Run(ctx, c, keys, body, ttl, gens[0], head).Int()
	} else {
		n, err = guardedSet.Run(ctx, c, keys, body, ttl, gens[0]).Int()
	}
	member := engine.FillMember(gens[1], req.Key)
	pipe := c.Pipeline()
	for _, p := range cachekeys.SegmentPrefixes(req.Key) {
		pipe.SRem(ctx, engine.FillRegistryKey(p), member)
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // best effort: the registry's TTL removes what is left
	}
	if err != nil {
		return false, fmt.Errorf("guarded set: %w", err)
	}
	return n == 1, nil
}
