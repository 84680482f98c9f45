package cache

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newTestCache starts a redis-server and returns a client and a Cache on
// it, logging into a buffer the test can read.
func newTestCache(tb testing.TB, opts ...Option) (*redis.Client, *Cache, *logBuffer) {
	tb.Helper()
	rdb := testserver.RedisClient(tb, testserver.Redis(tb))
	logs := &logBuffer{}
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))}, opts...)
	c := New(rdb, opts...)
	tb.Cleanup(func() { _ = c.Close() })
	return rdb, c, logs
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
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count returns how many lines contain s.
func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for line := range strings.Lines(l.b.String()) {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

var discard = slog.New(slog.DiscardHandler)
