package cache

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/redis/go-redis/v9"
)

// The scripts of the read/fill protocol, shipped as files so that services
// in other languages load the very same code (README, "For services: the
// cache package").
var (
	//go:embed read.lua
	ReadScript string
	//go:embed claim.lua
	ClaimScript string
	//go:embed fill.lua
	FillScript string
	//go:embed set.lua
	SetScript string
)

var (
	readScript  = redis.NewScript(ReadScript)
	claimScript = redis.NewScript(ClaimScript)
	fillScript  = redis.NewScript(FillScript)
	setScript   = redis.NewScript(SetScript)
)

// generationTTL is engine.DefaultGenerationTTL in ms, as the scripts take it.
var generationTTL = strconv.FormatInt(engine.DefaultGenerationTTL.Milliseconds(), 10)

// GuardKeys returns the generation keys that guard key, in the order the
// scripts take them: the key's own (invalidator:gen:<key>), then that of
// each segment prefix, shortest first (cachekeys.SegmentPrefixes). An
// invalidation of key removes the first; one of a pattern over key sets a
// fresh token on the one of the pattern's scope.
func GuardKeys(key string) []string {
	prefixes := cachekeys.SegmentPrefixes(key)
	keys := make([]string, 0, 1+len(prefixes))
	keys = append(keys, engine.GenerationKey(key))
	for _, p := range prefixes {
		keys = append(keys, engine.GenerationKey(p))
	}
	return keys
}

// scriptKeys returns KEYS for read.lua, fill.lua and set.lua.
func scriptKeys(key string) []string {
	return append([]string{key}, GuardKeys(key)...)
}

// protocol is the read/fill protocol on one topology: nodeProtocol (a
// server, or a Sentinel master: one script per operation) or
// clusterProtocol (cluster.go).
type protocol interface {
	// read returns the payload and true on a current value, false on a
	// missing or stale one.
	read(ctx context.Context, key string) ([]byte, bool, error)
	// exists counts the keys read would find.
	exists(ctx context.Context, keys []string) (int64, error)
	// claim returns the tokens the guard generations of key hold.
	claim(ctx context.Context, key string) ([]string, error)
	// fill writes payload only if no guard moved since claim; false means
	// it was refused.
	fill(ctx context.Context, key string, payload []byte, ttl time.Duration, tokens []string) (bool, error)
	// set writes payload stamped with the current generations.
	set(ctx context.Context, key string, payload []byte, ttl time.Duration) error
}

// nodeProtocol is the protocol on one server: every operation is one
// script over the key and its guards.
type nodeProtocol struct {
	rdb *redis.Client
}

// read pipelines GET key and MGET of its guards (one round trip, no
// script: the cheapest read for Redis) and compares on the client, as
// read.lua does on the server. The two reads need not be atomic: an
// invalidation that completed before the read began moved a generation (or
// removed key) before either ran (see cluster.go for the argument, which
// holds here too).
func (p nodeProtocol) read(ctx context.Context, key string) ([]byte, bool, error) {
	pipe := p.rdb.Pipeline()
	get, gens := queueNodeRead(ctx, pipe, key)
	_, _ = pipe.Exec(ctx) // each command carries its own error
	return checkNodeRead(key, get, gens)
}

// queueNodeRead queues the read of key on pipe.
func queueNodeRead(ctx context.Context, pipe redis.Pipeliner, key string) (*redis.StringCmd, *redis.SliceCmd) {
	return pipe.Get(ctx, key), pipe.MGet(ctx, GuardKeys(key)...)
}

// checkNodeRead compares the value get read with the generations gens
// read: the payload and true on a current value.
func checkNodeRead(key string, get *redis.StringCmd, gens *redis.SliceCmd) ([]byte, bool, error) {
	value, err := get.Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("cache: read %s: %w", key, err)
	}
	vals, err := gens.Result()
	if err != nil {
		return nil, false, fmt.Errorf("cache: read %s: %w", key, err)
	}
	current := make([]string, len(vals))
	for i, v := range vals {
		current[i] = "0"
		if s, ok := v.(string); ok {
			current[i] = s
		}
	}
	return stamped(value, current)
}

// stamped returns the payload of value and true if its stamp is the
// current generations.
func stamped(value string, current []string) ([]byte, bool, error) {
	head := stamp(current)
	if !strings.HasPrefix(value, head) {
		return nil, false, nil
	}
	return []byte(value[len(head):]), true, nil
}

func (p nodeProtocol) exists(ctx context.Context, keys []string) (int64, error) {
	pipe := p.rdb.Pipeline()
	gets, gens := make([]*redis.StringCmd, len(keys)), make([]*redis.SliceCmd, len(keys))
	for i, k := range keys {
		gets[i], gens[i] = queueNodeRead(ctx, pipe, k)
	}
	_, _ = pipe.Exec(ctx)
	var n int64
	for i, k := range keys {
		_, ok, err := checkNodeRead(k, gets[i], gens[i])
		if err != nil {
			return 0, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

func (p nodeProtocol) claim(ctx context.Context, key string) ([]string, error) {
	tokens, err := claimScript.Run(ctx, p.rdb, GuardKeys(key), engine.NewGenerationToken(), generationTTL).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("cache: claim %s: %w", key, err)
	}
	return tokens, nil
}

func (p nodeProtocol) fill(ctx context.Context, key string, payload []byte, ttl time.Duration, tokens []string) (bool, error) {
	args := make([]any, 0, 2+len(tokens))
	args = append(args, payload, ms(ttl))
	for _, t := range tokens {
		args = append(args, t)
	}
	n, err := fillScript.Run(ctx, p.rdb, scriptKeys(key), args...).Int()
	if err != nil {
		return false, fmt.Errorf("cache: fill %s: %w", key, err)
	}
	return n == 1, nil
}

func (p nodeProtocol) set(ctx context.Context, key string, payload []byte, ttl time.Duration) error {
	err := setScript.Run(ctx, p.rdb, scriptKeys(key), payload, ms(ttl), engine.NewGenerationToken(), generationTTL).Err()
	if err != nil {
		return fmt.Errorf("cache: set %s: %w", key, err)
	}
	return nil
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
