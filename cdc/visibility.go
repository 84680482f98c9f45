package cdc

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Logical decoding sends a transaction's COMMIT once its commit record is
// flushed, which is before the committing backend makes it visible to
// other sessions. An event published at that moment lets a worker remove
// a key that a reader then refills from the row as it was before the
// commit: stale until the row's next write. So a committed transaction
// waits at the gate until a snapshot shows it visible.
//
// Timing of the gate.
const (
	// visibilityPoll is the first wait before a snapshot is taken again
	// when the oldest waiting transaction was not visible yet; each miss
	// doubles it, up to visibilityPollMax.
	visibilityPoll    = 200 * time.Microsecond
	visibilityPollMax = 5 * time.Millisecond
	// visibilitySlow is how long a transaction waits before the wait is
	// logged at WARN rather than DEBUG (a synchronous standby that does
	// not answer holds the commit, and so its events, back).
	visibilitySlow = time.Second
)

// snapshot is what pg_current_snapshot() returned: every transaction
// below xmin is finished, none from xmax on is, and xip lists those in
// between still in progress. The ids are 64-bit (xid8).
type snapshot struct {
	xmin, xmax uint64
	xip        []uint64
}

// parseSnapshot reads pg_snapshot's text form, xmin:xmax:xip1,xip2,...
func parseSnapshot(s string) (snapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return snapshot{}, fmt.Errorf("cdc: snapshot %q is not xmin:xmax:xip", s)
	}
	var snap snapshot
	var err error
	if snap.xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return snapshot{}, fmt.Errorf("cdc: snapshot %q: %w", s, err)
	}
	if snap.xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return snapshot{}, fmt.Errorf("cdc: snapshot %q: %w", s, err)
	}
	if parts[2] == "" {
		return snap, nil
	}
	for _, x := range strings.Split(parts[2], ",") {
		id, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return snapshot{}, fmt.Errorf("cdc: snapshot %q: %w", s, err)
		}
		snap.xip = append(snap.xip, id)
	}
	return snap, nil
}

// visible reports whether the committed transaction with 32-bit id xid is
// visible to the snapshot. The id is widened in the snapshot's epoch: it
// is the 64-bit id within 2^31 of xmax with these low 32 bits, as
// PostgreSQL compares ids modulo 2^32.
func (s snapshot) visible(xid uint32) bool {
	if s.xmax == 0 {
		return false // no snapshot yet
	}
	diff := int32(xid - uint32(s.xmax))
	if diff >= 0 {
		return false // xmax or later: not finished when the snapshot was taken
	}
	full := s.xmax - uint64(-int64(diff))
	if full < s.xmin {
		return true
	}
	for _, x := range s.xip {
		if x == full {
			return false
		}
	}
	return true
}

// pendingTx is a committed transaction held until it is visible.
type pendingTx struct {
	xid        uint32
	check      bool // false when it has no events: nothing to see, only to confirm in order
	changes    []change
	commitLSN  pglogrepl.LSN
	endLSN     pglogrepl.LSN
	commitTime time.Time
	heldAt     time.Time // when its commit was decoded
	missedAt   time.Time // when a snapshot first showed it not yet visible
}

// gate holds the committed transactions, in commit order, and releases
// the oldest ones once a snapshot taken over a normal connection shows
// them visible. Visibility only grows, so the last snapshot answers for
// every transaction below its xmax without a query: while catching up,
// one query releases a whole backlog.
type gate struct {
	current func(context.Context) (string, error) // pg_current_snapshot() as text
	snap    snapshot
	pending []*pendingTx
	events  int       // the events the pending transactions hold
	next    time.Time // no snapshot before this, after a miss
	delay   time.Duration
}

// empty reports whether no transaction is held.
func (g *gate) empty() bool { return len(g.pending) == 0 }

// push holds p behind the transactions already held.
func (g *gate) push(p *pendingTx) {
	g.pending = append(g.pending, p)
	g.events += len(p.changes)
}

// waitUntil is when the gate wants to look again; zero when it needs
// nothing (empty, or nothing has missed).
func (g *gate) waitUntil() time.Time {
	if g.empty() {
		return time.Time{}
	}
	return g.next
}

// currentSnapshot returns pg_current_snapshot() over db, a normal
// connection (not a replication one).
func currentSnapshot(db *pgx.Conn) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var text string
		err := db.QueryRow(ctx, "SELECT pg_current_snapshot()::text", pgx.QueryExecModeSimpleProtocol).Scan(&text)
		return text, err
	}
}

// refresh takes a new snapshot.
func (g *gate) refresh(ctx context.Context) error {
	text, err := g.current(ctx)
	if err != nil {
		return fmt.Errorf("cdc: read a snapshot to check that commits are visible: %w", err)
	}
	snap, err := parseSnapshot(text)
	if err != nil {
		return err
	}
	g.snap = snap
	return nil
}

// ready returns the held transactions that are visible now, oldest
// first, and removes them from the gate. It takes at most one snapshot,
// only when the oldest is not visible to the last one and no miss asks
// to wait. When the oldest is still not visible it sets the time of the
// next look (backing off from visibilityPoll to visibilityPollMax).
func (g *gate) ready(ctx context.Context, now time.Time) ([]*pendingTx, error) {
	var out []*pendingTx
	queried := false
	for len(g.pending) > 0 {
		p := g.pending[0]
		if p.check && !g.snap.visible(p.xid) {
			if !queried {
				if now.Before(g.next) {
					break
				}
				if err := g.refresh(ctx); err != nil {
					return out, err
				}
				queried = true
			}
			if !g.snap.visible(p.xid) { // decoded before the snapshot, and not visible to it
				g.miss(p, now)
				break
			}
		}
		g.pending[0] = nil
		g.pending = g.pending[1:]
		g.events -= len(p.changes)
		g.next, g.delay = time.Time{}, 0
		out = append(out, p)
	}
	if len(g.pending) == 0 {
		g.pending = g.pending[:0:0] // let the backing array go
	}
	return out, nil
}

// miss records that p was not visible yet, and when to look again.
func (g *gate) miss(p *pendingTx, now time.Time) {
	if p.missedAt.IsZero() {
		p.missedAt = now
	}
	g.delay = min(max(2*g.delay, visibilityPoll), visibilityPollMax)
	g.next = now.Add(g.delay)
}
