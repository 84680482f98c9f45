package cache

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/redis/go-redis/v9"
)

// The read/fill protocol on a Redis Cluster.
//
// A script may only touch the keys of one slot, and the generations that
// guard a key K are in several: K's own, engine.ClusterGenerationKey(K), is
// hash-tagged into K's slot; the generation of each segment prefix P,
// engine.GenerationKey(P), is wherever P hashes. So the cluster form keeps
// the values and the stamps of one node and moves the comparisons that
// span slots to the client:
//
//   - read: GET K and every guard generation in one pipeline (one round
//     trip; go-redis sends each node its part in parallel), then compare
//     K's stamp with the generations read, a missing one reading "0", as
//     read.lua does.
//   - claim: SET g <fresh token> NX GET PX <ttl> for every guard g, one
//     pipeline, as claim.lua does.
//   - fill: cluster_fill.lua in K's slot checks K's own generation and
//     writes the stamped value; then the scope generations are read again,
//     and if one moved since the claim, cluster_unfill.lua takes the value
//     back (only if it still carries this stamp).
//   - set: claim, then SET K to the stamped value.
//
// The invalidation side is engine.Cluster with Config.Generations: an exact
// key and its own generation are UNLINKed by one script; a pattern's scope
// generation is SET to a fresh token before its sweep starts.
//
// Why a reader R never sees a value older than an invalidation I that
// completed before R began (tokens are unique, and each is written to a
// generation key once, so a token that left a key never comes back):
//
//   - I removes exact key K (or a literal pattern naming it): K and its own
//     generation go at once, at w. A value R reads was written after w. By
//     Set: an unconditional write, newer than I. By a fill F: its script
//     found the own generation holding F's token, so F claimed it after w
//     (a token claimed before w left the key at w), and its load started
//     after the application's commit, which came before I.
//   - I's pattern has scope P, a segment prefix of K: GenerationKey(P) was
//     SET to I's token t at w, before I completed. R reads that generation
//     after I completed: t, or a token written after w. A value stamped by
//     a fill that claimed before w carries a token that left the key at w,
//     so the stamps differ and R misses. A fill that claimed after w loaded
//     after the commit: its value is not older than I.
//
// And no value older than I stays in Redis once I completed: a fill that
// claimed P's generation before w and wrote K before I's sweep started is
// removed by the sweep (K existed when it began); one that wrote later
// reads P's generation after its write, finds it moved, and takes its
// value back. Between the two, no reader sees it (the first point).
var (
	//go:embed cluster_fill.lua
	ClusterFillScript string
	//go:embed cluster_unfill.lua
	ClusterUnfillScript string
)

var (
	clusterFillScript   = redis.NewScript(ClusterFillScript)
	clusterUnfillScript = redis.NewScript(ClusterUnfillScript)
)

// ClusterGuardKeys returns the generation keys that guard key on a Redis
// Cluster, in the order of GuardKeys: the key's own, hash-tagged into its
// slot (engine.ClusterGenerationKey), then that of each segment prefix,
// shortest first.
func ClusterGuardKeys(key string) []string {
	keys := GuardKeys(key)
	keys[0] = engine.ClusterGenerationKey(key)
	return keys
}

// stamp returns the head a value stamped with tokens starts with.
func stamp(tokens []string) string {
	return "@gen " + strings.Join(tokens, " ") + "\n"
}

// clusterProtocol is the protocol on a Redis Cluster.
type clusterProtocol struct {
	rdb *redis.ClusterClient
}

// queueRead queues the GETs of key and its guards on pipe.
func queueRead(ctx context.Context, pipe redis.Pipeliner, key string) []*redis.StringCmd {
	guards := ClusterGuardKeys(key)
	cmds := make([]*redis.StringCmd, 0, 1+len(guards))
	cmds = append(cmds, pipe.Get(ctx, key))
	for _, g := range guards {
		cmds = append(cmds, pipe.Get(ctx, g))
	}
	return cmds
}

// checkRead compares the value that cmds read with the generations they
// read: the payload and true on a current value.
func checkRead(key string, cmds []*redis.StringCmd) ([]byte, bool, error) {
	current := make([]string, len(cmds)-1)
	for i, c := range cmds {
		v, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil) && i == 0:
			return nil, false, nil
		case errors.Is(err, redis.Nil):
			v = "0"
		case err != nil:
			return nil, false, fmt.Errorf("cache: read %s: %w", key, err)
		}
		if i > 0 {
			current[i-1] = v
		}
	}
	return stamped(cmds[0].Val(), current)
}

func (p clusterProtocol) read(ctx context.Context, key string) ([]byte, bool, error) {
	pipe := p.rdb.Pipeline()
	cmds := queueRead(ctx, pipe, key)
	_, _ = pipe.Exec(ctx) // each command carries its own error
	return checkRead(key, cmds)
}

func (p clusterProtocol) exists(ctx context.Context, keys []string) (int64, error) {
	pipe := p.rdb.Pipeline()
	cmds := make([][]*redis.StringCmd, len(keys))
	for i, k := range keys {
		cmds[i] = queueRead(ctx, pipe, k)
	}
	_, _ = pipe.Exec(ctx)
	var n int64
	for i, k := range keys {
		_, ok, err := checkRead(k, cmds[i])
		if err != nil {
			return 0, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

func (p clusterProtocol) claim(ctx context.Context, key string) ([]string, error) {
	return claimPipelined(ctx, p.rdb, ClusterGuardKeys(key))
}

// claimPipelined claims every generation key of guards in one pipeline
// and returns the tokens they hold.
func claimPipelined(ctx context.Context, rdb redis.Cmdable, guards []string) ([]string, error) {
	token := engine.NewGenerationToken()
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StatusCmd, len(guards))
	for i, g := range guards {
		cmds[i] = pipe.SetArgs(ctx, g, token, redis.SetArgs{Mode: "NX", Get: true, TTL: engine.DefaultGenerationTTL})
	}
	_, _ = pipe.Exec(ctx)
	tokens := make([]string, len(guards))
	for i, c := range cmds {
		switch held, err := c.Result(); {
		case err == nil:
			tokens[i] = held
		case errors.Is(err, redis.Nil):
			tokens[i] = token
		default:
			return nil, fmt.Errorf("cache: claim %s: %w", guards[i], err)
		}
	}
	return tokens, nil
}

func (p clusterProtocol) fill(ctx context.Context, key string, payload []byte, ttl time.Duration, tokens []string) (bool, error) {
	guards := ClusterGuardKeys(key)
	head := stamp(tokens)
	n, err := clusterFillScript.Run(ctx, p.rdb, []string{key, guards[0]}, payload, ms(ttl), tokens[0], head).Int()
	if err != nil {
		return false, fmt.Errorf("cache: fill %s: %w", key, err)
	}
	if n == 0 {
		return false, nil
	}
	return p.recheck(ctx, key, guards[1:], tokens[1:], head)
}

// recheck reads the scope generations of key after its fill: if one moved
// since the claim, the fill is taken back (cluster_unfill.lua) and
// reported refused.
func (p clusterProtocol) recheck(ctx context.Context, key string, scopes, tokens []string, head string) (bool, error) {
	if len(scopes) == 0 {
		return true, nil
	}
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(scopes))
	for i, g := range scopes {
		cmds[i] = pipe.Get(ctx, g)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range cmds {
		v, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
			v = "0"
		case err != nil:
			// The value stays; readers check its stamp all the same.
			return true, fmt.Errorf("cache: check %s: %w", key, err)
		}
		if v != tokens[i] {
			if err := clusterUnfillScript.Run(ctx, p.rdb, []string{key}, head).Err(); err != nil {
				return false, fmt.Errorf("cache: take back %s: %w", key, err)
			}
			return false, nil
		}
	}
	return true, nil
}

func (p clusterProtocol) set(ctx context.Context, key string, payload []byte, ttl time.Duration) error {
	tokens, err := p.claim(ctx, key)
	if err != nil {
		return err
	}
	if err := p.rdb.Set(ctx, key, stamp(tokens)+string(payload), ttl).Err(); err != nil {
		return fmt.Errorf("cache: set %s: %w", key, err)
	}
	return nil
}
