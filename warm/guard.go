package warm

import (
	"context"
	"fmt"
	"strconv"

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

func (w *Warmer) generations(ctx context.Context, key string) ([]string, error) {
	vals, err := w.rdb.MGet(ctx, GenerationKeys(key)...).Result()
	if err != nil {
		return nil, fmt.Errorf("read generations: %w", err)
	}
	gens := make([]string, len(vals))
	for i, v := range vals {
		gens[i] = "0"
		if s, ok := v.(string); ok {
			gens[i] = s
		}
	}
	return gens, nil
}

// guardedSet writes KEYS[1] only if every generation key KEYS[2..] still
// holds the value read before the fetch (ARGV[3..]; a missing key reads "0").
var guardedSet = redis.NewScript(`
for i = 2, #KEYS do
  local g = redis.call('GET', KEYS[i]) or '0'
  if g ~= ARGV[i + 1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

func (w *Warmer) store(ctx context.Context, req cachekeys.WarmRequest, body []byte, gens []string) (bool, error) {
	keys := append([]string{req.Key}, GenerationKeys(req.Key)...)
	args := []any{body, strconv.FormatInt(req.TTL.Milliseconds(), 10)}
	for _, g := range gens {
		args = append(args, g)
	}
	n, err := guardedSet.Run(ctx, w.rdb, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("guarded set: %w", err)
	}
	return n == 1, nil
}
