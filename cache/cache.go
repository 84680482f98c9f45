package cache

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// Errors of the package.
var (
	// ErrInvalidTTL is returned for a TTL ≤ 0 or longer than the
	// generation TTL (24 h): a value must not outlive the generations it
	// is stamped with (it would then read as a miss anyway).
	ErrInvalidTTL = errors.New("cache: TTL must be > 0 and at most 24h")
	// ErrInvalidKey is wrapped for a pattern or key that the template
	// checks (as for `invalidator purge`) or the rules' explicit.allow
	// refuse.
	ErrInvalidKey = errors.New("cache: invalid key or pattern")
	// ErrUnsupportedTopology is wrapped by New for a client other than
	// *redis.Client (a standalone server or a Sentinel failover client)
	// or *redis.ClusterClient, such as a Ring: its sharding is not one the
	// worker invalidates. It is guard.ErrUnsupportedClient.
	ErrUnsupportedTopology = guard.ErrUnsupportedClient
	// ErrInvalidOption is wrapped by New for an option given input it
	// refuses.
	ErrInvalidOption = errors.New("cache: invalid option")
)

// Cache reads and fills JSON values in Redis through the invalidator's
// read/fill protocol, so that the worker's invalidations, exact or by
// pattern, take effect for its readers as soon as the worker has handled
// them. It is safe for concurrent use. See the package documentation.
type Cache struct {
	proto   *guard.Protocol
	eng     engine.Engine // with generations, as the worker runs it
	closer  io.Closer     // the engine's
	rules   *cachekeys.Rules
	log     *slog.Logger
	prefix  string
	metrics *metrics
	group   singleflight.Group
	down    atomic.Bool // a Redis outage is being reported
	marker  *marker     // keeps guard.ProtocolMarkerKey alive
	refused atomic.Bool // stale fills are being refused (reported once)
}

// Option configures a Cache; New returns the error of one given input it
// refuses, wrapping ErrInvalidOption.
type Option func(*options) error

type options struct {
	rules  *cachekeys.Rules
	log    *slog.Logger
	prefix string
	reg    prometheus.Registerer
}

// WithRules makes Delete and Clear refuse keys and patterns that the
// rules' explicit.allow list does not cover, as the worker refuses them in
// an events.cache.invalidate event. Defaults to no such check (the
// template checks still apply). r must not be nil.
func WithRules(r *cachekeys.Rules) Option {
	return func(o *options) error {
		if r == nil {
			return fmt.Errorf("%w: WithRules(nil)", ErrInvalidOption)
		}
		o.rules = r
		return nil
	}
}

// WithLogger sets the logger: a debug line per hit, miss, store and
// delete, and a warning once per Redis outage and once per run of refused
// stale fills. Defaults to slog.Default(); nil discards every line.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		o.log = cmp.Or(l, slog.New(slog.DiscardHandler))
		return nil
	}
}

// WithPrefix prepends prefix to every key and pattern the Cache touches.
// Defaults to "" (keys are used as given). A prefix with glob characters
// (*?[]\) or white space is refused: it would widen every Clear.
func WithPrefix(prefix string) Option {
	return func(o *options) error {
		if i := strings.IndexAny(prefix, "*?[]\\ \t\r\n"); i >= 0 {
			return fmt.Errorf("%w: WithPrefix(%q): %q is not allowed in a key prefix", ErrInvalidOption, prefix, prefix[i])
		}
		o.prefix = prefix
		return nil
	}
}

// WithRegisterer registers the Cache's metrics (hits, misses, fills, stale
// fills refused) with reg. Defaults to none. reg must not be nil.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(o *options) error {
		if reg == nil {
			return fmt.Errorf("%w: WithRegisterer(nil)", ErrInvalidOption)
		}
		o.reg = reg
		return nil
	}
}

// New returns a Cache on rdb: a *redis.Client (a standalone server, or the
// master through a Sentinel failover client) or a *redis.ClusterClient (the
// protocol's cluster form, see package guard). Any other client, such as a
// *redis.Ring, is an error wrapping ErrUnsupportedTopology; an option given
// input it refuses, one wrapping ErrInvalidOption. New does not touch
// Redis. Call Close when done.
func New(rdb redis.UniversalClient, opts ...Option) (*Cache, error) {
	o := options{log: slog.Default()}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	proto, err := guard.New(rdb)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	var eng interface {
		engine.Engine
		io.Closer
	}
	switch client := rdb.(type) {
	case *redis.Client:
		eng, err = engine.NewRedis(client, engine.Config{Generations: true})
	case *redis.ClusterClient:
		eng, err = engine.NewCluster(client, engine.Config{Generations: true})
	}
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return &Cache{proto: proto, eng: eng, closer: eng, rules: o.rules, log: o.log, prefix: o.prefix, metrics: newMetrics(o.reg, o.log),
		marker: &marker{rdb: rdb}}, nil
}

// Close stops the engine's sweep, if one runs; a Clear in progress fails.
// It does not close the Redis client. Safe to call more than once.
func (c *Cache) Close() error { return c.closer.Close() }

// Get reads key and decodes its JSON value into dst. found is false when
// the key is missing or its value is older than an invalidation that
// covers it (an exact key or a pattern handled by the worker since the
// value was written): one round trip either way.
func (c *Cache) Get(ctx context.Context, key string, dst any) (found bool, err error) {
	c.marker.touch(ctx)
	key = c.prefix + key
	b, ok, err := c.proto.Read(ctx, key)
	if err != nil {
		return false, err
	}
	if !ok {
		c.miss(ctx, key)
		return false, nil
	}
	if err := json.Unmarshal(b, dst); err != nil {
		return false, fmt.Errorf("cache: decode %s: %w", key, err)
	}
	c.hit(ctx, key)
	return true, nil
}

func (c *Cache) hit(ctx context.Context, key string) {
	c.metrics.hits.Inc()
	c.log.DebugContext(ctx, "🔍 cache hit", slog.String("key", key))
}

func (c *Cache) miss(ctx context.Context, key string) {
	c.metrics.misses.Inc()
	c.log.DebugContext(ctx, "❌ cache miss", slog.String("key", key))
}

// Set stores value as JSON under key for ttl, stamped with the key's
// current generations (claimed where missing), in one round trip. It is an
// unconditional write: to store what a load returned, without ever storing
// it after a newer invalidation, use Fetch.
func (c *Cache) Set(ctx context.Context, key string, value any, ttl time.Duration) error {
	if err := checkTTL(ttl); err != nil {
		return err
	}
	c.marker.touch(ctx)
	b, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("cache: encode %s: %w", key, err)
	}
	key = c.prefix + key
	if err := c.proto.Set(ctx, key, b, ttl); err != nil {
		return err
	}
	c.log.DebugContext(ctx, "💾 cache stored", slog.String("key", key), slog.Duration("ttl", ttl))
	return nil
}

func checkTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > guard.TTL {
		return fmt.Errorf("%w, got %s", ErrInvalidTTL, ttl)
	}
	return nil
}

// Delete removes keys the way the worker removes an exact key: each key's
// own generation first, then the key, in one round trip, so that a Fetch
// in flight for one of them does not store its value afterwards. It
// returns how many keys existed.
func (c *Cache) Delete(ctx context.Context, keys ...string) (int64, error) {
	job := engine.Job{}
	for _, k := range keys {
		job.Exact = append(job.Exact, c.prefix+k)
	}
	if err := c.allowed(job); err != nil {
		return 0, err
	}
	return c.invalidate(ctx, job)
}

// Exists counts the keys that Get would find (a key named twice counts
// twice, as with EXISTS), in one round trip.
func (c *Cache) Exists(ctx context.Context, keys ...string) (int64, error) {
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = c.prefix + k
	}
	return c.proto.Exists(ctx, full)
}

// Clear removes every key matching pattern (a glob, checked like a rule
// template: a literal prefix and ':' before any glob character, so "*" is
// refused) through the worker's engine with generations on: the pattern's
// scope generation gets a fresh token first, so Get misses on every
// matching key at once, then one SCAN pass removes them. A pattern without
// glob characters is one exact key. It returns the count removed.
func (c *Cache) Clear(ctx context.Context, pattern string) (int64, error) {
	pattern = c.prefix + pattern
	t, err := cachekeys.ParseTemplate(pattern)
	if err != nil {
		return 0, fmt.Errorf("%w: %q: %w", ErrInvalidKey, pattern, err)
	}
	if len(t.Fields()) > 0 {
		return 0, fmt.Errorf("%w: %q: placeholders like {%s} have no value here", ErrInvalidKey, pattern, t.Fields()[0])
	}
	job := engine.Job{Exact: []string{pattern}}
	if t.IsPattern() {
		job = engine.Job{Patterns: []string{pattern}}
	}
	if err := c.allowed(job); err != nil {
		return 0, err
	}
	return c.invalidate(ctx, job)
}

// allowed checks job against the rules' explicit.allow, as the worker
// checks an events.cache.invalidate event.
func (c *Cache) allowed(job engine.Job) error {
	if c.rules == nil {
		return nil
	}
	data := map[string]any{"keys": anys(job.Exact), "patterns": anys(job.Patterns)}
	if _, err := c.rules.Plan(cachekeys.InvalidateSubject, data); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	return nil
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (c *Cache) invalidate(ctx context.Context, job engine.Job) (int64, error) {
	res, err := engine.Invalidate(ctx, c.eng, job)
	if err != nil {
		return res.Removed, fmt.Errorf("cache: invalidate: %w", err)
	}
	c.log.DebugContext(ctx, "🗑️ cache deleted", slog.Any("keys", job.Exact), slog.Any("patterns", job.Patterns),
		slog.Int64("removed", res.Removed))
	return res.Removed, nil
}
