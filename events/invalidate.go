package events

import (
	"context"
	"fmt"

	"github.com/invalidator/invalidator/cachekeys"
)

// Invalidate publishes an explicit invalidation of keys (exact cache keys)
// and patterns (Redis globs) on cachekeys.InvalidateSubject
// ("events.cache.invalidate"), with data
// {"keys": [...], "patterns": [...]}: the counterpart of the original
// app's @invalidate_cache decorator. Call it after the mutation it
// follows has been committed. Nil lists are sent as empty ones; when both
// are empty nothing is sent. Every key and pattern must fall under an
// entry of the worker's explicit.allow, or the worker dead-letters the
// event. Errors are those of Publisher.Publish.
func (p *Publisher) Invalidate(ctx context.Context, keys, patterns []string) error {
	if len(keys) == 0 && len(patterns) == 0 {
		return nil
	}
	data := map[string]any{"keys": nonNil(keys), "patterns": nonNil(patterns)}
	if _, err := p.Publish(ctx, cachekeys.InvalidateSubject, data); err != nil {
		return fmt.Errorf("events: invalidate: %w", err)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
