package sweep

import (
	"math/bits"
	"math/rand/v2"
	"testing"
)

// simDict models a Redis dict as dict.c scans it: two tables while
// rehashing, buckets moved from table 0 to table 1 in index order, and
// dictScan's reverse-binary cursor. Keys are identified by their hash.
type simDict struct {
	exp       [2]int // table size exponents; exp[1] < 0 when not rehashing
	rehashIdx uint64
	keys      map[uint64]bool // hash → inserted into table 1 while rehashing
}

func mask(exp int) uint64 { return 1<<exp - 1 }

func (d *simDict) rehashing() bool { return d.exp[1] >= 0 }

// table returns the table holding key h.
func (d *simDict) table(h uint64) int {
	if d.rehashing() && (d.keys[h] || h&mask(d.exp[0]) < d.rehashIdx) {
		return 1
	}
	return 0
}

func (d *simDict) bucket(t int, b uint64, emit func(uint64)) {
	for h := range d.keys {
		if d.table(h) == t && h&mask(d.exp[t]) == b {
			emit(h)
		}
	}
}

// scan ports dictScan.
func (d *simDict) scan(v uint64, emit func(uint64)) uint64 {
	if !d.rehashing() {
		m0 := mask(d.exp[0])
		d.bucket(0, v&m0, emit)
		v |= ^m0
		return bits.Reverse64(bits.Reverse64(v) + 1)
	}
	t0, t1 := 0, 1
	if d.exp[t0] > d.exp[t1] {
		t0, t1 = t1, t0
	}
	m0, m1 := mask(d.exp[t0]), mask(d.exp[t1])
	d.bucket(t0, v&m0, emit)
	for {
		d.bucket(t1, v&m1, emit)
		v |= ^m1
		v = bits.Reverse64(bits.Reverse64(v) + 1)
		if v&(m0^m1) == 0 {
			return v
		}
	}
}

// mutate inserts, deletes, resizes and rehashes at random, as a busy
// server does between two SCAN calls.
func (d *simDict) mutate(r *rand.Rand, alive map[uint64]bool) {
	for range r.IntN(20) {
		h := r.Uint64()
		d.keys[h] = d.rehashing()
	}
	for h := range d.keys {
		if r.IntN(40) == 0 {
			delete(d.keys, h)
			delete(alive, h)
		}
	}
	if !d.rehashing() && r.IntN(4) == 0 {
		d.exp[1] = min(10, max(2, d.exp[0]+r.IntN(7)-3)) // grow or shrink by up to 8x
		if d.exp[1] == d.exp[0] {
			d.exp[1] = -1
		}
		d.rehashIdx = 0
	}
	if d.rehashing() {
		d.rehashIdx += uint64(r.IntN(8))
		if d.rehashIdx >= 1<<d.exp[0] {
			d.exp = [2]int{d.exp[1], -1}
			for h := range d.keys {
				d.keys[h] = false
			}
		}
	}
}

// checkWalk runs a simulated walk with patterns (here: whole-keyspace
// joiners) joining at random cursors and checks that every key alive from
// a join to its completion was emitted while the joiner was active.
func checkWalk(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0))
	d := &simDict{exp: [2]int{2 + r.IntN(5), -1}, keys: map[uint64]bool{}}
	for range r.IntN(200) {
		d.keys[r.Uint64()] = false
	}
	type joiner struct {
		tr    tracker
		alive map[uint64]bool // keys alive since the join
		seen  map[uint64]bool
		done  bool
	}
	var joiners []*joiner
	var cursor uint64
	pending := func() bool {
		for _, j := range joiners {
			if !j.done {
				return true
			}
		}
		return false
	}
	for call := 0; call < 1000 || pending(); call++ {
		if call > 100_000 {
			t.Fatalf("seed %d: a joiner never completed", seed)
		}
		if call < 1000 && (r.IntN(3) == 0 || len(joiners) == 0) {
			j := &joiner{tr: newTracker(cursor, 0), alive: map[uint64]bool{}, seen: map[uint64]bool{}}
			for h := range d.keys {
				j.alive[h] = true
			}
			joiners = append(joiners, j)
		}
		var page []uint64
		next := d.scan(cursor, func(h uint64) { page = append(page, h) })
		for _, j := range joiners {
			if j.done {
				continue
			}
			for _, h := range page {
				j.seen[h] = true
			}
			if j.tr.advance(next) {
				j.done = true
				for h := range j.alive {
					if !j.seen[h] {
						t.Fatalf("seed %d: key %x alive throughout was missed", seed, h)
					}
				}
			}
		}
		cursor = next
		for _, j := range joiners {
			if !j.done {
				d.mutate(r, j.alive)
				break
			}
		}
		for _, j := range joiners {
			for h := range j.alive {
				if _, ok := d.keys[h]; !ok {
					delete(j.alive, h)
				}
			}
		}
	}
}

// Patterns that join a simulated walk at random cursors, while the table
// grows, shrinks and rehashes incrementally, miss no key that lived from
// their join to their completion.
func TestTrackerMissesNoKeyWhileRehashing(t *testing.T) {
	t.Parallel()
	for seed := range uint64(10) {
		checkWalk(t, seed)
	}
}

func FuzzTrackerWalk(f *testing.F) {
	f.Add(uint64(1))
	f.Add(uint64(42))
	f.Fuzz(func(t *testing.T, seed uint64) { checkWalk(t, seed) })
}

// The completion rule on hand-written cursor sequences (table of 8
// buckets: reverse-binary order 0 4 2 6 1 5 3 7).
func TestTrackerRule(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		givenJoin uint64
		givenNext []uint64
		wantDone  int // index in givenNext of the page that completes, -1 never
	}{
		{"join at 0 completes at wrap", 0, []uint64{4, 2, 6, 1, 5, 3, 7, 0}, 7},
		{"join mid completes at its point", 2, []uint64{6, 1, 5, 3, 7, 0, 4, 2, 6}, 7},
		{"raw order would be wrong", 1, []uint64{5, 3, 7, 0, 4, 2, 6, 1}, 7},
		{"a coarser page passes the point", 6, []uint64{1, 0, 1}, 2},
		{"wraps twice without passing", 7, []uint64{0, 0}, 1},
		{"not before the wrap", 2, []uint64{6, 1}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(tt.givenJoin, 0)
			got := -1
			for i, c := range tt.givenNext {
				if tr.advance(c) {
					got = i
					break
				}
			}
			if got != tt.wantDone {
				t.Errorf("completed at page %d, want %d", got, tt.wantDone)
			}
		})
	}
}

// With slot bits, the position orders by slot first, then by the reversed
// table cursor.
func TestPositionSlotBits(t *testing.T) {
	t.Parallel()
	const b = 14
	c := func(slot, d uint64) uint64 { return d<<b | slot }
	order := []uint64{c(0, 0), c(0, 4), c(0, 2), c(0, 1), c(0, 3), c(1, 0), c(1, 2), c(16383, 1)}
	for i := 1; i < len(order); i++ {
		if position(order[i-1], b) >= position(order[i], b) {
			t.Errorf("position(%#x) >= position(%#x)", order[i-1], order[i])
		}
	}
}
