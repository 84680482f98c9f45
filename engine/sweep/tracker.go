package sweep

import "math/bits"

// Why a pattern that joins a running walk misses no key.
//
// Redis walks a table of 2^n buckets in reverse-binary order (dict.c,
// dictScan): from cursor v it sets the bits above the mask, reverses all 64
// bits, adds one and reverses back. Read r = reverse64(v) as the binary
// fraction r/2^64 of [0, 1). Bucket b of a table of size 2^n then covers the
// interval [rev(b)/2^n, (rev(b)+1)/2^n) of that line, and a key lies at the
// point fixed by its hash, whatever the table's size:
//
//   - When the table grows, each interval splits into two halves that sit
//     next to each other; when it shrinks, two neighbours merge. The cursor
//     keeps its meaning as a point on the line, so a SCAN that returns next
//     cursor c has reported every key lying in [rev(v), rev(c)) (or up to 1
//     when c is 0) of the call's cursor v, for the key's whole life in that
//     interval. While Redis rehashes incrementally, dictScan visits the
//     small table's bucket and every bucket of the large table it expands
//     to, so the same holds during the rehash. A shrink can make the walk
//     report a key twice (merged buckets are visited again), never skip one.
//   - So the sequence of next cursors of one pass moves along the line
//     monotonically, from 0 back to 0, and the union of the pages is the
//     whole line: every key that exists throughout the pass is returned.
//
// A pattern joins when the next cursor to be sent is c_join: the page that
// call returns, and every later page, is matched against it. It needs the
// line covered once round from rev(c_join):
//
//  1. The rest of the current pass covers [rev(c_join), 1): the pattern
//     waits for a next cursor of 0.
//  2. The next pass starts at 0 and covers [0, rev(c)) after a page that
//     returned next cursor c. Once rev(c) >= rev(c_join) (an unsigned
//     compare of the reversed cursors: raw cursors are not ordered along the
//     line), or the cursor wraps to 0 again, [0, rev(c_join)) is covered too.
//
// When c_join is 0 the pattern joined at the start of a pass, and step 1
// alone covers the whole line. A key that exists from the join to the end
// lies at one point, which one of the two steps reached while it existed,
// so its page was matched and the key was unlinked in the next round trip.
// The walker reports the pattern complete only after that UNLINK returned.
// Keys written after the walk passed their point are not covered, and need
// not be: they were written after the event that asked for the sweep.
//
// MATCH filters after the walk, so it does not change the argument. With
// Redis 7.4+ in cluster mode every slot has its own table and the cursor
// carries the slot in its low bits (Config.CursorSlotBits): the walk covers
// slot after slot, so the position orders by slot first and then by the
// reversed table cursor, and the same two steps apply.

// position maps a cursor to its point on the walk's line, as a 64-bit
// fraction: reverse64(c), or with slotBits > 0 the slot in the top bits and
// the reversed table cursor below.
func position(c uint64, slotBits int) uint64 {
	if slotBits == 0 {
		return bits.Reverse64(c)
	}
	slot := c & (1<<slotBits - 1)
	return slot<<(64-slotBits) | bits.Reverse64(c>>slotBits)>>slotBits
}

// tracker decides when one pattern's walk is complete, from the cursors the
// walk reports after each page. It is pure: the rule is tested on synthetic
// cursor sequences.
type tracker struct {
	join     uint64 // position of c_join
	atStart  bool   // joined with c_join == 0
	wrapped  bool   // the pass it joined has returned to 0
	slotBits int
}

// newTracker starts tracking a pattern that joined when the next cursor to
// be sent was cJoin.
func newTracker(cJoin uint64, slotBits int) tracker {
	return tracker{join: position(cJoin, slotBits), atStart: cJoin == 0, slotBits: slotBits}
}

// advance records a page whose SCAN returned next cursor next, and reports
// whether the pattern has now seen every page it needs.
func (t *tracker) advance(next uint64) bool {
	if next == 0 {
		if t.atStart || t.wrapped {
			return true
		}
		t.wrapped = true
		return false
	}
	return t.wrapped && position(next, t.slotBits) >= t.join
}
