// Package console is the operator console: HTML pages under /ui/ of the
// ops HTTP server, with live charts fed by one Server-Sent Events stream
// per page, the dead letters with Replay and Purge, the rules with an
// Explain form, and a key purge. Its assets are embedded; it makes no
// request outside its origin.
//
// It holds no logic of its own: dead letters go through package
// deadletter (as `invalidator dlq` does), Explain through package
// explain (as `invalidator rules explain`), a purge through
// engine.ParseJob and the worker's engine (as `invalidator purge`), and
// the health and rates come from the ops server and the worker.
package console

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"github.com/invalidator/invalidator/consistency"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/internal/ops"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
)

//go:embed assets templates
var files embed.FS

// Config is how the console is served.
type Config struct {
	// Prefix is "" or a path like "/invalidator": the console is then at
	// Prefix+"/ui/", behind a proxy that strips nothing.
	Prefix string
	// Token, when set, is the password of the HTTP basic authentication
	// every page, asset and stream needs (any user name). Without it the
	// console is read-only: anyone who reaches the port could act.
	Token string
	// ReadOnly shows no actions and answers 405 to every mutating request.
	ReadOnly bool
	// ScanBudget is SCAN_BUDGET, shown with the sweeps. Defaults to 0
	// (unlimited).
	ScanBudget int
	// RulesPath is the rules file the worker loaded, shown on the rules
	// page.
	RulesPath string
}

// Engine is the worker's engine, as a purge uses it.
type Engine interface {
	engine.Engine
	Sweeps() []sweep.Status
	Preview(ctx context.Context, job engine.Job, fn func(key string)) (engine.Result, error)
}

// Deps are what the console shows and acts through. Any may be nil; the
// console then shows that part as unavailable.
type Deps struct {
	// Health checks Redis and NATS (the ops server's Health).
	Health func(ctx context.Context) ops.Health
	// Stats returns the worker's running totals.
	Stats func() worker.Stats
	// Consumer returns the durable consumer, nil before setup.
	Consumer func() jetstream.Consumer
	// Letters is the dead-letter stream.
	Letters *deadletter.Store
	// Rules are the rules the worker runs with; Replay checks letters
	// against them, and Explain plans with them.
	Rules *cachekeys.Rules
	// Engine removes keys for a purge and reports the sweeps.
	Engine Engine
	// Warming reports the warmer, nil when the rules warm nothing.
	Warming func() Warming
	// Consistency reports the consistency checker, nil when it is off.
	Consistency func() consistency.Report
	Logger      *slog.Logger
}

// Warming is the warmer's state for the overview.
type Warming struct {
	// Outcomes counts warm requests by outcome.
	Outcomes map[string]int64 `json:"outcomes"`
	// OpenBreakers lists the hosts whose breaker is open.
	OpenBreakers []string `json:"open_breakers"`
}

// Console serves the pages. Create it with New; Run feeds its live data.
type Console struct {
	cfg   Config
	d     Deps
	base  string // Prefix + "/ui/"
	rules []byte // the rules file as loaded
	pages map[string]*template.Template

	letters *deadletter.Pager // nil without Deps.Letters
	live    *live
	purge   *purgeJob
	running chan struct{} // closed when Run starts
	stopped chan struct{} // closed when Run returns
	mu      sync.Mutex
	runCtx  context.Context
	jobs    sync.WaitGroup
}

// New returns the console; rules is the rules file's text.
func New(cfg Config, d Deps, rules []byte) (*Console, error) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{cfg: cfg, d: d, base: cfg.Prefix + "/ui/", rules: rules,
		live: newLive(), purge: &purgeJob{}, running: make(chan struct{}), stopped: make(chan struct{})}
	if cfg.Token == "" {
		c.cfg.ReadOnly = true
	}
	if d.Letters != nil {
		c.letters = deadletter.NewPager(d.Letters)
	}
	var err error
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	return c, nil
}

// ReadOnly reports whether the console refuses actions: UI_READ_ONLY, or
// no token.
func (c *Console) ReadOnly() bool { return c.cfg.ReadOnly }

// Run samples the live data every second until ctx ends, then waits for
// a purge in progress to stop. The pages work without it, but show no
// rates, and a purge does not start.
func (c *Console) Run(ctx context.Context) error {
	c.mu.Lock()
	c.runCtx = ctx
	c.mu.Unlock()
	close(c.running)
	defer close(c.stopped)
	defer c.jobs.Wait()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	c.sample(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			c.sample(ctx)
		}
	}
}

// Handler serves the console under Prefix+"/ui/": security headers on
// every answer, then the basic authentication, the cross-origin check
// and the read-only check, then the pages.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	b := c.base
	mux.HandleFunc("GET "+b+"{$}", c.overview)
	mux.HandleFunc("GET "+b+"sweeps", c.sweeps)
	mux.HandleFunc("GET "+b+"dlq", c.dlqList)
	mux.HandleFunc("GET "+b+"dlq/{seq}", c.dlqShow)
	mux.HandleFunc("POST "+b+"dlq/action", c.dlqAction)
	mux.HandleFunc("GET "+b+"rules", c.rulesPage)
	mux.HandleFunc("GET "+b+"purge", c.purgePage)
	mux.HandleFunc("POST "+b+"purge", c.purgeAction)
	mux.HandleFunc("GET "+b+"events", c.events)
	mux.HandleFunc("GET "+b+"poll", c.poll)
	assets, _ := fs.Sub(files, "assets")
	mux.Handle("GET "+b+"assets/", http.StripPrefix(b+"assets/", http.FileServerFS(assets)))
	mux.HandleFunc(b, c.notFound)
	return secure(c.auth(crossOrigin(c.readOnly(mux))))
}

// csp is the Content-Security-Policy of every answer: nothing inline, no
// eval, nothing from another origin, no framing.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// auth asks for HTTP basic authentication with the token as the password
// (any user name), compared in constant time.
func (c *Console) auth(h http.Handler) http.Handler {
	if c.cfg.Token == "" {
		return h
	}
	want := []byte(c.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pw, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(pw), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="invalidator console", charset="UTF-8"`)
			http.Error(w, "401 unauthorized: the console needs the ops token as the password", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// crossOrigin refuses, with 403, a mutating request that a browser marks
// as cross-origin: the basic-auth credentials go with every request the
// browser sends, whichever page sent it.
func crossOrigin(h http.Handler) http.Handler {
	p := http.NewCrossOriginProtection()
	p.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "403 forbidden: cross-origin request", http.StatusForbidden)
	}))
	return p.Handler(h)
}

// readOnly answers 405 to every request but GET and HEAD when the console
// is read-only.
func (c *Console) readOnly(h http.Handler) http.Handler {
	if !c.cfg.ReadOnly {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "405 method not allowed: the console is read-only", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// runContext is Run's context, or an error when Run is not running.
func (c *Console) runContext() (context.Context, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.stopped:
		return nil, errNotRunning
	default:
	}
	if c.runCtx == nil {
		return nil, errNotRunning
	}
	return c.runCtx, nil
}

var errNotRunning = errors.New("the console is not running (the server is stopping)")

// isKind reports whether s names a kind of reason.
func isKind(s string) bool {
	switch deadletter.Kind(s) {
	case deadletter.Malformed, deadletter.Rejected, deadletter.Failed, deadletter.Unknown:
		return true
	}
	return false
}

func trimLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
