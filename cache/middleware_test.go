package cache

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/redis/go-redis/v9"
)

// testRoutes are the original app's cached endpoints.
var testRoutes = []Route{
	{Pattern: "/api/v3/system/stats", Key: "cache:system_stats:global", TTL: 30 * time.Second},
	{Pattern: "/api/v3/analytics/courses/{id}", Key: "cache:course_analytics:{id}", TTL: 60 * time.Second},
	{Pattern: "/api/v3/analytics/students/{id}", Key: "cache:student_risk:{id}", TTL: 45 * time.Second},
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	rdb, c, _ := newTestCache(t, WithLogger(slog.New(slog.DiscardHandler)))
	var calls atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v3/analytics/courses/{id}", func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.PathValue("id") == "404" {
			http.Error(w, "no such course", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"course":%q,"call":%d}`, r.PathValue("id"), n)
	})
	mux.HandleFunc("/api/v3/system/stats", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"call":%d}`, calls.Add(1))
	})
	mw, err := Middleware(c, testRoutes...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mw(mux))
	defer srv.Close()
	get := func(method, path string) (string, string, int) {
		req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b)), resp.Header.Get("X-Cache"), resp.StatusCode
	}
	for _, tc := range []struct {
		method, path, wantBody, wantCache string
		wantStatus                        int
	}{
		{"GET", "/api/v3/analytics/courses/42", `{"course":"42","call":1}`, "MISS", 200},
		{"GET", "/api/v3/analytics/courses/42", `{"course":"42","call":1}`, "HIT", 200},
		{"GET", "/api/v3/analytics/courses/420", `{"course":"420","call":2}`, "MISS", 200},
		{"GET", "/api/v3/system/stats", `{"call":3}`, "MISS", 200},
		{"GET", "/api/v3/system/stats", `{"call":3}`, "HIT", 200},
		{"POST", "/api/v3/analytics/courses/42", `{"course":"42","call":4}`, "", 200},
		{"GET", "/api/v3/analytics/courses/42?x=1", `{"course":"42","call":5}`, "", 200},
		{"GET", "/api/v3/analytics/courses/404", "no such course", "", 404},
		{"GET", "/api/v3/analytics/courses/404", "no such course", "", 404},
	} {
		body, xc, status := get(tc.method, tc.path)
		if body != tc.wantBody || xc != tc.wantCache || status != tc.wantStatus {
			t.Fatalf("%s %s = %d %q (X-Cache %q), want %d %q (%q)", tc.method, tc.path, status, body, xc, tc.wantStatus, tc.wantBody, tc.wantCache)
		}
	}
	if n := calls.Load(); n != 7 {
		t.Errorf("%d handler calls, want 7 (404s are not cached)", n)
	}
	if raw := rdb.Exists(t.Context(), "cache:course_analytics:42", "cache:system_stats:global").Val(); raw != 2 {
		t.Errorf("%d of the route keys exist, want 2", raw)
	}
	// Course 42 is updated: the worker applies the plan of its event.
	rules, err := cachekeys.Load("../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := rules.Plan("events.course.updated", map[string]any{"course_id": "42"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Invalidate(t.Context(), newEngine(t, rdb, engine.Config{}), engine.Job{Exact: plan.Exact, Patterns: plan.Patterns}); err != nil {
		t.Fatal(err)
	}
	if body, xc, _ := get("GET", "/api/v3/analytics/courses/42"); xc != "MISS" || !json.Valid([]byte(body)) || body == `{"course":"42","call":1}` {
		t.Errorf("after the update: %q (%s), want a fresh answer", body, xc)
	}
	if body, xc, _ := get("GET", "/api/v3/analytics/courses/420"); xc != "HIT" || body != `{"course":"420","call":2}` {
		t.Errorf("course 420 after the update of 42: %q (%s), want the cached answer", body, xc)
	}
	if _, xc, _ := get("GET", "/api/v3/system/stats"); xc != "MISS" {
		t.Errorf("system stats after a course update: X-Cache %s, want MISS", xc)
	}
}

func TestMatchPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern, path, wantName, want string
		ok                            bool
	}{
		{"/api/v3/analytics/courses/{id}", "/api/v3/analytics/courses/42", "{id}", "42", true},
		{"/api/v3/analytics/courses/{id}", "/api/v3/analytics/courses/", "", "", false},
		{"/api/v3/analytics/courses/{id}", "/api/v3/analytics/courses/4*2", "", "", false},
		{"/api/v3/analytics/courses/{id}", "/api/v3/analytics/courses/a:b", "", "", false},
		{"/api/v3/analytics/courses/{id}", "/api/v3/analytics/courses/42/x", "", "", false},
		{"/api/v3/system/stats", "/api/v3/system/stats", "", "", true},
	} {
		if name, got, ok := matchPath(tc.pattern, tc.path); name != tc.wantName || got != tc.want || ok != tc.ok {
			t.Errorf("matchPath(%q, %q) = %q, %q, %v; want %q, %q, %v", tc.pattern, tc.path, name, got, ok, tc.wantName, tc.want, tc.ok)
		}
	}
}

// Routes that would cache different answers under one key, or under a
// pattern, are refused.
func TestMiddlewareRefusesBadRoutes(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = rdb.Close() })
	c := mustNew(t, rdb)
	for _, rt := range []Route{
		{Pattern: "/courses/{id}", Key: "cache:course", TTL: time.Minute},         // every course under one key
		{Pattern: "/stats", Key: "cache:stats:{id}", TTL: time.Minute},            // a name the path lacks
		{Pattern: "/courses/{id}", Key: "cache:course:*:{id}", TTL: time.Minute},  // a glob
		{Pattern: "/a/{x}/{y}", Key: "cache:{x}:{y}", TTL: time.Minute},           // two names
		{Pattern: "courses/{id}", Key: "cache:course:{id}", TTL: time.Minute},     // not a path
		{Pattern: "/courses/{id}", Key: "cache:course:{id}", TTL: 48 * time.Hour}, // outlives its generations
	} {
		if mw, err := Middleware(c, rt); err == nil || mw != nil {
			t.Errorf("Middleware(%+v) = %v, nil; want an error", rt, err)
		}
	}
	if _, err := Middleware(c, testRoutes...); err != nil {
		t.Errorf("the original app's routes: %v", err)
	}
}
