package consistency

import (
	"math"
	"sync"
	"time"
)

// Windows of the report.
const (
	hourMinutes = 60
	dayMinutes  = 24 * 60
)

// bucket counts the results of one timescale in one minute.
type bucket struct {
	minute                  int64 // unix minute, to tell a reused slot
	checked, stale, unknown int64
}

// stats keeps minute buckets for a day per timescale: bounded memory,
// whatever the rate.
type stats struct {
	mu      sync.Mutex
	buckets [][dayMinutes]bucket // per delay index
}

func newStats(n int) *stats { return &stats{buckets: make([][dayMinutes]bucket, n)} }

// add counts result r at timescale index i, at now.
func (s *stats) add(i int, r Result, now time.Time) {
	m := now.Unix() / 60
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &s.buckets[i][m%dayMinutes]
	if b.minute != m {
		*b = bucket{minute: m}
	}
	switch r {
	case Unknown:
		b.unknown++
	case Stale:
		b.stale++
		b.checked++
	default:
		b.checked++
	}
}

// window sums the buckets of timescale index i over the last minutes
// before now (the current minute included).
func (s *stats) window(i int, now time.Time, minutes int64) Window {
	m := now.Unix() / 60
	s.mu.Lock()
	defer s.mu.Unlock()
	var w Window
	for _, b := range s.buckets[i] {
		if b.minute > m-minutes && b.minute <= m {
			w.Checked += b.checked
			w.Stale += b.stale
			w.Unknown += b.unknown
		}
	}
	w.nines()
	return w
}

// Window is the count of one timescale over a window.
type Window struct {
	// Checked counts the reads counted in the nines: every result but
	// unknown.
	Checked int64 `json:"checked"`
	// Stale counts the stale reads.
	Stale int64 `json:"stale"`
	// Unknown counts the reads of unstamped values, or of keys whose
	// invalidation moved no generation.
	Unknown int64 `json:"unknown"`
	// Nines is -log10(stale/checked), when some read was stale.
	Nines *float64 `json:"nines,omitempty"`
	// NinesAtLeast is, with no stale read, the nines the number of checks
	// supports (the rule of three: at 95% confidence the stale fraction
	// is below 3/checked, so at least log10(checked/3) nines; 0 below 3
	// checks). Absent when nothing was checked.
	NinesAtLeast *float64 `json:"nines_at_least,omitempty"`
}

func (w *Window) nines() {
	switch {
	case w.Checked == 0:
	case w.Stale > 0:
		n := -math.Log10(float64(w.Stale) / float64(w.Checked))
		w.Nines = &n
	default:
		n := max(0, math.Log10(float64(w.Checked)/3))
		w.NinesAtLeast = &n
	}
}
