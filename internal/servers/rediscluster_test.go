package servers_test

import (
	"context"
	"testing"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/redis/go-redis/v9"
)

func TestRedisClusterStarts(t *testing.T) {
	c, err := servers.StartRedisCluster(context.Background(), t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer rdb.Close()
	for i := range 100 {
		if err := rdb.Set(t.Context(), "k"+string(rune('a'+i%26)), "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	n, _ := rdb.DBSize(t.Context()).Result()
	t.Log(c.Addrs(), n)
}
