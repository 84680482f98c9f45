package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Route is one cached GET endpoint.
type Route struct {
	// Pattern is the path, with at most one {name} segment:
	// "/api/v3/analytics/courses/{id}".
	Pattern string
	// Key is the cache key of the answer, with Pattern's {name} where its
	// value goes: "cache:course_analytics:{id}". A Pattern without a
	// {name} segment has a Key without one. The Cache's WithPrefix comes
	// before it.
	Key string
	// TTL is how long a response stays cached, at most 24 h.
	TTL time.Duration
}

// check reports what is wrong with rt, wrapping ErrInvalidOption.
func (rt Route) check() error {
	name := ""
	for _, p := range strings.Split(rt.Pattern, "/") {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			if name != "" {
				return fmt.Errorf("%w: route %q has more than one {name} segment", ErrInvalidOption, rt.Pattern)
			}
			name = p
		}
	}
	switch {
	case !strings.HasPrefix(rt.Pattern, "/"):
		return fmt.Errorf("%w: route pattern %q does not start with /", ErrInvalidOption, rt.Pattern)
	case name != "" && strings.Count(rt.Key, name) != 1:
		return fmt.Errorf("%w: route %q: key %q must hold %s once", ErrInvalidOption, rt.Pattern, rt.Key, name)
	case name == "" && strings.ContainsAny(rt.Key, "{}"):
		return fmt.Errorf("%w: route %q has no {name} segment, but key %q has one", ErrInvalidOption, rt.Pattern, rt.Key)
	case strings.ContainsAny(strings.ReplaceAll(rt.Key, name, ""), "*?[]\\ "):
		return fmt.Errorf("%w: route %q: key %q holds glob characters or spaces", ErrInvalidOption, rt.Pattern, rt.Key)
	}
	return checkTTL(rt.TTL)
}

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
// through uncached. Answers carry X-Cache: HIT or MISS. A route that
// Route's documentation refuses is an error wrapping ErrInvalidOption (or
// ErrInvalidTTL).
func Middleware(c *Cache, routes ...Route) (func(http.Handler) http.Handler, error) {
	for _, rt := range routes {
		if err := rt.check(); err != nil {
			return nil, err
		}
	}
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
	}, nil
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
		if name, value, ok := matchPath(rt.Pattern, r.URL.Path); ok {
			return strings.Replace(rt.Key, name, value, 1), rt.TTL, true
		}
	}
	return "", 0, false
}

// matchPath matches path against pattern and returns its {name} segment
// and the value path has there ("" for a pattern without one).
func matchPath(pattern, path string) (name, value string, ok bool) {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return "", "", false
	}
	for i, p := range ps {
		switch {
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}"):
			if !safeSegment(xs[i]) {
				return "", "", false
			}
			name, value = p, xs[i]
		case p != xs[i]:
			return "", "", false
		}
	}
	return name, value, true
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
