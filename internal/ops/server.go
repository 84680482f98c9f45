// Package ops is the HTTP server platform engineers watch the worker with:
// health checks, the original app's system endpoints (detailed health,
// Redis stats, Redis self-test) and Prometheus metrics.
package ops

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/invalidator/invalidator/cdc"
	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// Limits of the server.
const (
	maxBodyBytes   = 64 << 10
	maxHeaderBytes = 16 << 10
	// readHeaderBytes is what net/http reads before it answers a plain-text
	// 431 itself; between maxHeaderBytes and this, limitHeader answers the
	// JSON 431 every other error has.
	readHeaderBytes = http.DefaultMaxHeaderBytes
	checkTimeout    = 2 * time.Second
	// SelfTestPrefix is the key prefix of the Redis self-test; it touches no other key.
	SelfTestPrefix = "invalidator:selftest:"
	selfTestTTL    = 30 * time.Second
)

// Deps are what the endpoints report on.
type Deps struct {
	Redis    redis.UniversalClient
	NATS     *nats.Conn
	JS       jetstream.JetStream
	Worker   *worker.Worker
	Gatherer prometheus.Gatherer
	// Sweeps, when set, reports the shared SCAN walk of each Redis node,
	// for /api/v3/system/sweeps.
	Sweeps func() []sweep.Status
	// DeadLetters, when set, is the dead-letter stream /api/v3/system/dlq
	// reports on.
	DeadLetters *deadletter.Store
	// CDC, when set, reports an `invalidator cdc` runner: health checks
	// PostgreSQL through it, ready answers 503 "standby" while another
	// process holds the slot, and detailed health shows the slot, its lag
	// and the last commit. A process without Redis (cdc alone) leaves
	// Redis nil: its checks and endpoints are then left out.
	CDC func() cdc.Status
	// Generations, when set, says whether the engine advances the
	// generation guard and why, for /api/v3/system/health/detailed.
	Generations func() (on bool, why string)
	// Token, when set, guards /api/v3/... with "Authorization: Bearer <token>".
	Token string
	// ReadOnly refuses every mutating request with 405.
	ReadOnly bool
	// UI, when set, is the operator console, served under UIPrefix+"/ui/"
	// (UIPrefix is "" or a path like "/invalidator").
	UI       http.Handler
	UIPrefix string
	Logger   *slog.Logger
}

// Server is the ops HTTP server.
type Server struct {
	d    Deps
	http *http.Server
}

// New returns a server for addr (":8080", say).
func New(addr string, d Deps) *Server {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{d: d}
	s.http = &http.Server{
		Addr:              addr,
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    readHeaderBytes,
		ErrorLog:          slog.NewLogLogger(d.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler routes the endpoints, with panic recovery and body limits.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/health", only(http.MethodGet, s.health))
	mux.Handle("/health/ready", only(http.MethodGet, s.ready))
	mux.Handle("/health/live", only(http.MethodGet, s.live))
	mux.Handle("/metrics", only(http.MethodGet, s.metrics().ServeHTTP))
	mux.Handle("/api/v3/system/health/detailed", s.guard(only(http.MethodGet, s.detailed)))
	if s.d.Redis != nil {
		mux.Handle("/api/v3/system/redis/stats", s.guard(only(http.MethodGet, s.redisStats)))
		mux.Handle("/api/v3/system/redis/test", s.guard(only(http.MethodPost, s.redisTest)))
		mux.Handle("/api/v3/system/sweeps", s.guard(only(http.MethodGet, s.sweeps)))
		mux.Handle("/api/v3/system/dlq", s.guard(only(http.MethodGet, s.deadLetters)))
		mux.Handle("/api/v3/system/consistency", s.guard(only(http.MethodGet, s.consistency)))
	}
	mux.Handle("/api/v3/", s.guard(http.HandlerFunc(notFound)))
	mux.Handle("/", http.HandlerFunc(notFound))
	if s.d.UI != nil {
		mux.Handle(s.d.UIPrefix+"/ui/", s.d.UI)
		mux.Handle(s.d.UIPrefix+"/ui", http.RedirectHandler(s.d.UIPrefix+"/ui/", http.StatusMovedPermanently))
	}
	return s.recover(limitHeader(limitBody(s.readOnly(crossOrigin(mux)))))
}

// Run serves until ctx ends, then shuts down gracefully (at most 5 s).
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(ln) }()
	s.d.Logger.Info("✅ HTTP server listening", slog.String("addr", ln.Addr().String()))
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	<-errc
	return nil
}

// Listen opens the server's address.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.http.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on HTTP_ADDR %s: %w", s.http.Addr, err)
	}
	return ln, nil
}

func (s *Server) metrics() http.Handler {
	g := s.d.Gatherer
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.d.Logger.Handler(), slog.LevelWarn)})
}

// only allows one method (and HEAD with GET); others get 405 with a JSON error.
func only(method string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && (method != http.MethodGet || r.Method != http.MethodHead) {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+method)
			return
		}
		h(w, r)
	})
}

// readOnly answers 405 to every request but GET, HEAD and OPTIONS when
// the server is read-only.
func (s *Server) readOnly(h http.Handler) http.Handler {
	if !s.d.ReadOnly {
		return h
	}
	ui := s.d.UIPrefix + "/ui/"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet, r.Method == http.MethodHead, r.Method == http.MethodOptions:
			h.ServeHTTP(w, r)
		case s.d.UI != nil && strings.HasPrefix(r.URL.Path, ui):
			h.ServeHTTP(w, r) // the console checks its credentials first, then answers 405 itself
		default:
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "read-only (UI_READ_ONLY=true): "+r.Method+" not allowed")
		}
	})
}

// crossOrigin refuses, with 403, a mutating request a browser marks as
// cross-origin (Sec-Fetch-Site or Origin): the console's credentials go
// with every request a browser sends, wherever the page that sent it.
func crossOrigin(h http.Handler) http.Handler {
	p := http.NewCrossOriginProtection()
	p.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
	}))
	return p.Handler(h)
}

// guard requires the bearer token when one is configured, compared in constant time.
func (s *Server) guard(h http.Handler) http.Handler {
	if s.d.Token == "" {
		return h
	}
	want := []byte(s.d.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		// The scheme is case-insensitive (RFC 9110, section 11.1).
		ok := strings.EqualFold(scheme, "Bearer")
		if subtle.ConstantTimeCompare([]byte(strings.TrimLeft(cred, " ")), want) != 1 || !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="invalidator"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// limitHeader refuses a request whose header is over maxHeaderBytes with a
// JSON 431.
func limitHeader(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if headerBytes(r) > maxHeaderBytes {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("request header over %d bytes", maxHeaderBytes))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// headerBytes is about the size of r's request line and header on the wire.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4 + len("Host: \r\n") + len(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// limitBody refuses bodies over maxBodyBytes with 413. A body of unknown
// length (chunked) is read up front, since no handler reads its body and the
// limit would otherwise never be hit.
func limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxBodyBytes {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxBodyBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		if r.ContentLength < 0 {
			b, err := io.ReadAll(r.Body)
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxBodyBytes))
				return
			case err != nil:
				writeError(w, http.StatusBadRequest, "could not read the request body")
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		h.ServeHTTP(w, r)
	})
}

// recover turns a panic into a 500 with a JSON error; the panic value is
// logged through the redacting logger, never sent to the client.
func (s *Server) recover(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.d.Logger.Error("❌ HTTP handler panicked", slog.String("path", r.URL.Path), slog.Any("panic", fmt.Sprint(v)))
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"error": msg, "status": code})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// shortError is a one-line error for a response: no URLs, no credentials.
func shortError(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected):
		return "disconnected"
	}
	var op *net.OpError
	if errors.As(err, &op) {
		if op.Err != nil {
			return op.Op + ": " + trimSyscall(op.Err.Error())
		}
		return op.Op + " failed"
	}
	msg := err.Error()
	if i := strings.Index(msg, "://"); i >= 0 {
		return "error"
	}
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return msg
}

func trimSyscall(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}
