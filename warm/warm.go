// Package warm fills cache keys again after their invalidation: a bounded,
// coalescing queue of warm requests with per-host limits and circuit
// breakers, writing through the generation guard (package guard: a value
// fetched before an invalidation is never written after it), and a
// Scheduler that refreshes global keys once per interval across replicas.
package warm

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
	"github.com/sourcegraph/conc/pool"
)

// Outcome is what became of one warm request.
type Outcome string

// The outcomes of a warm request.
const (
	// Stored: the fetched body was written to the key.
	Stored Outcome = "stored"
	// Triggered: the URL was fetched (trigger mode, nothing written).
	Triggered Outcome = "triggered"
	// SkippedStale: the key was invalidated while the body was fetched,
	// so the (older) body was not written.
	SkippedStale Outcome = "skipped_stale"
	// Failed: the source failed (error, timeout, non-2xx, not JSON, too large).
	Failed Outcome = "failed"
	// Shed: dropped without a request: queue full, or the source's
	// circuit breaker is open.
	Shed Outcome = "shed"
	// SkippedUnsafe: the event's values did not render into the target's
	// URL or key (a value safe in a key but not in a URL, like ".."), so no
	// request was made; the event's keys were invalidated all the same.
	SkippedUnsafe Outcome = "skipped_unsafe"
	// Dropped: Run's context ended (the worker's shutdown deadline) before
	// the request was made or finished.
	Dropped Outcome = "dropped"
)

// Observer is told of every warm request and scheduled refresh. Its
// methods are called from many goroutines and must not block.
type Observer interface {
	WarmDone(outcome Outcome, latency time.Duration)
	ScheduledRefresh(key string)
}

type nopObserver struct{}

func (nopObserver) WarmDone(Outcome, time.Duration) {}
func (nopObserver) ScheduledRefresh(string)         {}

// Warmer defaults.
const (
	DefaultQueue              = 1024
	DefaultWorkers            = 8
	DefaultPerHost            = 4
	DefaultTimeout            = 5 * time.Second
	DefaultMaxBody            = 1 << 20
	DefaultBreakerFailures    = 5
	DefaultBreakerCooldown    = 30 * time.Second
	DefaultScheduleLockPrefix = "invalidator:lock:schedule:"
)

// Config configures a Warmer. The zero value of each field takes its default.
type Config struct {
	// Queue bounds the warm requests waiting; more are shed. Defaults to 1024.
	Queue int
	// Workers is how many requests run at once. Defaults to 8.
	Workers int
	// PerHost bounds the requests in flight to one host. Defaults to 4.
	PerHost int
	// Timeout bounds one request, body included. Defaults to 5s.
	Timeout time.Duration
	// MaxBody is the largest body stored, in bytes. Defaults to 1 MiB.
	MaxBody int64
	// BreakerFailures consecutive failures of a host open its breaker. Defaults to 5.
	BreakerFailures int
	// BreakerCooldown is how long an open breaker sheds requests before one
	// trial request. Defaults to 30s.
	BreakerCooldown time.Duration
	// Stamp writes each warmed value with the generation stamp of package
	// cache ("@gen <tokens>\n" before the body, guard/fill.lua), so that
	// services reading through that protocol see warm values as hits.
	// Readers that GET the key directly then see the stamp too: set it only
	// when every reader goes through the protocol (GENERATIONS=on).
	// Defaults to false: the body as the source sent it.
	Stamp bool
	// Env holds the values of the environment variables named by
	// headers_from_env; the caller reads the environment, the worker never does.
	Env map[string]string
	// Client sends the requests. Defaults to a client with no redirects
	// followed beyond 3 and the Timeout.
	Client *http.Client
	// Logger gets a line per request made and per schedule lock that
	// failed. Defaults to a discarding logger.
	Logger *slog.Logger
}

// ErrInvalidConfig is wrapped by every error of Config.Validate.
var ErrInvalidConfig = errors.New("invalid warm config")

// WithDefaults returns c with every zero field set to its default; negative
// values are kept for Validate to refuse.
func (c Config) WithDefaults() Config {
	c.Queue = cmp.Or(c.Queue, DefaultQueue)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	c.PerHost = cmp.Or(c.PerHost, DefaultPerHost)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.BreakerFailures = cmp.Or(c.BreakerFailures, DefaultBreakerFailures)
	c.BreakerCooldown = cmp.Or(c.BreakerCooldown, DefaultBreakerCooldown)
	c.MaxBody = cmp.Or(c.MaxBody, DefaultMaxBody)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.Timeout, CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			return nil
		}}
	}
	return c
}

// Validate reports the first field out of range, wrapping ErrInvalidConfig.
// Zero values are valid: they mean the default.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Queue", int64(c.Queue)}, {"Workers", int64(c.Workers)}, {"PerHost", int64(c.PerHost)},
		{"Timeout", int64(c.Timeout)}, {"MaxBody", c.MaxBody}, {"BreakerFailures", int64(c.BreakerFailures)},
		{"BreakerCooldown", int64(c.BreakerCooldown)},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: %s must not be negative, not %d", ErrInvalidConfig, f.name, f.v)
		}
	}
	return nil
}

// Warmer fills cache keys again after their invalidation, in the background
// and best effort: requests wait in a bounded queue (never blocking the
// caller), requests for one key coalesce, each host has an in-flight limit
// and a circuit breaker, and every write goes through the generation guard so
// that a body fetched before a newer invalidation is never written.
//
// The guard (package guard, with its proof): before it fetches,
// the warmer claims the generation key of the key and of each of its
// segment prefixes (SET NX GET: a fresh token where none is), and after the
// fetch one Lua script SETs the value only if every one still holds the
// token it saw. Every invalidation first removes the generation of each
// exact key and gives each pattern's scope (cachekeys.PatternScope) a new
// token, then removes the keys, so a fill that claimed before it writes
// nothing.
type Warmer struct {
	rdb      redis.UniversalClient
	guard    *guard.Protocol
	cfg      Config
	log      *slog.Logger
	obs      Observer
	breakers breakers
	hosts    hostLimits

	mu      sync.Mutex
	state   map[string]*warmState // by coalescing id
	queue   chan string
	closed  bool
	running atomic.Bool   // Run has been called
	dropped atomic.Int64  // requests reported Dropped
	drain   chan struct{} // closed by Drain
	once    sync.Once
}

type warmState struct {
	req     cachekeys.WarmRequest
	running bool
	again   bool
}

// New returns a warmer on rdb; start it with Run. An invalid cfg is an
// error wrapping ErrInvalidConfig; a client package guard does not support
// (a Ring) one wrapping guard.ErrUnsupportedClient.
func New(rdb redis.UniversalClient, cfg Config, obs Observer) (*Warmer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g, err := guard.New(rdb)
	if err != nil {
		return nil, fmt.Errorf("warm: %w", err)
	}
	cfg = cfg.WithDefaults()
	if obs == nil {
		obs = nopObserver{}
	}
	return &Warmer{
		rdb: rdb, guard: g, cfg: cfg, log: cfg.Logger, obs: obs, drain: make(chan struct{}),
		breakers: breakers{failures: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown, m: map[string]*breaker{}},
		hosts:    hostLimits{per: cfg.PerHost, m: map[string]chan struct{}{}},
		state:    map[string]*warmState{}, queue: make(chan string, cfg.Queue),
	}, nil
}

func coalesceID(r cachekeys.WarmRequest) string {
	if r.Key != "" {
		return "key " + r.Key
	}
	return "url " + r.URL
}

// Enqueue asks for the requests to be made; it never blocks. A request for a
// key already queued is merged with it; one for a key being fetched now
// makes that key fetched once more afterwards, at most. Requests that do not
// fit in the queue are shed.
// Skip counts and logs, with one ⚠️ line each, the warm targets an event's
// plan left out (cachekeys.Plan.WarmSkipped); attrs name the event.
func (w *Warmer) Skip(ctx context.Context, skips []cachekeys.WarmSkip, attrs ...slog.Attr) {
	for _, s := range skips {
		w.obs.WarmDone(SkippedUnsafe, 0)
		w.log.LogAttrs(ctx, slog.LevelWarn, "⚠️ warm request skipped: the event's values do not render into its URL",
			append(attrs, slog.String("from", s.From), slog.String("outcome", string(SkippedUnsafe)), slog.Any("error", s.Err))...)
	}
}

func (w *Warmer) Enqueue(reqs []cachekeys.WarmRequest) {
	for _, r := range reqs {
		if !w.enqueue(r) {
			w.obs.WarmDone(Shed, 0)
		}
	}
}

func (w *Warmer) enqueue(r cachekeys.WarmRequest) bool {
	id := coalesceID(r)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	if st, ok := w.state[id]; ok {
		st.req = r
		if st.running {
			st.again = true
		}
		return true
	}
	select {
	case w.queue <- id:
		w.state[id] = &warmState{req: r}
		return true
	default:
		return false
	}
}

// ErrAlreadyRunning is returned by a second call of Run on one Warmer.
var ErrAlreadyRunning = errors.New("warm: Run called twice")

// Run makes the queued requests with Workers goroutines until Drain is
// called and the queue is empty, or until ctx ends. When ctx ends it
// cancels the requests in flight and reports them, and every request
// still queued, as Dropped (one ⚠️ line counts them), so that none is
// lost silently. A worker runs it on its shutdown deadline and calls
// Drain once its handlers are done: stop fetching, finish, ack, warm,
// close. Run returns when all its goroutines are done; a second call
// returns ErrAlreadyRunning.
func (w *Warmer) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	p := pool.New().WithMaxGoroutines(w.cfg.Workers)
	for range w.cfg.Workers {
		p.Go(func() { w.work(ctx) })
	}
	p.Wait()
	w.mu.Lock()
	w.closed = true
	left := len(w.queue)
	for range left {
		delete(w.state, <-w.queue)
	}
	w.mu.Unlock()
	for range left {
		w.obs.WarmDone(Dropped, 0)
	}
	if n := w.dropped.Add(int64(left)); n > 0 {
		w.log.Warn("⚠️ warm requests dropped: the shutdown deadline passed before they were made", slog.Int64("dropped", n))
	}
	return nil
}

// Drain makes Run return once the requests queued are made, instead of
// waiting for more. Later requests are still queued until Run returns
// (and then counted Dropped if not made). Safe to call more than once.
func (w *Warmer) Drain() { w.once.Do(func() { close(w.drain) }) }

// work makes queued requests until ctx ends, or until Drain and an empty
// queue.
func (w *Warmer) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-w.queue:
			w.runID(ctx, id)
		case <-w.drain:
			select {
			case id := <-w.queue:
				w.runID(ctx, id)
			default:
				return
			}
		}
	}
}

// runID makes the request of id, and once more if asked while it ran.
// Once ctx has ended, Warm reports the request Dropped without making it.
func (w *Warmer) runID(ctx context.Context, id string) {
	for {
		w.mu.Lock()
		st := w.state[id]
		st.running, st.again = true, false
		req := st.req
		w.mu.Unlock()

		w.Warm(ctx, req)

		w.mu.Lock()
		if !st.again {
			delete(w.state, id)
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

// Warm makes one request now (store or trigger mode) and reports its outcome.
func (w *Warmer) Warm(ctx context.Context, req cachekeys.WarmRequest) Outcome {
	start := time.Now()
	out, err := w.warm(ctx, req)
	w.obs.WarmDone(out, time.Since(start))
	attrs := []slog.Attr{slog.String("url", req.URL), slog.String("outcome", string(out)),
		slog.Float64("ms", float64(time.Since(start).Microseconds())/1000)}
	if req.Key != "" {
		attrs = append(attrs, slog.String("key", req.Key))
	}
	switch out {
	case Stored:
		w.log.LogAttrs(ctx, slog.LevelInfo, "💾 cache warmed", attrs...)
	case Triggered:
		w.log.LogAttrs(ctx, slog.LevelInfo, "🔍 warm trigger sent", attrs...)
	case SkippedStale:
		w.log.LogAttrs(ctx, slog.LevelInfo, "⚠️ warm value discarded: the key was invalidated meanwhile", attrs...)
	case Dropped: // Run logs one line with the count
		w.dropped.Add(1)
		w.log.LogAttrs(ctx, slog.LevelDebug, "warm request dropped: the shutdown deadline passed", attrs...)
	default:
		w.log.LogAttrs(ctx, slog.LevelWarn, "❌ warm request failed", append(attrs, slog.Any("error", err))...)
	}
	return out
}

func (w *Warmer) warm(ctx context.Context, req cachekeys.WarmRequest) (Outcome, error) {
	if err := ctx.Err(); err != nil {
		return Dropped, err
	}
	out, err := w.attempt(ctx, req)
	if out == Failed && ctx.Err() != nil {
		return Dropped, err // cut off by the deadline, not failed by the source
	}
	return out, err
}

func (w *Warmer) attempt(ctx context.Context, req cachekeys.WarmRequest) (Outcome, error) {
	var claim guard.Claim
	if req.Key != "" {
		var err error
		if claim, err = w.claim(ctx, req.Key); err != nil {
			return Failed, err
		}
	}
	b := w.breakers.get(req.Host)
	if !b.allow(time.Now()) {
		return Shed, fmt.Errorf("circuit breaker open for %s", req.Host)
	}
	body, err := w.fetch(ctx, req)
	if ctx.Err() == nil { // a request cut off by the deadline says nothing of the host
		b.record(err == nil, time.Now())
	}
	if err != nil {
		return Failed, err
	}
	if req.Key == "" {
		return Triggered, nil
	}
	stored, err := w.store(ctx, req, body, claim)
	switch {
	case err != nil:
		return Failed, err
	case !stored:
		return SkippedStale, nil
	}
	return Stored, nil
}

// fetch GETs the URL within the host's in-flight limit; a 2xx answer is
// required, and in store mode a JSON body of at most MaxBody bytes.
func (w *Warmer) fetch(ctx context.Context, req cachekeys.WarmRequest) ([]byte, error) {
	release, err := w.hosts.acquire(ctx, req.Host)
	if err != nil {
		return nil, err
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, req.URL, nil)
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("User-Agent", "invalidator-warmer")
	for k, v := range req.Headers {
		hr.Header.Set(k, v)
	}
	for k, env := range req.HeadersFromEnv {
		hr.Header.Set(k, w.cfg.Env[env])
	}
	resp, err := w.cfg.Client.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, w.cfg.MaxBody+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("read body: %w", err)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	case int64(len(body)) > w.cfg.MaxBody:
		return nil, fmt.Errorf("body over %d bytes", w.cfg.MaxBody)
	case req.Key != "" && !json.Valid(bytes.TrimSpace(body)):
		return nil, errors.New("body is not JSON")
	}
	return body, nil
}
