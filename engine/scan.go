package engine

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// scanner is the per-pattern sweeper: each pattern walks the whole keyspace
// with its own SCAN MATCH cursor. With dry set it removes nothing and
// reports each match to fn instead.
type scanner struct {
	rdb *redis.Client
	cfg Config
	dry bool
	fn  func(key string)
}

// Sweep sweeps patterns concurrently, at most Config.SweepConcurrency at
// once; the first failure cancels the others.
func (s *scanner) Sweep(ctx context.Context, patterns []string) (Result, error) {
	var total Result
	results := make([]Result, len(patterns))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.SweepConcurrency)
	for i, p := range patterns {
		g.Go(func() (err error) {
			results[i], err = s.sweep(gctx, p)
			return err
		})
	}
	err := g.Wait()
	for _, r := range results {
		total.Add(r)
	}
	return total, err
}

// sweep removes every key matching pattern. Each round trip is one pipeline
// holding UNLINK of the page in hand and SCAN of the next page.
func (s *scanner) sweep(ctx context.Context, pattern string) (Result, error) {
	var (
		res     Result
		cursor  uint64
		pending []string
	)
	for calls := 0; ; calls++ {
		if calls >= s.cfg.MaxScanCalls {
			n, _ := unlink(ctx, s.rdb, pending)
			res.Removed += n
			return res, fmt.Errorf("sweep %q: %w after %d SCAN calls", pattern, ErrSweepTooLong, calls)
		}
		keys, next, removed, err := s.page(ctx, pattern, cursor, pending)
		if err != nil {
			return res, fmt.Errorf("sweep %q: %w", pattern, err)
		}
		res.ScanCalls++
		res.Scanned += int64(len(keys))
		res.Removed += removed
		s.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "🔍 scan page",
			slog.String("pattern", pattern), slog.Uint64("cursor", cursor), slog.Int("keys", len(keys)))
		if s.dry {
			res.Removed += int64(len(keys))
			for _, k := range keys {
				s.fn(k)
			}
			keys = nil
		}
		pending, cursor = keys, next
		if cursor == 0 {
			break
		}
	}
	n, err := unlink(ctx, s.rdb, pending)
	res.Removed += n
	if err != nil {
		return res, fmt.Errorf("sweep %q: %w", pattern, err)
	}
	return res, nil
}

// page sends UNLINK of pending (if any) and one SCAN in one round trip.
func (s *scanner) page(ctx context.Context, pattern string, cursor uint64, pending []string) ([]string, uint64, int64, error) {
	if len(pending) == 0 {
		keys, next, err := s.rdb.Scan(ctx, cursor, pattern, int64(s.cfg.ScanCount)).Result()
		return keys, next, 0, err
	}
	pipe := s.rdb.Pipeline()
	unlink := pipe.Unlink(ctx, pending...)
	scan := pipe.Scan(ctx, cursor, pattern, int64(s.cfg.ScanCount))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, 0, err
	}
	keys, next := scan.Val()
	return keys, next, unlink.Val(), nil
}
