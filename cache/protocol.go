package cache

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
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

// read runs read.lua: the payload and true on a current value, false on a
// missing or stale one.
func read(ctx context.Context, rdb redis.Scripter, key string) ([]byte, bool, error) {
	b, err := readScript.Run(ctx, rdb, scriptKeys(key)).Text()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("cache: read %s: %w", key, err)
	}
	return []byte(b), true, nil
}

// claim runs claim.lua and returns the tokens the guard keys of key hold.
func claim(ctx context.Context, rdb redis.Scripter, key string) ([]string, error) {
	tokens, err := claimScript.Run(ctx, rdb, GuardKeys(key), engine.NewGenerationToken(), generationTTL).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("cache: claim %s: %w", key, err)
	}
	return tokens, nil
}

// fill runs fill.lua: it writes payload only if no guard moved since claim;
// false means it was refused.
func fill(ctx context.Context, rdb redis.Scripter, key string, payload []byte, ttl time.Duration, tokens []string) (bool, error) {
	args := make([]any, 0, 2+len(tokens))
	args = append(args, payload, ms(ttl))
	for _, t := range tokens {
		args = append(args, t)
	}
	n, err := fillScript.Run(ctx, rdb, scriptKeys(key), args...).Int()
	if err != nil {
		return false, fmt.Errorf("cache: fill %s: %w", key, err)
	}
	return n == 1, nil
}

// set runs set.lua.
func set(ctx context.Context, rdb redis.Scripter, key string, payload []byte, ttl time.Duration) error {
	err := setScript.Run(ctx, rdb, scriptKeys(key), payload, ms(ttl), engine.NewGenerationToken(), generationTTL).Err()
	if err != nil {
		return fmt.Errorf("cache: set %s: %w", key, err)
	}
	return nil
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
