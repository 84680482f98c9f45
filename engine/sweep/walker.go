package sweep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

var (
	// ErrClosed is returned by Sweep once the Walker is closed, and by the
	// Sweep calls that were waiting when it closed.
	ErrClosed = errors.New("sweep walker closed")
	// ErrPassTooLong fails the patterns of a pass that made more than
	// Config.MaxCallsPerPass SCAN calls.
	ErrPassTooLong = errors.New("sweep pass made too many SCAN calls")
)

// MaxStatusPatterns bounds the patterns listed by Status.
const MaxStatusPatterns = 100

// Result counts what a walk did for one Sweep call.
type Result struct {
	// Removed is the number of keys UNLINK removed for the call. A key
	// that matches patterns of several callers is removed once and counted
	// for one of them: the earliest-joined caller holding the pattern that
	// matched it, patterns with a shorter literal prefix tried first; a
	// pattern covered by a wider active one ("a:1:*" by "a:*") gives its
	// keys to the caller of the wider one.
	Removed int64
	// Examined is the number of keys SCAN examined while the call's
	// patterns were active: the keys each page returned when the walk sent
	// no MATCH; when it did (Redis then returns only the matches), an
	// estimate: the share of the keyspace the page's cursor covered times
	// DBSIZE, read with the pass's first SCAN. A pass over a 2-key database
	// examines 2 keys, not the COUNT asked for.
	Examined int64
	// ScanCalls is the number of SCAN calls made while the call's patterns
	// were active.
	ScanCalls int64
	// Keys holds, for a SweepSample call, a uniform sample of at most n of
	// the keys matched (and unlinked) for the call under each pattern of
	// the match set that matched them: the call's own pattern, or a wider
	// one of the call's that covers it. Nil for Sweep.
	Keys map[string][]string
}

// Status is a snapshot of a Walker, for an ops endpoint.
type Status struct {
	// Running tells whether a walk is under way.
	Running bool `json:"running"`
	// Pass is the number of the current pass while a walk runs, and of the
	// last finished pass when idle (0 before the first): a pass that fails
	// (a Redis error) or is abandoned (every caller gone) is not finished,
	// and the next pass takes its number. So when idle, Pass equals the
	// passes the Observer was told of (invalidator_sweep_passes_total).
	Pass int64 `json:"pass"`
	// Progress is the fraction of the current pass covered, in [0, 1).
	Progress float64 `json:"progress"`
	// ActivePatterns is the number of distinct patterns the walk serves
	// (a pattern of several events is matched once, and counted once).
	ActivePatterns int `json:"active_patterns"`
	// Patterns lists the first MaxStatusPatterns of them, in join order,
	// each once.
	Patterns []string `json:"patterns"`
	// Examined is the number of keys examined in the current pass.
	Examined int64 `json:"examined"`
	// ScanCount is the COUNT the walk sends now.
	ScanCount int `json:"scan_count"`
	// StartedAt is when the current walk started; zero when idle.
	StartedAt time.Time `json:"started_at,omitzero"`
	// PassStartedAt is when the current pass started; zero when idle.
	PassStartedAt time.Time `json:"pass_started_at,omitzero"`
}

// Walker runs one shared SCAN walk over one Redis node and serves every
// pattern handed to Sweep with it: each page is matched on the client
// against all active patterns, and the matched keys are unlinked in the
// same round trip as the SCAN of the next page. The walk starts when a
// pattern arrives and stops when none is left. See tracker.go for why a
// pattern that joins a running walk misses no key.
type Walker struct {
	rdb     *redis.Client
	cfg     Config
	err     error
	limiter *rate.Limiter

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	joins   []*entry
	active  []*entry // scanning or flushing, in join order
	running bool
	closed  bool
	status  Status
	// finished counts the finished passes; the current pass is finished+1.
	finished int64
}

// request is one Sweep call.
type request struct {
	res      Result
	err      error
	left     int // entries not complete
	done     chan struct{}
	finished bool
	stamp    int64 // last round trip counted in res
	// sample is SweepSample's n (0 for Sweep); seen counts the keys
	// matched per pattern, for the reservoir in res.Keys.
	sample int
	seen   map[string]int
}

// keep offers key, matched under pattern, to the request's sample of that
// pattern: reservoir sampling, so the sample is uniform over the keys
// matched, whatever their number.
func (r *request) keep(pattern, key string) {
	if r.res.Keys == nil {
		r.res.Keys, r.seen = map[string][]string{}, map[string]int{}
	}
	r.seen[pattern]++
	if kept := r.res.Keys[pattern]; len(kept) < r.sample {
		r.res.Keys[pattern] = append(kept, key)
	} else if j := rand.IntN(r.seen[pattern]); j < r.sample {
		kept[j] = key
	}
}

// entry is one pattern of a request.
type entry struct {
	pattern  string
	req      *request
	tr       tracker
	joined   time.Time
	flushing bool // saw its last page; complete once pending is unlinked
	done     bool
}

// New returns a Walker on one node: a plain or a Sentinel failover client.
// It starts nothing; an invalid cfg makes every Sweep fail with the error
// of cfg.Validate.
func New(rdb *redis.Client, cfg Config) *Walker {
	w := &Walker{rdb: rdb, err: cfg.Validate(), cfg: cfg.WithDefaults()}
	if w.cfg.Budget > 0 {
		// Short slices: the application's commands wait less behind each call.
		w.cfg.MaxScanCount = min(w.cfg.MaxScanCount, max(w.cfg.MinScanCount, w.cfg.Budget/BudgetSlices))
		w.cfg.ScanCount = min(w.cfg.ScanCount, w.cfg.MaxScanCount)
		w.limiter = rate.NewLimiter(rate.Limit(w.cfg.Budget), w.cfg.MaxScanCount)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w
}

// Sweep joins patterns to the running walk, starting one if idle, and
// returns when every key that matches one of them and exists from the call
// to its return has been removed. It returns early with ctx's error (only
// this call's patterns leave the walk), with a Redis error wrapped with %w
// (every pattern active in the walk at that moment fails; the walk starts
// afresh for later calls), or with ErrClosed. Safe for concurrent use.
func (w *Walker) Sweep(ctx context.Context, patterns []string) (Result, error) {
	return w.sweep(ctx, patterns, 0)
}

// SweepSample is Sweep that also reports in Result.Keys a uniform sample of
// at most n of the keys it matched under each pattern, for a consistency
// checker that reads them again later (no SCAN of its own). A key that a
// pattern of an earlier caller matched too is counted for that caller (see
// Result.Removed), and so is not in this call's sample.
func (w *Walker) SweepSample(ctx context.Context, patterns []string, n int) (Result, error) {
	return w.sweep(ctx, patterns, max(n, 0))
}

func (w *Walker) sweep(ctx context.Context, patterns []string, sample int) (Result, error) {
	if w.err != nil {
		return Result{}, w.err
	}
	if err := ctx.Err(); err != nil || len(patterns) == 0 {
		return Result{}, err
	}
	req := &request{left: len(patterns), done: make(chan struct{}), stamp: -1, sample: sample}
	now := time.Now()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return Result{}, ErrClosed
	}
	for _, p := range patterns {
		w.joins = append(w.joins, &entry{pattern: p, req: req, joined: now})
	}
	if !w.running {
		w.running = true
		w.wg.Add(1)
		go w.walk()
	}
	w.mu.Unlock()
	select {
	case <-req.done:
	case <-ctx.Done():
		w.mu.Lock()
		w.finish(req, ctx.Err())
		w.mu.Unlock()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return req.res, req.err
}

// Close stops the walk and waits for its goroutine; waiting Sweep calls
// return ErrClosed. Close is idempotent.
func (w *Walker) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
	return nil
}

// Status returns a snapshot of the walk.
func (w *Walker) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.status
	s.Running = w.running
	s.Patterns = []string{}
	seen := map[string]bool{}
	for _, e := range w.active {
		if !seen[e.pattern] {
			seen[e.pattern] = true
			if len(s.Patterns) < MaxStatusPatterns {
				s.Patterns = append(s.Patterns, e.pattern)
			}
		}
	}
	s.ActivePatterns = len(seen)
	return s
}

// distinct counts the distinct patterns of entries.
func distinct(entries []*entry) int {
	seen := make(map[string]struct{}, len(entries))
	for _, e := range entries {
		seen[e.pattern] = struct{}{}
	}
	return len(seen)
}

// finish ends req with err (nil when complete), unless it has ended.
// Callers hold w.mu.
func (w *Walker) finish(req *request, err error) {
	if req.finished {
		return
	}
	req.finished, req.err = true, err
	close(req.done)
}

// walkState is the state of one walk, owned by its goroutine.
type walkState struct {
	cursor  uint64
	count   int
	cost    float64 // smoothed round trip per key of COUNT, in ns
	round   int64
	calls   int // SCAN calls this pass
	set     matchSet
	owner   map[string]*request
	dirty   bool
	pending map[*request][]string
	pass    Pass
	// ending is the pass whose last page was matched, while the keys of
	// that page wait for the next round trip's UNLINK: it is finished (and
	// logged) with them.
	ending *Pass
	start  time.Time
	// size is DBSIZE, read with the first SCAN of the pass; seen is the
	// share of the keyspace the pass's pages have covered, times size.
	size, seen float64
	// distinct counts the distinct patterns of w.active when it held
	// distinctOf entries; joined says entries joined since.
	distinct, distinctOf int
	joined               bool
}

// activePatterns counts the distinct patterns of w.active, recounting only
// when entries joined or left. Callers hold w.mu.
func (w *Walker) activePatterns(s *walkState) int {
	if s.joined || s.distinctOf != len(w.active) {
		s.distinct, s.distinctOf, s.joined = distinct(w.active), len(w.active), false
	}
	return s.distinct
}

// events are the observer calls of one round trip, made after the lock is
// released.
type events struct {
	examined, removed int
	waits             []time.Duration
	pass              *Pass
	active            int
	progress          float64
	page              *pageLog
	pageOf            int64 // the pass of the page scanned
	matched           int   // keys of the page that matched
}

// pageLog is what the debug line of a SCAN page says.
type pageLog struct {
	pass            int64
	cursor, next    uint64
	count, returned int
	matched         int
	rtt             time.Duration
}

func (w *Walker) walk() {
	defer w.wg.Done()
	s := &walkState{count: w.cfg.ScanCount, pending: map[*request][]string{}, start: time.Now()}
	w.mu.Lock()
	w.status = Status{Pass: w.finished + 1, ScanCount: s.count, StartedAt: s.start, PassStartedAt: s.start}
	s.pass.Number = w.status.Pass
	w.mu.Unlock()
	debug := w.cfg.Logger.Enabled(context.Background(), slog.LevelDebug)
	for {
		scan, ok := w.admit(s)
		if !ok {
			return
		}
		cursor := s.cursor
		start := time.Now()
		keys, next, removed, err := w.exchange(s, scan)
		rtt := time.Since(start)
		var ev events
		w.mu.Lock()
		if err != nil {
			w.fail(s, err)
		} else {
			count := s.count // before settle adapts it
			ev = w.settle(s, scan, keys, next, removed)
			if debug && scan {
				ev.page = &pageLog{pass: ev.pageOf, cursor: cursor, next: next, count: count, returned: len(keys), matched: ev.matched, rtt: rtt}
			}
		}
		w.mu.Unlock()
		w.emit(ev)
	}
}

// admit prunes ended requests, adds the patterns that joined (at the next
// cursor to be sent) and recompiles the match set when it changed. It
// reports whether the next round trip scans, and false in ok when the walk
// has nothing left to do (the walk is then marked stopped).
func (w *Walker) admit(s *walkState) (scan, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx.Err() != nil {
		w.failAll(s, ErrClosed)
	}
	n := len(w.active)
	w.active = slices.DeleteFunc(w.active, func(e *entry) bool { return e.req.finished })
	s.dirty = s.dirty || n != len(w.active) || len(w.joins) > 0
	var serving map[string]bool
	if len(w.joins) > 0 {
		serving = make(map[string]bool, len(w.active))
		for _, e := range w.active {
			serving[e.pattern] = true
		}
	}
	for _, e := range w.joins {
		if !e.req.finished {
			e.tr = newTracker(s.cursor, w.cfg.CursorSlotBits)
			w.active = append(w.active, e)
			s.joined = true
			if !serving[e.pattern] {
				serving[e.pattern] = true
				s.pass.Patterns++
			}
		}
	}
	w.joins = w.joins[:0]
	if len(w.active) == 0 {
		w.running = false
		w.status.Pass = w.finished
		w.status.Progress, w.status.StartedAt, w.status.PassStartedAt = 0, time.Time{}, time.Time{}
		return false, false
	}
	if s.dirty {
		w.compile(s)
	}
	return s.set.serve > 0, true
}

// compile rebuilds the match set from the scanning entries; the owner of a
// compiled pattern is the earliest-joined request holding it.
func (w *Walker) compile(s *walkState) {
	var patterns []string
	s.owner = map[string]*request{}
	for _, e := range w.active {
		if !e.flushing {
			patterns = append(patterns, e.pattern)
			if s.owner[e.pattern] == nil {
				s.owner[e.pattern] = e.req
			}
		}
	}
	s.set, s.dirty = compile(patterns), false
}

// exchange makes one round trip: UNLINK of the pending keys (one command
// per request and chunk, to count each request's keys) and, when scan is
// set, SCAN of the next page. It adapts COUNT to the round trip's time.
func (w *Walker) exchange(s *walkState, scan bool) (keys []string, next uint64, removed map[*request]int64, err error) {
	if scan && w.limiter != nil {
		if err := w.limiter.WaitN(w.ctx, s.count); err != nil {
			return nil, 0, nil, err
		}
	}
	pipe := w.rdb.Pipeline()
	type unlink struct {
		req *request
		cmd *redis.IntCmd
	}
	var unlinks []unlink
	for req, ks := range s.pending {
		if w.cfg.DryRun != nil {
			break // page reported and counted them
		}
		for _, group := range w.groups(ks) {
			for c := range slices.Chunk(group, w.cfg.UnlinkChunk) {
				unlinks = append(unlinks, unlink{req, pipe.Unlink(w.ctx, c...)})
			}
		}
	}
	var sc *redis.ScanCmd
	if scan {
		if s.calls++; s.calls > w.cfg.MaxCallsPerPass {
			return nil, 0, nil, fmt.Errorf("%w (%d)", ErrPassTooLong, w.cfg.MaxCallsPerPass)
		}
		sc = pipe.Scan(w.ctx, s.cursor, s.set.match, int64(s.count))
	}
	var size *redis.IntCmd
	if scan && s.cursor == 0 {
		size = pipe.DBSize(w.ctx)
	}
	if pipe.Len() == 0 {
		return nil, 0, nil, nil
	}
	start := time.Now()
	if _, err := pipe.Exec(w.ctx); err != nil {
		return nil, 0, nil, err
	}
	if scan {
		w.adapt(s, time.Since(start))
	}
	removed = map[*request]int64{}
	for _, u := range unlinks {
		removed[u.req] += u.cmd.Val()
	}
	if sc != nil {
		keys, next = sc.Val()
	}
	if size != nil {
		s.size, s.seen = float64(size.Val()), 0
	}
	return keys, next, removed, nil
}

// groups splits keys by Config.SlotOf, in order of first appearance; one
// group without it.
func (w *Walker) groups(keys []string) [][]string {
	if w.cfg.SlotOf == nil || len(keys) < 2 {
		return [][]string{keys}
	}
	index := map[int]int{}
	var out [][]string
	for _, k := range keys {
		slot := w.cfg.SlotOf(k)
		i, ok := index[slot]
		if !ok {
			i = len(out)
			index[slot] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], k)
	}
	return out
}

// adapt sets the COUNT of the next SCAN from the round trip just made,
// which took d at COUNT s.count. It keeps an upper envelope of the cost per
// key of COUNT: a round trip dearer than the envelope raises it at once,
// cheaper ones lower it by an eighth of the gap, so the envelope follows
// the slow calls of a loaded server (its p99), not the typical ones. Each
// call aims at a third of MaxCallTime (a quarter with a Budget: shorter
// calls keep the application's commands from waiting behind one), leaving
// the rest as the margin for a call dearer than any seen lately: at 10M
// keys on an idle 2-core machine, aiming at half left 7 calls over 2 ms in
// 24k (2.4-3.6 ms at the usual COUNT), a third 1 in 57k, for 1.5 times the
// calls and a pass about as long. COUNT
// moves towards target/envelope, by at most a quarter up or a half down
// per round trip; a walk starts at ScanCount (100 by default) and grows
// from there, so the first calls on a large keyspace are short too. A
// round trip over MaxCallTime halves COUNT at once. The round trip bounds
// the server's time from above (it adds the network, the client's decoding
// of the page and its scheduling), so the server's time stays under
// MaxCallTime.
//
// Before, a walk started at COUNT 1000 and aimed at three quarters of
// MaxCallTime from a mean cost: at 10M keys, where SCAN COUNT 1000 takes
// 1.5–3 ms, the first calls of each walk and the slow ones after it took
// over 2 ms on the server.
func (w *Walker) adapt(s *walkState, d time.Duration) {
	target := w.cfg.MaxCallTime / 3
	if w.limiter != nil {
		target = w.cfg.MaxCallTime / 4
	}
	cost := float64(d) / float64(s.count)
	if cost > s.cost {
		s.cost = cost
	} else {
		s.cost += (cost - s.cost) / 8
	}
	if d > w.cfg.MaxCallTime {
		s.count = max(w.cfg.MinScanCount, s.count/2)
		return
	}
	want := int(float64(target) / s.cost)
	want = min(max(want, s.count/2), s.count+s.count/4+1)
	s.count = min(max(want, w.cfg.MinScanCount), w.cfg.MaxScanCount)
}

// settle records a successful round trip: credits the unlinked keys,
// completes the patterns that waited for them, matches the new page and
// advances every scanning pattern. Callers hold w.mu.
func (w *Walker) settle(s *walkState, scan bool, keys []string, next uint64, removed map[*request]int64) events {
	var ev events
	s.round++
	for req, n := range removed {
		req.res.Removed += n
		ev.removed += int(n)
	}
	now := time.Now()
	// The keys unlinked now were matched on the last page: of the pass
	// that page belonged to.
	if s.ending != nil {
		s.ending.Removed += int64(ev.removed)
		ev.pass = w.endPass(s, now)
	} else {
		s.pass.Removed += int64(ev.removed)
	}
	clear(s.pending)
	for _, e := range w.active {
		if e.flushing {
			ev.waits = append(ev.waits, w.complete(e, now))
		}
	}
	if scan {
		ev.pageOf = s.pass.Number
		ev.examined, ev.matched = w.page(s, keys, next)
		ev.waits = append(ev.waits, w.advance(s, next, now)...)
	}
	w.active = slices.DeleteFunc(w.active, func(e *entry) bool { return e.req.finished || e.done })
	ev.active = w.activePatterns(s)
	ev.progress = float64(position(s.cursor, w.cfg.CursorSlotBits)) / math.Exp2(64)
	w.status.Progress, w.status.ScanCount, w.status.Examined = ev.progress, s.count, s.pass.Examined
	if scan && next == 0 {
		w.closePass(s, now)
		if len(s.pending) == 0 {
			ev.pass = w.endPass(s, now)
		}
	}
	return ev
}

// page matches a SCAN page, queues the matched keys for UNLINK under their
// owners, counts the call for every request with a scanning pattern, and
// returns the keys examined and matched.
func (w *Walker) page(s *walkState, keys []string, next uint64) (examined, matched int) {
	examined = len(keys)
	if est := w.estimate(s, next); s.set.match != "" {
		examined = est
	}
	s.pass.Examined += int64(examined)
	s.pass.ScanCalls++
	for _, e := range w.active {
		if !e.flushing && !e.done && e.req.stamp != s.round {
			e.req.stamp = s.round
			e.req.res.Examined += int64(examined)
			e.req.res.ScanCalls++
		}
	}
	for _, k := range keys {
		if p, ok := s.set.find(k); ok {
			matched++
			if owner := s.owner[p]; owner.sample > 0 && !owner.finished {
				owner.keep(p, k)
			}
			if w.cfg.DryRun != nil {
				w.cfg.DryRun(k)
				s.owner[p].res.Removed++
				continue
			}
			s.pending[s.owner[p]] = append(s.pending[s.owner[p]], k)
		}
	}
	return examined, matched
}

// estimate returns the keys a page with a server-side MATCH examined: the
// share of the keyspace between the page's cursor and next (SCAN's order),
// times the DBSIZE read at the start of the pass, rounded so that the
// pages of a pass add up to that DBSIZE.
func (w *Walker) estimate(s *walkState, next uint64) int {
	share := 1.0 // next == 0: the pass is complete
	if next != 0 {
		share = float64(position(next, w.cfg.CursorSlotBits)) / math.Exp2(64)
	}
	total := max(s.seen, share*s.size) // a table resize can step back
	n := int(math.Round(total) - math.Round(s.seen))
	s.seen = total
	return n
}

// advance moves every scanning pattern past a page with next cursor next.
// A pattern that has seen its last page completes at once when nothing is
// pending, else after the next round trip unlinks the pending keys.
func (w *Walker) advance(s *walkState, next uint64, now time.Time) []time.Duration {
	var waits []time.Duration
	for _, e := range w.active {
		if e.flushing || e.done || !e.tr.advance(next) {
			continue
		}
		s.dirty = true
		if len(s.pending) == 0 {
			waits = append(waits, w.complete(e, now))
		} else {
			e.flushing = true
		}
	}
	s.cursor = next
	return waits
}

// complete ends one entry, and its request when it was the last.
func (w *Walker) complete(e *entry, now time.Time) time.Duration {
	e.done, e.flushing = true, false
	if e.req.left--; e.req.left == 0 {
		w.finish(e.req, nil)
	}
	return now.Sub(e.joined)
}

// closePass is called when the cursor returns to 0: the pass has seen its
// last page, and waits in s.ending for that page's keys to be unlinked;
// the next pass starts. Callers hold w.mu.
func (w *Walker) closePass(s *walkState, now time.Time) {
	p := s.pass
	p.Duration = now.Sub(w.status.PassStartedAt)
	s.ending = &p
	s.pass = Pass{Number: p.Number + 1, Patterns: w.activePatterns(s)}
	s.calls = 0
	w.status.Pass, w.status.PassStartedAt, w.status.Examined = s.pass.Number, now, 0
}

// endPass finishes the pass in s.ending, its keys unlinked: counts and logs
// it. Callers hold w.mu.
func (w *Walker) endPass(s *walkState, _ time.Time) *Pass {
	p := s.ending
	s.ending = nil
	w.finished = p.Number
	w.cfg.Logger.LogAttrs(context.Background(), slog.LevelInfo, "🔍 sweep pass finished",
		slog.Int64("pass", p.Number), slog.Int("patterns", p.Patterns),
		slog.Int64("examined", p.Examined), slog.Int64("removed", p.Removed),
		slog.Int64("scan_calls", p.ScanCalls), slog.Duration("duration", p.Duration))
	return p
}

// fail ends every request active in the walk with err and resets the walk
// to cursor 0, so that later patterns start afresh. Callers hold w.mu.
func (w *Walker) fail(s *walkState, err error) {
	if w.ctx.Err() != nil {
		err = ErrClosed
	} else {
		w.cfg.Logger.LogAttrs(context.Background(), slog.LevelWarn, "🔍 sweep failed",
			slog.Int("patterns", len(w.active)), slog.Any("error", err))
	}
	for _, e := range w.active {
		w.finish(e.req, fmt.Errorf("sweep: %w", err))
	}
	w.active = w.active[:0]
	clear(s.pending)
	s.cursor, s.calls, s.dirty, s.ending = 0, 0, true, nil
	s.pass = Pass{Number: w.finished + 1}
	now := time.Now()
	w.status.Pass, w.status.PassStartedAt, w.status.Progress, w.status.Examined = s.pass.Number, now, 0, 0
}

// failAll is fail for a closed Walker: the joins fail too.
func (w *Walker) failAll(s *walkState, err error) {
	for _, e := range w.joins {
		w.finish(e.req, err)
	}
	w.joins = w.joins[:0]
	w.fail(s, err)
}

// emit passes the events of a round trip to the observer.
func (w *Walker) emit(ev events) {
	o := w.cfg.Observer
	if ev.removed > 0 {
		o.KeysRemoved(ev.removed)
	}
	if ev.examined > 0 {
		o.KeysExamined(ev.examined)
	}
	for _, d := range ev.waits {
		o.PatternWait(d)
	}
	if ev.pass != nil {
		o.PassFinished(*ev.pass)
	}
	if p := ev.page; p != nil {
		w.cfg.Logger.LogAttrs(context.Background(), slog.LevelDebug, "🔍 sweep page",
			slog.Int64("pass", p.pass), slog.Uint64("cursor", p.cursor), slog.Uint64("next", p.next),
			slog.Int("count", p.count), slog.Int("returned", p.returned), slog.Int("matched", p.matched),
			slog.Int("examined", ev.examined), slog.Duration("round_trip", p.rtt))
	}
	o.ActivePatterns(ev.active)
	o.Progress(ev.progress)
}
