package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cache"
	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
)

// detailedGenerations reads components.worker.generations of
// /api/v3/system/health/detailed.
func detailedGenerations(t *testing.T, port int) (on bool, why string) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v3/system/health/detailed", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Components struct {
			Worker struct {
				Generations struct {
					On  bool   `json:"on"`
					Why string `json:"why"`
				} `json:"generations"`
			} `json:"worker"`
		} `json:"components"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	g := body.Components.Worker.Generations
	return g.On, g.Why
}

// With the default GENERATIONS=auto and rules that do not warm, the worker
// starts without generations; a service built on cache.New leaves the
// protocol marker on its first operation, and the worker turns generations
// on within seconds, says so in one log line and in the detailed health,
// and advances a pattern's scope generation from then on (so the
// service's readers miss at once instead of after the sweep).
func TestGenerationsAutoNoticesAProtocolReader(t *testing.T) {
	t.Parallel()
	testproc.Binary(t)
	r := testserver.Redis(t)
	rdb := testserver.RedisClient(t, r)
	ns := testserver.NATS(t)
	_, js := testserver.JetStream(t, ns)
	port := freePort(t)
	p := testproc.Start(t, []string{"REDIS_URL=" + r.URL(), "NATS_URL=" + ns.ClientURL(), "INVALIDATOR_RULES=" + absRules(t),
		fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", port), "LOG_FORMAT=json"}, "run")
	p.WaitLog(t, "worker started", 60*time.Second)
	ctx := context.Background()
	pub, err := events.NewPublisher(js)
	if err != nil {
		t.Fatal(err)
	}
	scope := func(course string) string { return guard.Key("cache:course_analytics:" + course + ":") }

	// Before any reader: no generation is advanced.
	if on, why := detailedGenerations(t, port); on || !strings.Contains(why, "no reader") {
		t.Errorf("detailed health before a reader: on=%v why=%q", on, why)
	}
	rdb.Set(ctx, "cache:course_analytics:7", "v", 0)
	if _, err := pub.Publish(ctx, "events.course.updated", map[string]any{"course_id": "7"}); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, "course 7 invalidated", 10*time.Second, func() bool {
		return rdb.Exists(ctx, "cache:course_analytics:7").Val() == 0
	})
	if n := rdb.Exists(ctx, scope("7")).Val(); n != 0 {
		t.Errorf("a scope generation was advanced before any reader")
	}

	// A service reads through the protocol.
	c, err := cache.New(rdb, cache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var v map[string]int
	if _, err := c.Get(ctx, "cache:course_analytics:42:weekly", &v); err != nil {
		t.Fatal(err)
	}
	if got := rdb.Get(ctx, guard.ProtocolMarkerKey).Val(); got != cache.MarkerName {
		t.Fatalf("marker holds %q after a Get, want %q", got, cache.MarkerName)
	}
	p.WaitLog(t, "generations on", 20*time.Second)
	if on, why := detailedGenerations(t, port); !on || !strings.Contains(why, `"go"`) {
		t.Errorf("detailed health after a reader: on=%v why=%q", on, why)
	}
	if _, err := pub.Publish(ctx, "events.course.updated", map[string]any{"course_id": "42"}); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, "course 42's scope generation advanced", 10*time.Second, func() bool {
		return rdb.Exists(ctx, scope("42")).Val() == 1
	})
	if n := strings.Count(p.Stderr.String(), "generations on"); n != 1 {
		t.Errorf("%d 'generations on' lines, want 1", n)
	}
	p.Stop(t, 30*time.Second)
}
