package cache

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// mustNew is New for tests: an error fails the test; the Cache is closed
// at cleanup.
func mustNew(tb testing.TB, rdb redis.UniversalClient, opts ...Option) *Cache {
	tb.Helper()
	c, err := New(rdb, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// newTestCache starts a redis-server and returns a client and a Cache on
// it, logging into a buffer the test can read.
func newTestCache(tb testing.TB, opts ...Option) (*redis.Client, *Cache, *logBuffer) {
	tb.Helper()
	rdb := testserver.RedisClient(tb, testserver.Redis(tb))
	logs := &logBuffer{}
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))}, opts...)
	c := mustNew(tb, rdb, opts...)
	return rdb, c, logs
}

// topology starts a Redis of one kind for a test: the Cache takes either.
type topology struct {
	name  string
	start func(tb testing.TB) redis.UniversalClient
}

var topologies = []topology{
	{"server", func(tb testing.TB) redis.UniversalClient { return testserver.RedisClient(tb, testserver.Redis(tb)) }},
	{"cluster", func(tb testing.TB) redis.UniversalClient {
		return testserver.ClusterClient(tb, testserver.RedisCluster(tb, 3))
	}},
}

// forEachTopology runs f in a parallel subtest per topology, each on a
// Redis of its own.
func forEachTopology(t *testing.T, f func(t *testing.T, rdb redis.UniversalClient)) {
	t.Helper()
	for _, top := range topologies {
		t.Run(top.name, func(t *testing.T) {
			t.Parallel()
			f(t, top.start(t))
		})
	}
}

// newCacheOn returns a Cache on rdb, logging into a buffer the test can read.
func newCacheOn(tb testing.TB, rdb redis.UniversalClient, opts ...Option) (*Cache, *logBuffer) {
	tb.Helper()
	logs := &logBuffer{}
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))}, opts...)
	c := mustNew(tb, rdb, opts...)
	return c, logs
}

// newEngineOn returns the engine the worker would run on rdb, with
// generations on.
func newEngineOn(tb testing.TB, rdb redis.UniversalClient, cfg engine.Config) engine.Engine {
	tb.Helper()
	cfg.Generations = true
	var (
		e interface {
			engine.Engine
			Close() error
		}
		err error
	)
	switch c := rdb.(type) {
	case *redis.Client:
		e, err = engine.NewRedis(c, cfg)
	case *redis.ClusterClient:
		e, err = engine.NewCluster(c, cfg)
	default:
		tb.Fatalf("no engine for %T", rdb)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.Close() })
	return e
}

// ownGeneration returns the own generation key of key on rdb's topology.
func ownGeneration(rdb redis.UniversalClient, key string) string {
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return guard.ClusterKey(key)
	}
	return guard.Key(key)
}

// newEngine returns the engine the worker would use, with generations on.
func newEngine(tb testing.TB, rdb *redis.Client, cfg engine.Config) *engine.Redis {
	tb.Helper()
	cfg.Generations = true
	e, err := engine.NewRedis(rdb, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.Close() })
	return e
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct{ testproc.Buffer }

// count returns how many lines contain s.
func (l *logBuffer) count(s string) int {
	n := 0
	for line := range strings.Lines(l.String()) {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

var discard = slog.New(slog.DiscardHandler)
