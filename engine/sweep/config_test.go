package sweep_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   sweep.Config
		wantErr bool
	}{
		{"zero value", sweep.Config{}, false},
		{"small max lowers the defaults", sweep.Config{MaxScanCount: 8}, false},
		{"budget", sweep.Config{Budget: 10_000}, false},
		{"cluster cursors", sweep.Config{CursorSlotBits: 14}, false},
		{"negative scan count", sweep.Config{ScanCount: -1}, true},
		{"negative min", sweep.Config{MinScanCount: -1}, true},
		{"negative max", sweep.Config{MaxScanCount: -5}, true},
		{"min above initial", sweep.Config{MinScanCount: 100, ScanCount: 50}, true},
		{"initial above max", sweep.Config{ScanCount: 2000}, true},
		{"negative budget", sweep.Config{Budget: -1}, true},
		{"negative call time", sweep.Config{MaxCallTime: -time.Millisecond}, true},
		{"negative chunk", sweep.Config{UnlinkChunk: -1}, true},
		{"negative calls per pass", sweep.Config{MaxCallsPerPass: -1}, true},
		{"too many slot bits", sweep.Config{CursorSlotBits: 40}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.given.Validate()
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, sweep.ErrInvalidConfig)) {
				t.Fatalf("Validate() = %v, want error %v wrapping ErrInvalidConfig", err, tt.wantErr)
			}
			if err != nil { // New does not panic; Sweep reports the error
				w := sweep.New(nil, tt.given)
				defer w.Close()
				if _, serr := w.Sweep(context.Background(), []string{"a:*"}); !errors.Is(serr, sweep.ErrInvalidConfig) {
					t.Fatalf("Sweep with invalid config = %v", serr)
				}
			}
		})
	}
}
