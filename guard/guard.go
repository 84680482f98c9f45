package guard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrUnsupportedClient is returned by New for a client other than
// *redis.Client (a standalone server or a Sentinel failover client) or
// *redis.ClusterClient, such as a Ring: its sharding is not one the worker
// invalidates.
var ErrUnsupportedClient = errors.New("guard: only a Redis server, a Sentinel master or a Redis Cluster is supported")

// Protocol is the read/fill side of the guard on one Redis deployment. It
// is safe for concurrent use.
type Protocol struct {
	node    *redis.Client        // a server or a Sentinel master, or nil
	cluster *redis.ClusterClient // or a cluster
}

// New returns the protocol on rdb, or an error wrapping
// ErrUnsupportedClient.
func New(rdb redis.UniversalClient) (*Protocol, error) {
	switch c := rdb.(type) {
	case *redis.Client:
		return &Protocol{node: c}, nil
	case *redis.ClusterClient:
		return &Protocol{cluster: c}, nil
	}
	return nil, fmt.Errorf("%w: got %T", ErrUnsupportedClient, rdb)
}

// Claim is what a fill remembers between its claim and its write.
type Claim struct {
	// Key is the cache key claimed.
	Key string
	// Tokens are the tokens the guard generations held at the claim, in
	// the order of Keys (ClusterKeys on a cluster); for a raw claim on a
	// cluster, the key's own only.
	Tokens []string
	raw    bool
	member string // a raw claim's registry member, on a cluster
}

func (p *Protocol) rdb() redis.Cmdable {
	if p.cluster != nil {
		return p.cluster
	}
	return p.node
}

// Read returns the payload of key and true on a current value, false on a
// missing or stale one (its stamp is not the current generations, a
// missing one reading "0"), in one round trip: GET key and the guard
// generations in one pipeline (no script: the cheapest read for Redis; on
// a cluster, go-redis sends each node its part in parallel), compared on
// the client as read.lua does on the server. The reads need not be atomic:
// an invalidation that completed before the read began moved a generation
// (or removed key) before either ran.
func (p *Protocol) Read(ctx context.Context, key string) ([]byte, bool, error) {
	pipe := p.rdb().Pipeline()
	cmds := p.queueRead(ctx, pipe, key)
	_, _ = pipe.Exec(ctx) // each command carries its own error
	return checkRead(key, cmds)
}

// Exists counts the keys Read would find, in one round trip.
func (p *Protocol) Exists(ctx context.Context, keys []string) (int64, error) {
	pipe := p.rdb().Pipeline()
	cmds := make([]readCmds, len(keys))
	for i, k := range keys {
		cmds[i] = p.queueRead(ctx, pipe, k)
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

// readCmds are the commands of one read: GET key, then its generations
// (one MGET on a server; a GET each on a cluster, where they are in other
// slots).
type readCmds struct {
	get  *redis.StringCmd
	mget *redis.SliceCmd
	gens []*redis.StringCmd
}

// queueRead queues the read of key on pipe.
func (p *Protocol) queueRead(ctx context.Context, pipe redis.Pipeliner, key string) readCmds {
	r := readCmds{get: pipe.Get(ctx, key)}
	if p.cluster == nil {
		r.mget = pipe.MGet(ctx, Keys(key)...)
		return r
	}
	for _, g := range ClusterKeys(key) {
		r.gens = append(r.gens, pipe.Get(ctx, g))
	}
	return r
}

// current returns the generations r read, a missing one reading "0".
func (r readCmds) current() ([]string, error) {
	if r.mget != nil {
		vals, err := r.mget.Result()
		if err != nil {
			return nil, err
		}
		current := make([]string, len(vals))
		for i, v := range vals {
			current[i] = "0"
			if s, ok := v.(string); ok {
				current[i] = s
			}
		}
		return current, nil
	}
	current := make([]string, len(r.gens))
	for i, c := range r.gens {
		v, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
			v = "0"
		case err != nil:
			return nil, err
		}
		current[i] = v
	}
	return current, nil
}

// checkRead compares the value r read with the generations it read: the
// payload and true on a current value.
func checkRead(key string, r readCmds) ([]byte, bool, error) {
	value, err := r.get.Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("guard: read %s: %w", key, err)
	}
	current, err := r.current()
	if err != nil {
		return nil, false, fmt.Errorf("guard: read %s: %w", key, err)
	}
	if !stampedWith(value, current) {
		return nil, false, nil
	}
	return []byte(value[len(Stamp(current)):]), true, nil
}

// stampedWith reports whether value is stamped with exactly the
// generations current (a missing one reading "0"): the comparison of
// read.lua, kept once for Read and Inspect.
func stampedWith(value string, current []string) bool {
	return strings.HasPrefix(value, Stamp(current))
}

// Claim claims the guard generations of key before the source is read, in
// one round trip: each takes a fresh token where it has none (SET NX GET PX
// TTL, claim.lua on one server), and the claim remembers the token each
// holds. Fill writes a value stamped with these tokens only if none moved.
// SET with both NX and GET needs Redis 7.0.
func (p *Protocol) Claim(ctx context.Context, key string) (Claim, error) {
	var tokens []string
	var err error
	if p.cluster != nil {
		tokens, err = claimPipelined(ctx, p.cluster, ClusterKeys(key), NewToken())
	} else {
		tokens, err = claimScript.Run(ctx, p.node, Keys(key), NewToken(), ttlArg).StringSlice()
	}
	if err != nil {
		return Claim{}, fmt.Errorf("guard: claim %s: %w", key, err)
	}
	return Claim{Key: key, Tokens: tokens}, nil
}

// ClaimRaw claims key for a fill of its value as the source sent it, with
// no stamp, for services that GET the key directly. On one server it
// claims as Claim does. On a cluster, where no script checks generations
// of other slots and a raw value cannot be taken back by its stamp, it
// first registers the fill in the registry of each segment prefix of key
// (RegistryKey, waiting for the replies), where a pattern invalidation
// finds it and removes the key's own generation, then claims that own
// generation only (engine's cluster_generation.go has the proof).
func (p *Protocol) ClaimRaw(ctx context.Context, key string) (Claim, error) {
	if p.cluster == nil {
		c, err := p.Claim(ctx, key)
		c.raw = true
		return c, err
	}
	token := NewToken()
	member := Member(token, key)
	pipe := p.cluster.Pipeline()
	for _, r := range registries(key) {
		pipe.SAdd(ctx, r, member)
		pipe.PExpire(ctx, r, TTL)
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return Claim{}, fmt.Errorf("guard: register fill of %s: %w", key, err)
		}
	}
	tokens, err := claimPipelined(ctx, p.cluster, []string{ClusterKey(key)}, token)
	if err != nil {
		p.unregister(ctx, key, member)
		return Claim{}, fmt.Errorf("guard: claim %s: %w", key, err)
	}
	return Claim{Key: key, Tokens: tokens, raw: true, member: member}, nil
}

func registries(key string) []string {
	keys := Keys(key)[1:]
	for i, k := range keys {
		keys[i] = RegistryKey(strings.TrimPrefix(k, KeyPrefix))
	}
	return keys
}

// unregister removes member from key's registries, best effort: their TTL
// removes what is left.
func (p *Protocol) unregister(ctx context.Context, key, member string) {
	pipe := p.cluster.Pipeline()
	for _, r := range registries(key) {
		pipe.SRem(ctx, r, member)
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx)
	}
}

// claimPipelined claims every generation key of guards with token in one
// pipeline and returns the tokens they hold.
func claimPipelined(ctx context.Context, rdb redis.Cmdable, guards []string, token string) ([]string, error) {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StatusCmd, len(guards))
	for i, g := range guards {
		cmds[i] = pipe.SetArgs(ctx, g, token, redis.SetArgs{Mode: "NX", Get: true, TTL: TTL})
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	tokens := make([]string, len(guards))
	for i, c := range cmds {
		switch held, err := c.Result(); {
		case err == nil:
			tokens[i] = held
		case errors.Is(err, redis.Nil):
			tokens[i] = token
		default:
			return nil, fmt.Errorf("%s: %w", guards[i], err)
		}
	}
	return tokens, nil
}

// Fill writes payload to c.Key for ttl only if no guard generation moved
// since the claim: stamped with the claimed tokens (fill.lua), or as it is
// for a ClaimRaw. false means it was refused: an invalidation ran since the
// claim, and the payload may be older than it. On a cluster, the stamped
// form writes in the key's slot (cluster_fill.lua, which checks the key's
// own generation), then reads the scope generations again and takes the
// value back (cluster_unfill.lua) if one moved.
func (p *Protocol) Fill(ctx context.Context, c Claim, payload []byte, ttl time.Duration) (bool, error) {
	var ok bool
	var err error
	switch {
	case p.cluster == nil:
		ok, err = p.fillNode(ctx, c, payload, ttl)
	case c.raw:
		ok, err = runFill(ctx, rawFillScript, p.cluster, []string{c.Key, ClusterKey(c.Key)}, payload, ttl, c.Tokens)
		p.unregister(ctx, c.Key, c.member)
	default:
		ok, err = p.fillCluster(ctx, c, payload, ttl)
	}
	if err != nil {
		return ok, fmt.Errorf("guard: fill %s: %w", c.Key, err)
	}
	return ok, nil
}

func (p *Protocol) fillNode(ctx context.Context, c Claim, payload []byte, ttl time.Duration) (bool, error) {
	script := fillScript
	if c.raw {
		script = rawFillScript
	}
	return runFill(ctx, script, p.node, append([]string{c.Key}, Keys(c.Key)...), payload, ttl, c.Tokens)
}

// runFill runs fill.lua or rawFill.
func runFill(ctx context.Context, script *redis.Script, rdb redis.Scripter, keys []string, payload []byte, ttl time.Duration, tokens []string) (bool, error) {
	args := make([]any, 0, 2+len(tokens))
	args = append(args, payload, ms(ttl))
	for _, t := range tokens {
		args = append(args, t)
	}
	n, err := script.Run(ctx, rdb, keys, args...).Int()
	return n == 1, err
}

func (p *Protocol) fillCluster(ctx context.Context, c Claim, payload []byte, ttl time.Duration) (bool, error) {
	head := Stamp(c.Tokens)
	n, err := clusterFillScript.Run(ctx, p.cluster, []string{c.Key, ClusterKey(c.Key)}, payload, ms(ttl), c.Tokens[0], head).Int()
	if err != nil || n == 0 {
		return false, err
	}
	return p.recheck(ctx, c.Key, ClusterKeys(c.Key)[1:], c.Tokens[1:], head)
}

// recheck reads the scope generations of key after its fill: if one moved
// since the claim, the fill is taken back (cluster_unfill.lua) and
// reported refused.
func (p *Protocol) recheck(ctx context.Context, key string, scopes, tokens []string, head string) (bool, error) {
	if len(scopes) == 0 {
		return true, nil
	}
	pipe := p.cluster.Pipeline()
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
			return true, fmt.Errorf("check: %w", err)
		}
		if v != tokens[i] {
			if err := clusterUnfillScript.Run(ctx, p.cluster, []string{key}, head).Err(); err != nil {
				return false, fmt.Errorf("take back: %w", err)
			}
			return false, nil
		}
	}
	return true, nil
}

// Set writes payload to key for ttl, stamped with the current generations
// (claimed where missing): an unconditional write, in one round trip on one
// server (set.lua), two on a cluster (a claim, then SET).
func (p *Protocol) Set(ctx context.Context, key string, payload []byte, ttl time.Duration) error {
	var err error
	if p.cluster != nil {
		err = p.setCluster(ctx, key, payload, ttl)
	} else {
		err = setScript.Run(ctx, p.node, append([]string{key}, Keys(key)...), payload, ms(ttl), NewToken(), ttlArg).Err()
	}
	if err != nil {
		return fmt.Errorf("guard: set %s: %w", key, err)
	}
	return nil
}

func (p *Protocol) setCluster(ctx context.Context, key string, payload []byte, ttl time.Duration) error {
	tokens, err := claimPipelined(ctx, p.cluster, ClusterKeys(key), NewToken())
	if err != nil {
		return err
	}
	return p.cluster.Set(ctx, key, Stamp(tokens)+string(payload), ttl).Err()
}
