package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Route is one cached GET endpoint.
type Route struct {
	// Pattern is the path, with at most one {name} segment whose value
	// names the key: "/api/v3/analytics/courses/{id}".
	Pattern string
	// Prefix names the keys: cache:<Prefix>:<value of the {name} segment>,
	// or cache:<Prefix>:global for a pattern without one.
	Prefix string
	// TTL is how long a response stays cached.
	TTL time.Duration
}

// Routes of the original app's cached endpoints.
var (
	SystemStatsRoute     = Route{Pattern: "/api/v3/system/stats", Prefix: "system_stats", TTL: 30 * time.Second}
	CourseAnalyticsRoute = Route{Pattern: "/api/v3/analytics/courses/{id}", Prefix: "course_analytics", TTL: 60 * time.Second}
	StudentRiskRoute     = Route{Pattern: "/api/v3/analytics/students/{id}", Prefix: "student_risk", TTL: 45 * time.Second}
)

// BypassHeader, set to "1" on a request, makes Middleware pass it to the
// handler without reading or writing the cache (the warmer sends it).
const BypassHeader = "X-Cache-Bypass"

// Middleware caches the JSON bodies of 200 answers to GET requests on
// routes, under the route's key, through Fetch: concurrent misses share
// one handler call, the write goes through the generation guard, and a
// failing Redis falls back to the handler. The stored value is the body
// itself, as the warmer stores it. Other methods, other paths, requests
// with a query string or BypassHeader, path values outside
// [A-Za-z0-9_.-], and answers that are not 200 with a JSON body pass
// through uncached. Answers carry X-Cache: HIT or MISS.
func Middleware(c *Cache, routes ...Route) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key, ttl, ok := cacheable(r, routes)
			if !ok {
				next.ServeHTTP(w, r)
				return
			}
			var rec *recorder
			body, err := Fetch(r.Context(), c, key, ttl, func(context.Context) (json.RawMessage, error) {
				rec = &recorder{header: http.Header{}, status: http.StatusOK}
				next.ServeHTTP(rec, r)
				if rec.status != http.StatusOK || !json.Valid(rec.body.Bytes()) {
					return nil, errUncacheable
				}
				return json.RawMessage(rec.body.Bytes()), nil
			})
			switch {
			case err == nil:
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("X-Cache", hitOrMiss(rec))
				_, _ = w.Write(body)
			case errors.Is(err, errUncacheable) && rec != nil:
				rec.replay(w)
			default:
				c.log.WarnContext(r.Context(), "⚠️ cache middleware: serving uncached", slog.String("key", key), slog.Any("err", err))
				next.ServeHTTP(w, r)
			}
		})
	}
}

// errUncacheable is the load error for an answer that is not cached; the
// recorded answer is replayed as it is.
var errUncacheable = errors.New("cache: answer not cacheable")

func hitOrMiss(rec *recorder) string {
	if rec == nil {
		return "HIT" // this request did not call the handler
	}
	return "MISS"
}

// cacheable returns the key and TTL of r, or false when r is not cached.
func cacheable(r *http.Request, routes []Route) (string, time.Duration, bool) {
	if r.Method != http.MethodGet || r.URL.RawQuery != "" || r.Header.Get(BypassHeader) == "1" {
		return "", 0, false
	}
	for _, rt := range routes {
		if id, ok := matchPath(rt.Pattern, r.URL.Path); ok {
			return "cache:" + rt.Prefix + ":" + id, rt.TTL, true
		}
	}
	return "", 0, false
}

// matchPath matches path against pattern and returns the value of its
// {name} segment, or "global" for a pattern without one.
func matchPath(pattern, path string) (string, bool) {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return "", false
	}
	id := "global"
	for i, p := range ps {
		switch {
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}"):
			if !safeSegment(xs[i]) {
				return "", false
			}
			id = xs[i]
		case p != xs[i]:
			return "", false
		}
	}
	return id, true
}

// safeSegment reports whether s is a non-empty key segment without glob
// characters, separators or spaces.
func safeSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}

// recorder captures an answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

func (r *recorder) replay(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body.Bytes())
}
