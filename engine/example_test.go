package engine_test

import (
	"context"
	"fmt"
	"os"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/redis/go-redis/v9"
)

// The engine removes exact keys with UNLINK and pattern matches with
// SCAN + UNLINK; course 420 is not course 42.
func ExampleInvalidate() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	srv, err := servers.StartRedis(ctx, servers.RedisOptions{Dir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Stop()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	if err := rdb.MSet(ctx, "cache:course_analytics:42", "a", "cache:course_analytics:42:summary", "b",
		"cache:course_analytics:420", "c", "cache:course_analytics:420:summary", "d").Err(); err != nil {
		fmt.Println(err)
		return
	}

	e, err := engine.NewRedis(rdb, engine.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	res, err := engine.Invalidate(ctx, e, engine.Job{
		Exact:    []string{"cache:course_analytics:42"},
		Patterns: []string{"cache:course_analytics:42:*"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	left, _ := rdb.Keys(ctx, "*").Result()
	fmt.Println("removed:", res.Removed)
	fmt.Println("left:", len(left))
	// Output:
	// removed: 2
	// left: 2
}
