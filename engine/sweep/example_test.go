package sweep_test

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/redis/go-redis/v9"
)

// Two callers sweep their patterns with one shared walk; course 420 is not
// course 42.
func ExampleWalker_Sweep() {
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
	rdb.MSet(ctx, "cache:course_analytics:42:summary", "a", "cache:course_analytics:42:grades", "b",
		"cache:course_analytics:420:summary", "c", "cache:user:7:profile", "d")

	w := sweep.New(rdb, sweep.Config{})
	defer w.Close()
	var wg sync.WaitGroup
	for _, p := range []string{"cache:course_analytics:42:*", "cache:user:7:*"} {
		wg.Go(func() {
			if _, err := w.Sweep(ctx, []string{p}); err != nil {
				fmt.Println(err)
			}
		})
	}
	wg.Wait()
	left, _ := rdb.Keys(ctx, "*").Result()
	fmt.Println("left:", left)
	// Output:
	// left: [cache:course_analytics:420:summary]
}
