package warm

import (
	"context"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/guard"
)

// claim claims the generations that guard key before the fetch (package
// guard): stamped with Config.Stamp, raw otherwise.
func (w *Warmer) claim(ctx context.Context, key string) (guard.Claim, error) {
	if w.cfg.Stamp {
		return w.guard.Claim(ctx, key)
	}
	return w.guard.ClaimRaw(ctx, key)
}

// store writes body to req.Key only if no generation moved since c.
func (w *Warmer) store(ctx context.Context, req cachekeys.WarmRequest, body []byte, c guard.Claim) (bool, error) {
	return w.guard.Fill(ctx, c, body, req.TTL)
}
