package cache_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/invalidator/invalidator/cache"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/redis/go-redis/v9"
)

// exampleRedis starts a redis-server for an example and returns a client
// and a function that stops both.
func exampleRedis() (*redis.Client, func()) {
	dir, err := os.MkdirTemp("", "cache-example")
	if err != nil {
		panic(err)
	}
	r, err := servers.StartRedis(context.Background(), servers.RedisOptions{Dir: dir})
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	return rdb, func() { _ = rdb.Close(); _ = r.Stop(); _ = os.RemoveAll(dir) }
}

type courseAnalytics struct {
	Course   string `json:"course"`
	Students int    `json:"students"`
}

var quiet = cache.WithLogger(slog.New(slog.DiscardHandler))

// Fetch is the @cached decorator: the first call loads and stores, the
// next one reads the cache.
func ExampleFetch() {
	rdb, stop := exampleRedis()
	defer stop()
	c, err := cache.New(rdb, quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx := context.Background()
	load := func(context.Context) (courseAnalytics, error) {
		fmt.Println("loading course 42")
		return courseAnalytics{Course: "42", Students: 31}, nil
	}
	for range 2 {
		a, err := cache.Fetch(ctx, c, "cache:course_analytics:42", time.Minute, load)
		fmt.Println(a, err)
	}
	// Output:
	// loading course 42
	// {42 31} <nil>
	// {42 31} <nil>
}

// Clear invalidates a pattern: readers miss at once, the keys go with one
// SCAN pass.
func ExampleCache_Clear() {
	rdb, stop := exampleRedis()
	defer stop()
	c, err := cache.New(rdb, quiet, cache.WithPrefix("cache:"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx := context.Background()
	fmt.Println(c.Set(ctx, "course_analytics:42:weekly", courseAnalytics{Course: "42"}, time.Minute))
	fmt.Println(c.Set(ctx, "course_analytics:420:weekly", courseAnalytics{Course: "420"}, time.Minute))
	n, err := c.Clear(ctx, "course_analytics:42:*")
	fmt.Println("removed", n, err)
	var a courseAnalytics
	found42, err42 := c.Get(ctx, "course_analytics:42:weekly", &a)
	found420, err420 := c.Get(ctx, "course_analytics:420:weekly", &a)
	fmt.Println(found42, err42, found420, err420, a.Course)
	// Output:
	// <nil>
	// <nil>
	// removed 1 <nil>
	// false <nil> true <nil> 420
}

// Middleware caches the original app's GET endpoints: its routes, keys
// and TTLs are the caller's, here those of the FastAPI guide's app.
func ExampleMiddleware() {
	rdb, stop := exampleRedis()
	defer stop()
	c, err := cache.New(rdb, quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v3/analytics/courses/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"course":%q}`, r.PathValue("id"))
	})
	mw, err := cache.Middleware(c,
		cache.Route{Pattern: "/api/v3/system/stats", Key: "cache:system_stats:global", TTL: 30 * time.Second},
		cache.Route{Pattern: "/api/v3/analytics/courses/{id}", Key: "cache:course_analytics:{id}", TTL: 60 * time.Second},
		cache.Route{Pattern: "/api/v3/analytics/students/{id}", Key: "cache:student_risk:{id}", TTL: 45 * time.Second},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	h := mw(mux)
	for range 2 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v3/analytics/courses/42", nil))
		body, _ := io.ReadAll(rec.Body)
		fmt.Println(rec.Header().Get("X-Cache"), string(body))
	}
	// Output:
	// MISS {"course":"42"}
	// HIT {"course":"42"}
}
