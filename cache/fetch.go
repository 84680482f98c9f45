package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/invalidator/invalidator/guard"
)

// Fetch returns the value cached under key, or calls load, stores what it
// returns for ttl and returns it: the original app's @cached decorator.
//
//   - Concurrent callers for one key (in this process) share one load
//     (singleflight); it runs with the first caller's ctx.
//   - The fill goes through the generation guard: the key's generations are
//     claimed before load and the write checks them after, so a load that
//     started before an invalidation of key (exact, or a pattern over it)
//     never stores its older value; the value is returned all the same, and
//     the refusal is counted (stale fills refused).
//   - When Redis fails (a read, claim or fill error), Fetch falls back to
//     load and returns its result, with one ⚠️ line per outage (and one ✅
//     line when Redis answers again). Errors of load are returned as they
//     are; nothing is cached then.
func Fetch[T any](ctx context.Context, c *Cache, key string, ttl time.Duration, load func(context.Context) (T, error)) (T, error) {
	var zero T
	proto := c.proto
	if err := checkTTL(ttl); err != nil {
		return zero, err
	}
	c.marker.touch(ctx)
	full := c.prefix + key
	b, ok, err := proto.Read(ctx, full)
	if err != nil {
		return fallback(ctx, c, err, full, load)
	}
	c.up(ctx)
	if ok {
		var v T
		if err := json.Unmarshal(b, &v); err == nil {
			c.hit(ctx, full)
			return v, nil
		}
		// An undecodable value (another type under this key) is refilled.
	}
	c.miss(ctx, full)
	claim, err := proto.Claim(ctx, full)
	if err != nil {
		return fallback(ctx, c, err, full, load)
	}
	// Callers share a load only if they claimed the same tokens: then no
	// invalidation of the key moved a generation between their claims, so
	// the shared load is not older than any invalidation that completed
	// before the later caller began.
	v, err, _ := c.group.Do(full+"\n"+strings.Join(claim.Tokens, " "), func() (any, error) {
		// A caller that missed just before an earlier flight for the same
		// tokens stored its value, and came here after that flight ended,
		// finds the value now instead of loading again.
		if b, ok, err := proto.Read(ctx, full); err == nil && ok {
			var v T
			if json.Unmarshal(b, &v) == nil {
				return v, nil
			}
		}
		return fetchFill(ctx, c, claim, ttl, load)
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return v.(T), nil
}

// fetchFill loads and fills; a Redis error on the fill keeps the loaded
// value.
func fetchFill[T any](ctx context.Context, c *Cache, claim guard.Claim, ttl time.Duration, load func(context.Context) (T, error)) (T, error) {
	key := claim.Key
	v, err := load(ctx)
	if err != nil {
		return v, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return v, fmt.Errorf("cache: encode %s: %w", key, err)
	}
	stored, err := c.proto.Fill(ctx, claim, b, ttl)
	switch {
	case err != nil:
		c.outage(ctx, err)
	case stored:
		c.metrics.fills.Inc()
		c.log.DebugContext(ctx, "💾 cache stored", slog.String("key", key), slog.Duration("ttl", ttl))
		if c.refused.Load() && c.refused.CompareAndSwap(true, false) {
			c.log.DebugContext(ctx, "cache fills stored again after refused ones")
		}
	default:
		c.metrics.refused.Inc()
		if c.refused.CompareAndSwap(false, true) { // once until a fill is stored again
			c.log.WarnContext(ctx, "⚠️ cache fill refused: the key was invalidated while loading (said once until a fill is stored)",
				slog.String("key", key))
		} else {
			c.log.DebugContext(ctx, "cache fill refused: invalidated while loading", slog.String("key", key))
		}
	}
	return v, nil
}

// fallback reports err as an outage and calls load. A done ctx is not an
// outage: its error is returned.
// Concurrent callers for key share one load meanwhile too.
func fallback[T any](ctx context.Context, c *Cache, err error, key string, load func(context.Context) (T, error)) (T, error) {
	var zero T
	if ctx.Err() != nil {
		return zero, err
	}
	c.outage(ctx, err)
	v, err, _ := c.group.Do(key+"\n", func() (any, error) { return load(ctx) })
	if err != nil {
		return zero, err
	}
	return v.(T), nil
}

// outage logs one ⚠️ line per outage: the first error after Redis last
// answered.
func (c *Cache) outage(ctx context.Context, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return
	}
	if c.down.CompareAndSwap(false, true) {
		c.log.WarnContext(ctx, "⚠️ cache: Redis failed, loading without the cache until it answers", slog.Any("err", err))
	}
}

// up logs one ✅ line when Redis answers after an outage.
func (c *Cache) up(ctx context.Context) {
	if c.down.Load() && c.down.CompareAndSwap(true, false) {
		c.log.InfoContext(ctx, "✅ cache: Redis answers again")
	}
}
