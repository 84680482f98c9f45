package testserver

import (
	"context"
	"errors"
	"testing"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/redis/go-redis/v9"
)

// RedisCluster starts a Redis Cluster of masters redis-server processes
// (no replicas) in a temp dir, stopped on cleanup. It skips the test with a
// clear message when redis-server or redis-cli is not on PATH.
func RedisCluster(tb testing.TB, masters int) *servers.RedisCluster {
	tb.Helper()
	return RedisClusterWith(tb, servers.RedisClusterOptions{Masters: masters})
}

// RedisClusterWith is RedisCluster with options (AOF, node timeout); Dir
// defaults to a temp dir.
func RedisClusterWith(tb testing.TB, o servers.RedisClusterOptions) *servers.RedisCluster {
	tb.Helper()
	if o.Dir == "" {
		o.Dir = tb.TempDir()
	}
	c, err := servers.StartRedisClusterWith(context.Background(), o)
	if errors.Is(err, servers.ErrNoRedisServer) || errors.Is(err, servers.ErrNoRedisCLI) {
		tb.Skipf("skipped: a Redis Cluster test needs redis-server and redis-cli: %v", err)
	}
	if err != nil {
		tb.Fatalf("start Redis Cluster: %v", err)
	}
	tb.Cleanup(c.Close)
	return c
}

// ClusterClient returns a go-redis cluster client seeded with every node of
// c, closed on cleanup.
func ClusterClient(tb testing.TB, c *servers.RedisCluster) *redis.ClusterClient {
	tb.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}
