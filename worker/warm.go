package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/redis/go-redis/v9"
	"github.com/sourcegraph/conc/pool"
)

// WarmOutcome is what became of one warm request.
type WarmOutcome string

// The outcomes of a warm request.
const (
	// WarmStored: the fetched body was written to the key.
	WarmStored WarmOutcome = "stored"
	// WarmTriggered: the URL was fetched (trigger mode, nothing written).
	WarmTriggered WarmOutcome = "triggered"
	// WarmSkippedStale: the key was invalidated while the body was fetched,
	// so the (older) body was not written.
	WarmSkippedStale WarmOutcome = "skipped_stale"
	// WarmFailed: the source failed (error, timeout, non-2xx, not JSON, too large).
	WarmFailed WarmOutcome = "failed"
	// WarmShed: dropped without a request: queue full, or the source's
	// circuit breaker is open.
	WarmShed WarmOutcome = "shed"
)

// WarmObserver is told of every warm request and scheduled refresh. Its
// methods are called from many goroutines and must not block.
type WarmObserver interface {
	WarmDone(outcome WarmOutcome, latency time.Duration)
	ScheduledRefresh(key string)
}

type nopWarmObserver struct{}

func (nopWarmObserver) WarmDone(WarmOutcome, time.Duration) {}
func (nopWarmObserver) ScheduledRefresh(string)             {}

// Warmer defaults.
const (
	DefaultWarmQueue           = 1024
	DefaultWarmWorkers         = 8
	DefaultWarmPerHost         = 4
	DefaultWarmTimeout         = 5 * time.Second
	DefaultWarmMaxBody         = 1 << 20
	DefaultBreakerFailures     = 5
	DefaultBreakerCooldown     = 30 * time.Second
	DefaultGenerationTTL       = 24 * time.Hour
	DefaultGenerationKeyPrefix = "invalidator:gen:"
	DefaultScheduleLockPrefix  = "invalidator:lock:schedule:"
)

// WarmConfig configures a Warmer. The zero value of each field takes its default.
type WarmConfig struct {
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
	// Env holds the values of the environment variables named by
	// headers_from_env; the caller reads the environment, the worker never does.
	Env map[string]string
	// Client sends the requests. Defaults to a client with no redirects
	// followed beyond 3 and the Timeout.
	Client *http.Client
}

func (c WarmConfig) withDefaults() WarmConfig {
	c.Queue = cmpOr(c.Queue, DefaultWarmQueue)
	c.Workers = cmpOr(c.Workers, DefaultWarmWorkers)
	c.PerHost = cmpOr(c.PerHost, DefaultWarmPerHost)
	c.Timeout = cmpOr(c.Timeout, DefaultWarmTimeout)
	c.BreakerFailures = cmpOr(c.BreakerFailures, DefaultBreakerFailures)
	c.BreakerCooldown = cmpOr(c.BreakerCooldown, DefaultBreakerCooldown)
	if c.MaxBody <= 0 {
		c.MaxBody = DefaultWarmMaxBody
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

// Warmer fills cache keys again after their invalidation, in the background
// and best effort: requests wait in a bounded queue (never blocking the
// caller), requests for one key coalesce, each host has an in-flight limit
// and a circuit breaker, and every write goes through the generation guard so
// that a body fetched before a newer invalidation is never written.
//
// The guard: every invalidation first INCRs the generation key of each
// exact key it removes and of each pattern's scope (see
// cachekeys.PatternScope), then removes the keys. The warmer reads the
// generations of the key and of each of its segment prefixes before it
// fetches, and writes with one Lua script that SETs the value only if none
// of them changed.
type Warmer struct {
	rdb      redis.UniversalClient
	cfg      WarmConfig
	log      *slog.Logger
	obs      WarmObserver
	breakers breakers
	hosts    hostLimits

	mu     sync.Mutex
	state  map[string]*warmState // by coalescing id
	queue  chan string
	closed bool
}

type warmState struct {
	req     cachekeys.WarmRequest
	running bool
	again   bool
}

// NewWarmer returns a warmer on rdb; start it with Run.
func NewWarmer(rdb redis.UniversalClient, cfg WarmConfig, log *slog.Logger, obs WarmObserver) *Warmer {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if obs == nil {
		obs = nopWarmObserver{}
	}
	return &Warmer{
		rdb: rdb, cfg: cfg, log: log, obs: obs,
		breakers: breakers{failures: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown, m: map[string]*breaker{}},
		hosts:    hostLimits{per: cfg.PerHost, m: map[string]chan struct{}{}},
		state:    map[string]*warmState{}, queue: make(chan string, cfg.Queue),
	}
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
func (w *Warmer) Enqueue(reqs []cachekeys.WarmRequest) {
	for _, r := range reqs {
		if !w.enqueue(r) {
			w.obs.WarmDone(WarmShed, 0)
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

// Run makes the queued requests with Workers goroutines until ctx ends; then
// it stops taking requests, cancels those in flight and returns when all its
// goroutines are done.
func (w *Warmer) Run(ctx context.Context) {
	p := pool.New().WithMaxGoroutines(w.cfg.Workers)
	for range w.cfg.Workers {
		p.Go(func() { w.work(ctx) })
	}
	<-ctx.Done()
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	p.Wait()
}

func (w *Warmer) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-w.queue:
			w.runID(ctx, id)
		}
	}
}

// runID makes the request of id, and once more if asked while it ran.
func (w *Warmer) runID(ctx context.Context, id string) {
	for ctx.Err() == nil {
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
	w.mu.Lock()
	delete(w.state, id)
	w.mu.Unlock()
}

// Warm makes one request now (store or trigger mode) and reports its outcome.
func (w *Warmer) Warm(ctx context.Context, req cachekeys.WarmRequest) WarmOutcome {
	start := time.Now()
	out, err := w.warm(ctx, req)
	w.obs.WarmDone(out, time.Since(start))
	attrs := []slog.Attr{slog.String("url", req.URL), slog.String("outcome", string(out)),
		slog.Float64("ms", float64(time.Since(start).Microseconds())/1000)}
	if req.Key != "" {
		attrs = append(attrs, slog.String("key", req.Key))
	}
	switch out {
	case WarmStored:
		w.log.LogAttrs(ctx, slog.LevelInfo, "💾 cache warmed", attrs...)
	case WarmTriggered:
		w.log.LogAttrs(ctx, slog.LevelInfo, "🔍 warm trigger sent", attrs...)
	case WarmSkippedStale:
		w.log.LogAttrs(ctx, slog.LevelInfo, "⚠️ warm value discarded: the key was invalidated meanwhile", attrs...)
	default:
		w.log.LogAttrs(ctx, slog.LevelWarn, "❌ warm request failed", append(attrs, slog.Any("error", err))...)
	}
	return out
}

func (w *Warmer) warm(ctx context.Context, req cachekeys.WarmRequest) (WarmOutcome, error) {
	var gens []string
	if req.Key != "" {
		var err error
		if gens, err = w.generations(ctx, req.Key); err != nil {
			return WarmFailed, err
		}
	}
	b := w.breakers.get(req.Host)
	if !b.allow(time.Now()) {
		return WarmShed, fmt.Errorf("circuit breaker open for %s", req.Host)
	}
	body, err := w.fetch(ctx, req)
	b.record(err == nil, time.Now())
	if err != nil {
		return WarmFailed, err
	}
	if req.Key == "" {
		return WarmTriggered, nil
	}
	stored, err := w.store(ctx, req, body, gens)
	switch {
	case err != nil:
		return WarmFailed, err
	case !stored:
		return WarmSkippedStale, nil
	}
	return WarmStored, nil
}

// GenerationKeys are the generation keys that guard key: its own and those
// of each segment prefix, where pattern invalidations count.
func GenerationKeys(key string) []string {
	keys := []string{DefaultGenerationKeyPrefix + key}
	for _, p := range cachekeys.SegmentPrefixes(key) {
		keys = append(keys, DefaultGenerationKeyPrefix+p)
	}
	return keys
}

func (w *Warmer) generations(ctx context.Context, key string) ([]string, error) {
	vals, err := w.rdb.MGet(ctx, GenerationKeys(key)...).Result()
	if err != nil {
		return nil, fmt.Errorf("read generations: %w", err)
	}
	gens := make([]string, len(vals))
	for i, v := range vals {
		gens[i] = "0"
		if s, ok := v.(string); ok {
			gens[i] = s
		}
	}
	return gens, nil
}

// guardedSet writes KEYS[1] only if every generation key KEYS[2..] still
// holds the value read before the fetch (ARGV[3..]; a missing key reads "0").
var guardedSet = redis.NewScript(`
for i = 2, #KEYS do
  local g = redis.call('GET', KEYS[i]) or '0'
  if g ~= ARGV[i + 1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

func (w *Warmer) store(ctx context.Context, req cachekeys.WarmRequest, body []byte, gens []string) (bool, error) {
	keys := append([]string{req.Key}, GenerationKeys(req.Key)...)
	args := []any{body, strconv.FormatInt(req.TTL.Milliseconds(), 10)}
	for _, g := range gens {
		args = append(args, g)
	}
	n, err := guardedSet.Run(ctx, w.rdb, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("guarded set: %w", err)
	}
	return n == 1, nil
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

// hostLimits bounds the requests in flight per host.
type hostLimits struct {
	per int
	mu  sync.Mutex
	m   map[string]chan struct{}
}

func (h *hostLimits) acquire(ctx context.Context, host string) (func(), error) {
	h.mu.Lock()
	sem, ok := h.m[host]
	if !ok {
		sem = make(chan struct{}, h.per)
		h.m[host] = sem
	}
	h.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// breakers holds one circuit breaker per host.
type breakers struct {
	failures int
	cooldown time.Duration
	mu       sync.Mutex
	m        map[string]*breaker
}

func (bs *breakers) get(host string) *breaker {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b, ok := bs.m[host]
	if !ok {
		b = &breaker{threshold: bs.failures, cooldown: bs.cooldown}
		bs.m[host] = b
	}
	return b
}

// breaker opens after threshold consecutive failures; after cooldown it
// lets one trial request through (half-open), which closes or reopens it.
type breaker struct {
	threshold int
	cooldown  time.Duration
	mu        sync.Mutex
	fails     int
	openUntil time.Time
	trial     bool
}

func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fails < b.threshold {
		return true
	}
	if now.Before(b.openUntil) || b.trial {
		return false
	}
	b.trial = true
	return true
}

func (b *breaker) record(ok bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
	if ok {
		b.fails = 0
		return
	}
	b.fails++
	if b.fails >= b.threshold {
		b.openUntil = now.Add(b.cooldown)
	}
}

// Open reports whether host's breaker is open now.
func (w *Warmer) Open(host string) bool {
	b := w.breakers.get(host)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fails >= b.threshold && time.Now().Before(b.openUntil)
}
