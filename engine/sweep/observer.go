package sweep

import "time"

// Observer receives the metrics of a Walker. Its methods are called from the
// walk goroutine only, never while the Walker holds its lock, and must
// return quickly.
type Observer interface {
	// PassFinished is called when the cursor returns to 0.
	PassFinished(p Pass)
	// KeysExamined adds n keys examined by SCAN (see Result.Examined for
	// how they are counted).
	KeysExamined(n int)
	// KeysRemoved adds n keys removed by UNLINK.
	KeysRemoved(n int)
	// ActivePatterns sets the number of patterns the walk is serving.
	ActivePatterns(n int)
	// PatternWait records the time from a pattern's join to its completion.
	PatternWait(d time.Duration)
	// Progress sets the fraction of the current pass covered, in [0, 1).
	Progress(fraction float64)
}

// Pass describes one finished pass of a walk.
type Pass struct {
	// Number counts the passes of the Walker, from 1.
	Number int64
	// Patterns is the number of patterns the pass served (active at any
	// time during it).
	Patterns int
	// Examined is the number of keys the pass examined.
	Examined int64
	// Removed is the number of keys the pass removed.
	Removed int64
	// ScanCalls is the number of SCAN calls of the pass.
	ScanCalls int64
	// Duration is the wall time of the pass.
	Duration time.Duration
}

type nopObserver struct{}

func (nopObserver) PassFinished(Pass)         {}
func (nopObserver) KeysExamined(int)          {}
func (nopObserver) KeysRemoved(int)           {}
func (nopObserver) ActivePatterns(int)        {}
func (nopObserver) PatternWait(time.Duration) {}
func (nopObserver) Progress(float64)          {}
