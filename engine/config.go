package engine

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"

	"github.com/invalidator/invalidator/engine/sweep"
)

// Engine defaults.
const (
	// DefaultScanCount is the COUNT hint of each SCAN.
	DefaultScanCount = 1000
	// DefaultMaxScanCalls bounds one pass of the shared walk, a guard
	// against a cursor that never ends.
	DefaultMaxScanCalls = 1 << 22
)

// unlinkChunk caps the keys of one UNLINK command, so that no single
// command holds the server for long.
const unlinkChunk = 1000

// ErrInvalidConfig is wrapped by every error of [Config.Validate].
var ErrInvalidConfig = errors.New("invalid engine config")

// Config configures an engine. The zero value of each field takes its default.
type Config struct {
	// ScanCount is the COUNT hint for SCAN. Defaults to DefaultScanCount.
	ScanCount int
	// MaxScanCalls bounds the SCAN calls of one pass of the shared walk; a
	// pattern whose pass needs more fails with ErrSweepTooLong. Defaults to
	// DefaultMaxScanCalls.
	MaxScanCalls int
	// Logger gets the walk's lines (Sweep.Logger unless that is set).
	// Defaults to a discarding logger.
	Logger *slog.Logger
	// Sweep configures the shared walk: its pace (Sweep.Budget, keys
	// examined per second), the longest call it lets Redis spend
	// (Sweep.MaxCallTime), and its metrics (Sweep.Observer). ScanCount, when
	// set, is its largest COUNT unless Sweep.MaxScanCount is set; Logger is
	// its logger unless Sweep.Logger is set; MaxScanCalls bounds the calls
	// of one pass unless Sweep.MaxCallsPerPass is set.
	Sweep sweep.Config
	// NodeObserver, when set, gives the walk of each Redis node (its
	// address) its own metrics Observer, in place of Sweep.Observer: one
	// node for the single-node engine, each master on a cluster. Defaults
	// to nil.
	NodeObserver func(node string) sweep.Observer
	// Generations makes every job first advance the generation of each of
	// its exact keys and of each pattern's scope (see package guard), in the
	// same round trip and before anything is removed: the invalidation side
	// of the warmer's guard against writing a value fetched before the
	// invalidation. Defaults to false (no warming).
	Generations bool
}

// WithDefaults returns c with every zero field set to its default.
// Negative values are kept, for Validate to refuse.
func (c Config) WithDefaults() Config {
	c.ScanCount = cmp.Or(c.ScanCount, DefaultScanCount)
	c.MaxScanCalls = cmp.Or(c.MaxScanCalls, DefaultMaxScanCalls)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Sweep.MaxScanCount = cmp.Or(c.Sweep.MaxScanCount, c.ScanCount)
	c.Sweep.MaxCallsPerPass = cmp.Or(c.Sweep.MaxCallsPerPass, c.MaxScanCalls)
	if c.Sweep.Logger == nil {
		c.Sweep.Logger = c.Logger
	}
	return c
}

// Validate reports the first field out of range, wrapping ErrInvalidConfig.
// Zero values are valid: they mean the default.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"ScanCount", c.ScanCount},
		{"MaxScanCalls", c.MaxScanCalls},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: %s is %d, must not be negative", ErrInvalidConfig, f.name, f.v)
		}
	}
	if err := c.Sweep.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}
