package sweep

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of Config.
const (
	// DefaultScanCount is the largest COUNT the walk adapts up to.
	DefaultScanCount = 1000
	// DefaultStartScanCount is the COUNT of the first SCAN of a walk; the
	// walk grows it from the cost per key it measures.
	DefaultStartScanCount = 100
	// DefaultMinScanCount is the smallest COUNT the walk adapts down to.
	DefaultMinScanCount = 16
	// DefaultMaxCallTime is the server time no SCAN or UNLINK call should
	// exceed (the SLOWLOG threshold the walk keeps under).
	DefaultMaxCallTime = 2 * time.Millisecond
	// DefaultUnlinkChunk caps the keys of one UNLINK command.
	DefaultUnlinkChunk = 500
	// DefaultMaxCallsPerPass bounds the SCAN calls of one pass, a guard
	// against a cursor that never returns to 0. At DefaultMinScanCount it
	// still allows a pass over about 60M keys.
	DefaultMaxCallsPerPass = 1 << 22
)

// BudgetSlices is the least number of SCAN calls a second a budgeted walk
// spreads its budget over: a call of Budget/2000 keys holds Redis for a
// fraction of a millisecond.
const BudgetSlices = 2000

// ErrInvalidConfig is wrapped by every error of Config.Validate.
var ErrInvalidConfig = errors.New("invalid sweep config")

// Config configures a Walker. The zero value is valid: every field has a
// default.
type Config struct {
	// ScanCount is the COUNT hint of the first SCAN of a walk; the walk then
	// adapts COUNT between MinScanCount and MaxScanCount to keep each round
	// trip under MaxCallTime. Defaults to DefaultStartScanCount, capped at
	// MaxScanCount.
	ScanCount int
	// MaxScanCount is the largest COUNT the walk grows to. Defaults to
	// DefaultScanCount.
	MaxScanCount int
	// MinScanCount is the smallest COUNT the walk shrinks to. Defaults to
	// DefaultMinScanCount, capped at MaxScanCount.
	MinScanCount int
	// Budget is the number of keys examined per second on this node, a pace
	// that leaves Redis to the application. Keys examined are counted as
	// the COUNT of each SCAN. With a budget, COUNT is also capped at
	// Budget/BudgetSlices (MinScanCount at the least), so that the walk
	// comes in many short calls rather than a few long ones and the
	// application's commands wait less behind each. Defaults to 0,
	// unlimited.
	Budget int
	// MaxCallTime is the longest a SCAN or UNLINK call should take on the
	// server. The walk measures each round trip and sets COUNT so that a
	// round trip takes about a third of MaxCallTime (a quarter with a Budget),
	// from an upper envelope of the cost per key; a round trip over
	// MaxCallTime halves COUNT at once. A round trip measured on the client includes the
	// network and the client's own work, so this keeps the server's time
	// below MaxCallTime. Defaults to DefaultMaxCallTime.
	MaxCallTime time.Duration
	// UnlinkChunk caps the keys of one UNLINK command. Defaults to
	// DefaultUnlinkChunk.
	UnlinkChunk int
	// SlotOf, when set, groups a page's matches by its value before they
	// are chunked: every UNLINK then holds keys of one group only. A Redis
	// Cluster node refuses a multi-key command across hash slots, so the
	// cluster engine sets it to the key's slot: one UNLINK per slot of the
	// page, all in the round trip of the next SCAN. Defaults to nil, one
	// group.
	SlotOf func(key string) int
	// MaxCallsPerPass bounds the SCAN calls of one pass; past it, the
	// patterns of the walk fail with ErrPassTooLong. Defaults to
	// DefaultMaxCallsPerPass.
	MaxCallsPerPass int
	// CursorSlotBits is the number of low cursor bits that hold a slot
	// index: 14 on Redis 7.4 or later (and Valkey 8) in cluster mode, where
	// each slot has its own table and SCAN walks the slots in order. The
	// walk's position on the keyspace then orders slot first. Defaults to
	// 0: one table, as on a standalone or Sentinel-managed server.
	CursorSlotBits int
	// Logger gets one info line per finished pass. Defaults to a
	// discarding logger.
	Logger *slog.Logger
	// Observer receives the walk's metrics. Defaults to nil, no metrics.
	Observer Observer
	// DryRun, when set, makes the walker remove nothing: each matched key
	// is handed to DryRun (from the walk's goroutine, never concurrently)
	// and counted in Result.Removed as a key that would go. A dry walker
	// serves dry runs only (purge --dry-run): never share one with real
	// sweeps. Defaults to nil.
	DryRun func(key string)
}

// WithDefaults returns c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	c.MaxScanCount = cmp.Or(c.MaxScanCount, DefaultScanCount)
	c.ScanCount = cmp.Or(c.ScanCount, min(DefaultStartScanCount, c.MaxScanCount))
	c.MinScanCount = cmp.Or(c.MinScanCount, min(DefaultMinScanCount, c.MaxScanCount))
	c.MaxCallTime = cmp.Or(c.MaxCallTime, DefaultMaxCallTime)
	c.UnlinkChunk = cmp.Or(c.UnlinkChunk, DefaultUnlinkChunk)
	c.MaxCallsPerPass = cmp.Or(c.MaxCallsPerPass, DefaultMaxCallsPerPass)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// Validate reports the first invalid field of c, after defaults, wrapped
// with ErrInvalidConfig.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.ScanCount < 0, c.MinScanCount < 0, c.MaxScanCount < 0:
		return fmt.Errorf("%w: scan counts must not be negative (min %d, initial %d, max %d)",
			ErrInvalidConfig, c.MinScanCount, c.ScanCount, c.MaxScanCount)
	case c.MinScanCount > c.ScanCount || c.ScanCount > c.MaxScanCount:
		return fmt.Errorf("%w: want MinScanCount <= ScanCount <= MaxScanCount, have %d, %d, %d",
			ErrInvalidConfig, c.MinScanCount, c.ScanCount, c.MaxScanCount)
	case c.Budget < 0:
		return fmt.Errorf("%w: Budget %d is negative", ErrInvalidConfig, c.Budget)
	case c.MaxCallTime < 0:
		return fmt.Errorf("%w: MaxCallTime %s is negative", ErrInvalidConfig, c.MaxCallTime)
	case c.UnlinkChunk < 0:
		return fmt.Errorf("%w: UnlinkChunk %d is negative", ErrInvalidConfig, c.UnlinkChunk)
	case c.MaxCallsPerPass < 0:
		return fmt.Errorf("%w: MaxCallsPerPass %d is negative", ErrInvalidConfig, c.MaxCallsPerPass)
	case c.CursorSlotBits < 0 || c.CursorSlotBits > 32:
		return fmt.Errorf("%w: CursorSlotBits %d is outside 0..32", ErrInvalidConfig, c.CursorSlotBits)
	}
	return nil
}
