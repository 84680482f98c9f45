package testserver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/redis/go-redis/v9"
)

// Sentinel starts a Redis master, a replica and three sentinels on loopback
// (servers.StartSentinelSet) in a temp dir, stopped on cleanup. It skips the
// test with a clear message if redis-server is not installed. When the test
// fails, the tails of the servers' logs are logged.
func Sentinel(tb testing.TB) *servers.SentinelSet {
	tb.Helper()
	dir := tb.TempDir()
	s, err := servers.StartSentinelSet(context.Background(), dir)
	if errors.Is(err, servers.ErrNoRedisServer) {
		tb.Skipf("skipped: a Sentinel set needs redis-server: %v", err)
	}
	if err != nil {
		logTails(tb, dir)
		tb.Fatalf("start the Sentinel set: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			logTails(tb, dir)
		}
		s.Stop()
	})
	return s
}

// SentinelClient returns a go-redis failover client of s's master (what
// config.NewRedisClient builds from REDIS_SENTINEL_ADDRS and
// REDIS_SENTINEL_MASTER), closed on cleanup.
func SentinelClient(tb testing.TB, s *servers.SentinelSet) *redis.Client {
	tb.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    servers.SentinelMaster,
		SentinelAddrs: s.SentinelAddrs(),
		MaxRetries:    3,
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// logTails logs the last lines of every *.log under dir.
func logTails(tb testing.TB, dir string) {
	tb.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	for _, path := range logs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		lines = lines[max(0, len(lines)-25):]
		tb.Logf("%s (last lines):\n%s", filepath.Base(path), strings.Join(lines, "\n"))
	}
}
