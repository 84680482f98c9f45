package consistency

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// MaxRecent is how many stale findings Report lists.
const MaxRecent = 20

// ErrAlreadyRunning is returned by a second call of Run.
var ErrAlreadyRunning = errors.New("consistency: Run called twice")

// Observer is told of every result. Its methods are called from the
// checker's goroutine and must not block.
type Observer interface {
	// Checked counts one read at a timescale (Timescale of a delay).
	Checked(timescale string, kind Kind, r Result)
	// StaleAge observes the age of a stale read: from the event's apply
	// to the read.
	StaleAge(age time.Duration)
	// Dropped counts a sampled event dropped because the queue was full.
	Dropped()
}

type nopObserver struct{}

func (nopObserver) Checked(string, Kind, Result) {}
func (nopObserver) StaleAge(time.Duration)       {}
func (nopObserver) Dropped()                     {}

// Sample is one applied event whose invalidation was captured.
type Sample struct {
	// EventID names the event in findings and logs.
	EventID string
	// Subject is the event's subject.
	Subject string
	// Applied is when the event was applied and acked: the delays count
	// from it.
	Applied time.Time
	// Exact are the exact keys the event removed.
	Exact []string
	// Capture is the engine's report of the invalidation (engine.Result's).
	// A sample without one is ignored.
	Capture *engine.Capture
}

// Finding is one stale key of one sampled event.
type Finding struct {
	// EventID and Subject name the event.
	EventID string `json:"event_id"`
	Subject string `json:"subject"`
	// Key is the cache key found stale.
	Key  string `json:"key"`
	Kind Kind   `json:"kind"`
	// Stamp is the stamp head of the value read ("@gen <token> ...").
	Stamp string `json:"stamp"`
	// Generation is the generation key whose displaced token the stamp
	// holds; Displaced is that token, and Set the token the invalidation
	// set there ("" when it removed the generation: an exact key's own).
	Generation string `json:"generation"`
	Displaced  string `json:"displaced"`
	Set        string `json:"set"`
	// Current are the generations the read found, in the stamp's order.
	Current []string `json:"current"`
	// Applied is when the event was applied; Timescales are those at
	// which the key was still stale, so far.
	Applied    time.Time `json:"applied"`
	Timescales []string  `json:"timescales"`
}

// target is one key of a sample.
type target struct {
	key     string
	kind    Kind
	finding *Finding // set once found stale
}

// pending is a sample waiting for its next check.
type pending struct {
	s       Sample
	targets []target
	touched touched
	next    int // index of the next delay
	due     time.Time
}

// queue is a min-heap of pending samples by due time.
type queue []*pending

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q queue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)        { *q = append(*q, x.(*pending)) }
func (q *queue) Pop() any {
	old := *q
	p := old[len(old)-1]
	*q = old[:len(old)-1]
	return p
}

// Checker re-reads the keys of sampled events and classifies them. Create
// it with New, run it with Run; Submit and Sampled are safe for
// concurrent use.
type Checker struct {
	cfg     Config
	proto   *guard.Protocol
	limiter *rate.Limiter
	labels  []string // Timescale of each delay
	in      chan Sample
	held    atomic.Int64 // samples in hand: queued or pending
	dropped atomic.Int64
	running atomic.Bool
	stats   *stats

	mu     sync.Mutex
	recent []*Finding // newest first, at most MaxRecent
	warned time.Time  // last ⚠️ line of a failed read
}

// New returns a checker reading rdb (a server, a Sentinel master or a
// cluster: guard.New's clients; the primary, never a replica), or an error
// wrapping ErrInvalidConfig or guard.ErrUnsupportedClient.
func New(rdb redis.UniversalClient, cfg Config) (*Checker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	proto, err := guard.New(rdb)
	if err != nil {
		return nil, err
	}
	c := &Checker{cfg: cfg, proto: proto, in: make(chan Sample, cfg.Queue), stats: newStats(len(cfg.Delays)),
		limiter: rate.NewLimiter(rate.Limit(cfg.Rate), max(cfg.Batch, 1))}
	for _, d := range cfg.Delays {
		c.labels = append(c.labels, Timescale(d))
	}
	return c, nil
}

// Config returns the checker's configuration, defaults filled in.
func (c *Checker) Config() Config { return c.cfg }

// Sampled draws whether the next applied event is checked: true with
// probability Config.Sample.
func (c *Checker) Sampled() bool { return rand.Float64() < c.cfg.Sample }

// Submit hands an applied, acked event to the checker without blocking:
// false when Config.Queue samples are in hand already (the sample is
// dropped and counted) or s has no capture.
func (c *Checker) Submit(s Sample) bool {
	if s.Capture == nil {
		return false
	}
	if c.held.Add(1) > int64(c.cfg.Queue) {
		c.held.Add(-1)
		c.drop()
		return false
	}
	select {
	case c.in <- s:
		return true
	default:
		c.held.Add(-1)
		c.drop()
		return false
	}
}

func (c *Checker) drop() {
	c.dropped.Add(1)
	c.cfg.Observer.Dropped()
}

// Run checks the samples submitted until ctx ends, and returns nil then
// (the checks not yet made are dropped: a sample is a sample). It returns
// ErrAlreadyRunning when called twice.
func (c *Checker) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	var q queue
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := time.Hour
		if len(q) > 0 {
			wait = max(time.Until(q[0].due), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case s := <-c.in:
			heap.Push(&q, c.schedule(s))
		case <-timer.C:
			c.checkDue(ctx, &q)
		}
	}
}

// schedule turns a submitted sample into its pending checks.
func (c *Checker) schedule(s Sample) *pending {
	p := &pending{s: s, touched: touchedBy(s.Capture), due: s.Applied.Add(c.cfg.Delays[0])}
	seen := map[string]bool{}
	for _, k := range s.Exact {
		if !seen[k] {
			seen[k] = true
			p.targets = append(p.targets, target{key: k, kind: Exact})
		}
	}
	for _, pat := range slices.Sorted(maps.Keys(s.Capture.Removed)) {
		for _, k := range s.Capture.Removed[pat] {
			if !seen[k] {
				seen[k] = true
				p.targets = append(p.targets, target{key: k, kind: Pattern})
			}
		}
	}
	return p
}

// checkDue checks every sample that is due, in batches of at most
// Config.Batch keys (one pipeline each), paced by Config.Rate.
func (c *Checker) checkDue(ctx context.Context, q *queue) {
	var due []*pending
	now := time.Now()
	for len(*q) > 0 && !(*q)[0].due.After(now) {
		due = append(due, heap.Pop(q).(*pending))
	}
	var batch []*target
	var owners []*pending
	flush := func() {
		if len(batch) > 0 {
			c.check(ctx, batch, owners)
			batch, owners = batch[:0], owners[:0]
		}
	}
	for _, p := range due {
		for i := range p.targets {
			batch = append(batch, &p.targets[i])
			owners = append(owners, p)
			if len(batch) >= c.cfg.Batch {
				flush()
			}
		}
	}
	flush()
	for _, p := range due {
		if p.next++; p.next < len(c.cfg.Delays) && ctx.Err() == nil {
			p.due = p.s.Applied.Add(c.cfg.Delays[p.next])
			heap.Push(q, p)
		} else {
			c.held.Add(-1)
		}
	}
}

// check reads the keys of batch (owners[i] is the sample of batch[i]) in
// one pipeline and records each result at the owner's current timescale.
// A failed read records nothing (a ⚠️ line, at most one per minute).
func (c *Checker) check(ctx context.Context, batch []*target, owners []*pending) {
	if err := c.limiter.WaitN(ctx, min(len(batch), c.limiter.Burst())); err != nil {
		return
	}
	keys := make([]string, len(batch))
	for i, t := range batch {
		keys[i] = t.key
	}
	obs, err := c.proto.Inspect(ctx, keys)
	if err != nil {
		c.readFailed(ctx, err, len(keys))
		return
	}
	now := time.Now()
	for i, o := range obs {
		c.record(ctx, owners[i], batch[i], o, now)
	}
}

func (c *Checker) readFailed(ctx context.Context, err error, n int) {
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.warned) < time.Minute {
		return
	}
	c.warned = time.Now()
	c.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "⚠️ consistency check could not read Redis; those checks are skipped",
		slog.Int("keys", n), slog.Any("error", err))
}

// record counts one read of t, a key of p, at p's current timescale.
func (c *Checker) record(ctx context.Context, p *pending, t *target, o guard.Observation, now time.Time) {
	r, d := classify(o, p.touched, p.s.Capture.Generations)
	label := c.labels[p.next]
	c.stats.add(p.next, r, now)
	c.cfg.Observer.Checked(label, t.kind, r)
	if r != Stale {
		return
	}
	c.cfg.Observer.StaleAge(now.Sub(p.s.Applied))
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.finding != nil { // still stale: found once, logged once
		t.finding.Timescales = append(t.finding.Timescales, label)
		return
	}
	t.finding = &Finding{EventID: p.s.EventID, Subject: p.s.Subject, Key: t.key, Kind: t.kind,
		Stamp: strings.TrimSuffix(guard.Stamp(o.Stamp), "\n"), Generation: d.Key, Displaced: d.Previous, Set: d.Token,
		Current: o.Current, Applied: p.s.Applied, Timescales: []string{label}}
	c.recent = append([]*Finding{t.finding}, c.recent[:min(len(c.recent), MaxRecent-1)]...)
	c.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "⚠️ stale value found by the consistency check",
		slog.String("id", p.s.EventID), slog.String("subject", p.s.Subject), slog.String("key", t.key),
		slog.String("kind", string(t.kind)), slog.String("timescale", label), slog.String("stamp", t.finding.Stamp),
		slog.String("generation", d.Key), slog.String("displaced", d.Previous), slog.String("set", d.Token),
		slog.Any("current", o.Current), slog.Duration("age", now.Sub(p.s.Applied)))
}

// Report is what GET /api/v3/system/consistency shows.
type Report struct {
	// Sample and Delays are the checker's settings.
	Sample float64  `json:"sample"`
	Delays []string `json:"delays"`
	// Pending counts the sampled events in hand; Dropped those dropped
	// since start because the queue was full.
	Pending int64 `json:"pending"`
	Dropped int64 `json:"dropped"`
	// Timescales holds the counts and nines of each delay.
	Timescales []TimescaleReport `json:"timescales"`
	// Recent are the last MaxRecent stale findings, newest first.
	Recent []Finding `json:"recent_stale"`
}

// TimescaleReport is the counts of one timescale over the last hour and
// the last day.
type TimescaleReport struct {
	Timescale string `json:"timescale"`
	LastHour  Window `json:"last_hour"`
	LastDay   Window `json:"last_day"`
}

// Report returns the counts per timescale over the hour and the day
// before now, and the recent stale findings.
func (c *Checker) Report(now time.Time) Report {
	r := Report{Sample: c.cfg.Sample, Pending: c.held.Load(), Dropped: c.dropped.Load(),
		Delays: slices.Clone(c.labels), Timescales: []TimescaleReport{}, Recent: []Finding{}}
	for i, l := range c.labels {
		r.Timescales = append(r.Timescales, TimescaleReport{Timescale: l,
			LastHour: c.stats.window(i, now, hourMinutes), LastDay: c.stats.window(i, now, dayMinutes)})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.recent {
		g := *f
		g.Timescales = slices.Clone(f.Timescales)
		r.Recent = append(r.Recent, g)
	}
	return r
}

// String describes the checker's settings for the start-up line.
func (c *Checker) String() string {
	return fmt.Sprintf("sample %v at %s, %d keys/s", c.cfg.Sample, strings.Join(c.labels, ","), c.cfg.Rate)
}
