package console_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/console"
	"github.com/invalidator/invalidator/internal/ops"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines and removes the worker's build.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		testproc.Cleanup()
		os.Exit(code)
	}))
}

const token = "s3cret-token"

// rig is a console over a real NATS dead-letter stream with one letter,
// a real Redis engine and the example rules.
type rig struct {
	c      *console.Console
	h      http.Handler
	letter uint64
	base   string
}

func newRig(t *testing.T, cfg console.Config) *rig {
	t.Helper()
	return newRigWith(t, cfg, nil)
}

// newRigWith is newRig with deps changed by mod (nil: none).
func newRigWith(t *testing.T, cfg console.Config, mod func(*console.Deps)) *rig {
	t.Helper()
	_, js := testserver.JetStream(t, testserver.NATS(t))
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS_DLQ", Subjects: []string{"dlq.>"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.PublishMsg(ctx, deadletter.Encode("dlq", deadletter.Event{Subject: "events.course.updated", Body: []byte(`{"course_id":"*"}`),
		Header: nats.Header{}, StreamSeq: 3, Deliveries: 1, Stream: "EVENTS"}, deadletter.Rejected, errors.New("rejected: a glob")))
	if err != nil {
		t.Fatal(err)
	}
	rdb := testserver.RedisClient(t, testserver.Redis(t))
	eng, err := engine.NewRedis(rdb, engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	rules, err := cachekeys.Load("../../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile("../../testdata/rules.yaml")
	cfg.RulesPath = "testdata/rules.yaml"
	d := console.Deps{Letters: deadletter.NewStore(js, "EVENTS_DLQ", "dlq"), Rules: rules, Engine: eng,
		Health: func(context.Context) ops.Health { return ops.Health{Redis: "ok", NATS: "ok"} }}
	if mod != nil {
		mod(&d)
	}
	c, err := console.New(cfg, d, text)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{c: c, h: c.Handler(), letter: ack.Sequence, base: cfg.Prefix + "/ui/"}
}

type route struct {
	method, path string
	form         url.Values
	want         string // in the body of a 200
}

func (r *rig) routes() []route {
	seq := strconv.FormatUint(r.letter, 10)
	return []route{
		{"GET", "", nil, "Events applied"},
		{"GET", "sweeps", nil, "SCAN_BUDGET"},
		{"GET", "dlq", nil, "1</strong> letter matches"},
		{"GET", "dlq?kind=rejected&subject=events.course.updated&q=glob", nil, "1</strong> letter matches"},
		{"GET", "dlq/" + seq, nil, "events.course.updated"},
		{"GET", "rules", nil, "Explain"},
		{"GET", "rules?subject=events.course.updated&data=%7B%22course_id%22%3A%2242%22%7D", nil, "cache:course_analytics:42"},
		{"GET", "purge", nil, "Purge"},
		{"GET", "poll", nil, `"series"`},
		{"GET", "assets/console.js", nil, "EventSource"},
		{"GET", "assets/vendor/uplot/uPlot.iife.min.js", nil, "uPlot"},
		{"POST", "dlq/action", url.Values{"do": {"purge:" + seq}}, "Purge 1 letter?"},
		{"POST", "dlq/action", url.Values{"do": {"replay:all"}, "kind": {"rejected"}}, "Replay 1 letter?"},
		{"POST", "purge", url.Values{"patterns": {"cache:course_analytics:*"}, "step": {"count"}}, "Purge 0 keys?"},
	}
}

func (r *rig) do(t *testing.T, rt route, mod func(*http.Request)) *httptest.ResponseRecorder {
	t.Helper()
	var req *http.Request
	if rt.method == "POST" {
		req = httptest.NewRequest("POST", "http://127.0.0.1"+r.base+rt.path, strings.NewReader(rt.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	} else {
		req = httptest.NewRequest("GET", "http://127.0.0.1"+r.base+rt.path, nil)
	}
	if mod != nil {
		mod(req)
	}
	w := httptest.NewRecorder()
	r.h.ServeHTTP(w, req)
	return w
}

func withToken(req *http.Request) { req.SetBasicAuth("anyone", token) }

func checkHeaders(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	csp := w.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-") {
		t.Errorf("CSP %q allows something unsafe", csp)
	}
	if w.Header().Get("X-Content-Type-Options") != "nosniff" || w.Header().Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("headers %v", w.Header())
	}
}

// Every route, with and without a prefix: 200 with the token, 401
// without or with a wrong one, 403 for a cross-origin POST; the security
// headers on every answer.
func TestRoutesAuthAndHeaders(t *testing.T) {
	for _, prefix := range []string{"", "/ops/invalidator"} {
		r := newRig(t, console.Config{Token: token, Prefix: prefix})
		for _, rt := range r.routes() {
			t.Run(prefix+" "+rt.method+" "+rt.path, func(t *testing.T) {
				w := r.do(t, rt, withToken)
				checkHeaders(t, w)
				if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), rt.want) {
					t.Fatalf("with the token: %d, want 200 with %q in\n%.2000s", w.Code, rt.want, w.Body)
				}
				if strings.HasSuffix(rt.path, ".js") && !strings.HasPrefix(w.Header().Get("Content-Type"), "text/javascript") {
					t.Errorf("content type %q", w.Header().Get("Content-Type"))
				}
				if strings.Contains(w.Body.String(), "<html") && !strings.Contains(w.Body.String(), `href="`+r.base+`assets/console.css"`) {
					t.Errorf("the page's assets are not under %s", r.base)
				}
				w = r.do(t, rt, nil)
				checkHeaders(t, w)
				if w.Code != http.StatusUnauthorized || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic ") {
					t.Errorf("without the token: %d %v, want 401 with WWW-Authenticate", w.Code, w.Header())
				}
				if w = r.do(t, rt, func(req *http.Request) { req.SetBasicAuth("anyone", token+"x") }); w.Code != http.StatusUnauthorized {
					t.Errorf("with a wrong token: %d, want 401", w.Code)
				}
				if rt.method != "POST" {
					return
				}
				w = r.do(t, rt, func(req *http.Request) { withToken(req); req.Header.Set("Sec-Fetch-Site", "cross-site") })
				checkHeaders(t, w)
				if w.Code != http.StatusForbidden {
					t.Errorf("cross-origin: %d, want 403", w.Code)
				}
				w = r.do(t, rt, func(req *http.Request) {
					withToken(req)
					req.Header.Del("Sec-Fetch-Site")
					req.Header.Set("Origin", "http://evil.example")
				})
				if w.Code != http.StatusForbidden {
					t.Errorf("cross-origin by Origin: %d, want 403", w.Code)
				}
			})
		}
		t.Run(prefix+" outside the prefix", func(t *testing.T) {
			req := httptest.NewRequest("GET", "http://127.0.0.1"+r.base+"nope", nil)
			withToken(req)
			w := httptest.NewRecorder()
			r.h.ServeHTTP(w, req)
			if w.Code != http.StatusNotFound {
				t.Errorf("unknown page: %d, want 404", w.Code)
			}
		})
	}
}

// Read-only: every GET still answers, with no action button; every POST
// gets 405, and so does one without a token configured.
func TestReadOnly(t *testing.T) {
	for name, cfg := range map[string]console.Config{"UI_READ_ONLY": {Token: token, ReadOnly: true}, "no token": {}} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, cfg)
			if !r.c.ReadOnly() {
				t.Fatal("not read-only")
			}
			for _, rt := range r.routes() {
				w := r.do(t, rt, withToken)
				checkHeaders(t, w)
				if rt.method == "POST" {
					if w.Code != http.StatusMethodNotAllowed {
						t.Errorf("%s %s: %d, want 405", rt.method, rt.path, w.Code)
					}
					continue
				}
				if w.Code != http.StatusOK {
					t.Errorf("%s %s: %d, want 200", rt.method, rt.path, w.Code)
				}
				if strings.Contains(w.Body.String(), "<button") && !strings.Contains(w.Body.String(), ">Explain</button>") &&
					!strings.Contains(w.Body.String(), ">Filter</button>") {
					t.Errorf("%s %s shows a button in read-only mode", rt.method, rt.path)
				}
				for _, label := range []string{">Replay<", ">Purge</button>", ">Confirm<", ">Count<"} {
					if strings.Contains(w.Body.String(), label) {
						t.Errorf("%s %s shows %s in read-only mode", rt.method, rt.path, label)
					}
				}
			}
		})
	}
}

// The stream sends a snapshot with the series at once, then one a second
// while Run samples, and ends when the client goes.
func TestEventStream(t *testing.T) {
	r := newRig(t, console.Config{Token: token})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.c.Run(ctx) }()
	srv := httptest.NewServer(r.h)
	defer srv.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	req, _ := http.NewRequestWithContext(rctx, "GET", srv.URL+"/ui/events", nil)
	withToken(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var datas []string
	for sc.Scan() && len(datas) < 3 {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			datas = append(datas, d)
		}
	}
	resp.Body.Close()
	if len(datas) < 3 || !strings.Contains(datas[0], `"series"`) || strings.Contains(datas[2], `"series"`) ||
		!strings.Contains(datas[2], `"health":{"redis":"ok"`) {
		t.Fatalf("events %q", datas)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Mounted on the ops server: under the prefix, with the API refusing
// mutations with 405 in read-only mode.
func TestMountedOnOpsServer(t *testing.T) {
	r := newRig(t, console.Config{Token: token, Prefix: "/invalidator", ReadOnly: true})
	h := ops.New("127.0.0.1:0", ops.Deps{UI: r.h, UIPrefix: "/invalidator", ReadOnly: true, Token: token}).Handler()
	tests := []struct {
		method, path string
		auth         func(*http.Request)
		want         int
	}{
		{"GET", "/invalidator/ui/rules", withToken, 200},
		{"GET", "/invalidator/ui/rules", nil, 401},
		{"GET", "/invalidator/ui", nil, 301},
		{"GET", "/ui/", withToken, 404},
		{"POST", "/invalidator/ui/purge", nil, 401},
		{"POST", "/invalidator/ui/purge", withToken, 405},
		{"POST", "/api/v3/system/redis/test", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, 405},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, "http://127.0.0.1"+tt.path, nil)
		if tt.auth != nil {
			tt.auth(req)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tt.want {
			t.Errorf("%s %s: %d, want %d: %s", tt.method, tt.path, w.Code, tt.want, w.Body)
		}
	}
}
