package sweep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
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
	// no MATCH, and the COUNT of each call (an estimate: Redis examines
	// about COUNT keys per call) when it did.
	Examined int64
	// ScanCalls is the number of SCAN calls made while the call's patterns
	// were active.
	ScanCalls int64
}

// Status is a snapshot of a Walker, for an ops endpoint.
type Status struct {
	// Running tells whether a walk is under way.
	Running bool `json:"running"`
	// Pass is the number of the current (or last) pass, from 1.
	Pass int64 `json:"pass"`
	// Progress is the fraction of the current pass covered, in [0, 1).
	Progress float64 `json:"progress"`
	// ActivePatterns is the number of patterns the walk serves.
	ActivePatterns int `json:"active_patterns"`
	// Patterns lists the first MaxStatusPatterns of them, in join order.
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
}

// request is one Sweep call.
type request struct {
	res      Result
	err      error
	left     int // entries not complete
	done     chan struct{}
	finished bool
	stamp    int64 // last round trip counted in res
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
	if w.err != nil {
		return Result{}, w.err
	}
	if err := ctx.Err(); err != nil || len(patterns) == 0 {
		return Result{}, err
	}
	req := &request{left: len(patterns), done: make(chan struct{}), stamp: -1}
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
	s.ActivePatterns = len(w.active)
	s.Patterns = []string{}
	for _, e := range w.active[:min(len(w.active), MaxStatusPatterns)] {
		s.Patterns = append(s.Patterns, e.pattern)
	}
	return s
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
	start   time.Time
}

// events are the observer calls of one round trip, made after the lock is
// released.
type events struct {
	examined, removed int
	waits             []time.Duration
	pass              *Pass
	active            int
	progress          float64
}

func (w *Walker) walk() {
	defer w.wg.Done()
	s := &walkState{count: w.cfg.ScanCount, pending: map[*request][]string{}, start: time.Now()}
	w.mu.Lock()
	w.status = Status{Pass: w.status.Pass + 1, ScanCount: s.count, StartedAt: s.start, PassStartedAt: s.start}
	s.pass.Number = w.status.Pass
	w.mu.Unlock()
	for {
		scan, ok := w.admit(s)
		if !ok {
			return
		}
		keys, next, removed, err := w.exchange(s, scan)
		var ev events
		w.mu.Lock()
		if err != nil {
			w.fail(s, err)
		} else {
			ev = w.settle(s, scan, keys, next, removed)
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
	for _, e := range w.joins {
		if !e.req.finished {
			e.tr = newTracker(s.cursor, w.cfg.CursorSlotBits)
			w.active = append(w.active, e)
			s.pass.Patterns++
		}
	}
	w.joins = w.joins[:0]
	if len(w.active) == 0 {
		w.running = false
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
		for c := range slices.Chunk(ks, w.cfg.UnlinkChunk) {
			unlinks = append(unlinks, unlink{req, pipe.Unlink(w.ctx, c...)})
		}
	}
	var sc *redis.ScanCmd
	if scan {
		if s.calls++; s.calls > w.cfg.MaxCallsPerPass {
			return nil, 0, nil, fmt.Errorf("%w (%d)", ErrPassTooLong, w.cfg.MaxCallsPerPass)
		}
		sc = pipe.Scan(w.ctx, s.cursor, s.set.match, int64(s.count))
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
	return keys, next, removed, nil
}

// adapt sets the COUNT of the next SCAN from the round trip just made,
// which took d at COUNT s.count. It keeps a smoothed cost per key of COUNT
// (an exponentially weighted mean of d/COUNT, weight 1/4) and aims each
// call at a target time: three quarters of MaxCallTime, half of it with a
// Budget (a budget says the application needs the headroom: shorter calls
// keep its commands from waiting behind one). COUNT moves towards
// target/cost, by at most a quarter up or a half down per round trip, so
// one slow round trip on a noisy machine does not halve the rest of a
// pass. A round trip over MaxCallTime halves COUNT at once and raises the
// cost to its own. The round trip bounds the server's time from above (it
// adds the network, the client's decoding of the page and its
// scheduling), so the server's time stays under MaxCallTime.
//
// Before, COUNT was halved above the target and grown only below a quarter
// of MaxCallTime: at 10M keys, where SCAN COUNT 1000 takes about 1.5 ms,
// one slow call took COUNT to 500 for the rest of the pass, and a pass made
// 2.4–3 times the calls of one at COUNT 1000.
func (w *Walker) adapt(s *walkState, d time.Duration) {
	target := w.cfg.MaxCallTime * 3 / 4
	if w.limiter != nil {
		target = w.cfg.MaxCallTime / 2
	}
	cost := float64(d) / float64(s.count)
	if d > w.cfg.MaxCallTime {
		s.cost = max(s.cost, cost)
		s.count = max(w.cfg.MinScanCount, s.count/2)
		return
	}
	if s.cost == 0 {
		s.cost = cost
	} else {
		s.cost += (cost - s.cost) / 4
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
	s.pass.Removed += int64(ev.removed)
	clear(s.pending)
	now := time.Now()
	for _, e := range w.active {
		if e.flushing {
			ev.waits = append(ev.waits, w.complete(e, now))
		}
	}
	if scan {
		ev.examined = w.page(s, keys, next)
		ev.waits = append(ev.waits, w.advance(s, next, now)...)
	}
	w.active = slices.DeleteFunc(w.active, func(e *entry) bool { return e.req.finished || e.done })
	ev.active = len(w.active)
	ev.progress = float64(position(s.cursor, w.cfg.CursorSlotBits)) / math.Exp2(64)
	w.status.Progress, w.status.ScanCount, w.status.Examined = ev.progress, s.count, s.pass.Examined
	if scan && next == 0 {
		ev.pass = w.endPass(s, now)
	}
	return ev
}

// page matches a SCAN page, queues the matched keys for UNLINK under their
// owners, counts the call for every request with a scanning pattern, and
// returns the keys examined.
func (w *Walker) page(s *walkState, keys []string, next uint64) int {
	examined := len(keys)
	if s.set.match != "" {
		examined = s.count
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
			if w.cfg.DryRun != nil {
				w.cfg.DryRun(k)
				s.owner[p].res.Removed++
				continue
			}
			s.pending[s.owner[p]] = append(s.pending[s.owner[p]], k)
		}
	}
	return examined
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

// endPass logs a finished pass and starts the next.
func (w *Walker) endPass(s *walkState, now time.Time) *Pass {
	p := s.pass
	p.Duration = now.Sub(w.status.PassStartedAt)
	w.cfg.Logger.LogAttrs(context.Background(), slog.LevelInfo, "🔍 sweep pass finished",
		slog.Int64("pass", p.Number), slog.Int("patterns", p.Patterns),
		slog.Int64("examined", p.Examined), slog.Int64("removed", p.Removed),
		slog.Int64("scan_calls", p.ScanCalls), slog.Duration("duration", p.Duration))
	s.pass = Pass{Number: p.Number + 1, Patterns: len(w.active)}
	s.calls = 0
	w.status.Pass, w.status.PassStartedAt, w.status.Examined = s.pass.Number, now, 0
	return &p
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
	s.cursor, s.calls, s.dirty = 0, 0, true
	s.pass = Pass{Number: s.pass.Number + 1}
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
	o.ActivePatterns(ev.active)
	o.Progress(ev.progress)
}
