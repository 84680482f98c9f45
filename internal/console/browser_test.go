package console_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// chromium is Debian's browser, which the browser tests drive.
const chromium = "/usr/bin/chromium"

// rulesV1 dead-letters an order event that names its order "id"; rulesV2
// is the fix.
const (
	rulesV1 = `rules:
  - on: events.course.*
    invalidate:
      - cache:course_analytics:{course_id}
      - cache:course_analytics:{course_id}:*
  - on: events.order.paid
    invalidate:
      - cache:order:{order_id}
`
	rulesV2 = `rules:
  - on: events.course.*
    invalidate:
      - cache:course_analytics:{course_id}
      - cache:course_analytics:{course_id}:*
  - on: events.order.paid
    invalidate:
      - cache:order:{id}
`
)

// needChromium skips the test without chromium, and fails it on CI.
func needChromium(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("browser tests are off in -short")
	}
	if _, err := exec.LookPath(chromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s is missing: install it (apt-get install -y chromium)", chromium)
		}
		t.Skipf("%s is missing, so the browser tests are skipped: apt-get install -y chromium", chromium)
	}
}

// stack is a real Redis, a real NATS, a rules file and the worker binary.
type stack struct {
	rdb      *redis.Client
	js       jetstream.JetStream
	letters  *deadletter.Store
	rules    string
	env      []string
	base     string // http://127.0.0.1:port/prefix/ui/
	origin   string
	worker   *testproc.Proc
	httpAddr string
}

func newStack(t *testing.T, rules string, extra ...string) *stack {
	t.Helper()
	r := testserver.Redis(t)
	ns := testserver.NATS(t)
	_, js := testserver.JetStream(t, ns)
	s := &stack{rdb: testserver.RedisClient(t, r), js: js, rules: filepath.Join(t.TempDir(), "rules.yaml"),
		letters: deadletter.NewStore(js, worker.DefaultDeadLetterStream, worker.DefaultDeadLetterPrefix)}
	if err := os.WriteFile(s.rules, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s.httpAddr = fmt.Sprintf("127.0.0.1:%d", port)
	s.origin = "http://" + s.httpAddr
	prefix := ""
	for _, e := range extra {
		if p, ok := strings.CutPrefix(e, "UI_PATH_PREFIX="); ok {
			prefix = p
		}
	}
	s.base = s.origin + prefix + "/ui/"
	s.env = append([]string{"REDIS_URL=" + r.URL(), "NATS_URL=" + ns.ClientURL(), "INVALIDATOR_RULES=" + s.rules,
		"HTTP_ADDR=" + s.httpAddr, "OPS_TOKEN=" + token, "LOG_FORMAT=json"}, extra...)
	s.start(t)
	return s
}

func (s *stack) start(t *testing.T) {
	t.Helper()
	s.worker = testproc.Runner{StderrTail: 4000}.Start(t, s.env, "run")
	s.worker.WaitLog(t, "worker started", 30*time.Second)
	s.worker.WaitLog(t, "HTTP server listening", 30*time.Second)
}

// restart stops the worker and starts it again on the rules given.
func (s *stack) restart(t *testing.T, rules string) {
	t.Helper()
	if code := s.worker.Stop(t, 30*time.Second); code != 0 {
		t.Fatalf("worker exit code %d on SIGTERM", code)
	}
	if err := os.WriteFile(s.rules, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	s.start(t)
}

func (s *stack) publish(t *testing.T, subject, data string) {
	t.Helper()
	if _, err := s.js.Publish(context.Background(), subject, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

// letterCount waits until the dead-letter stream holds want letters.
func (s *stack) waitLetters(t *testing.T, want uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := s.letters.Count(context.Background())
		if err == nil && n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %d (%v), want %d", n, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// browser is one headless chromium tab on the console, which records CSP
// violations (a listener installed before any page loads), console
// messages and every request's URL.
type browser struct {
	ctx      context.Context
	mu       sync.Mutex
	console  []string
	requests []string
	wg       sync.WaitGroup
}

func newBrowser(t *testing.T, authorized bool) *browser {
	t.Helper()
	needChromium(t)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.UserDataDir(t.TempDir()))...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{ctx: ctx}
	t.Cleanup(func() {
		_ = chromedp.Cancel(ctx)
		cancel()
		cancelAlloc()
		b.wg.Wait()
	})
	msgs := chromedp.Console(ctx)
	reqs := chromedp.Events(ctx, network.RequestWillBeSent)
	b.wg.Go(func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() || m.Type == chromedp.ConsoleWarning {
				b.mu.Lock()
				b.console = append(b.console, fmt.Sprintf("%s %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1))
				b.mu.Unlock()
			}
		}
	})
	b.wg.Go(func() {
		for ev, err := range reqs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.requests = append(b.requests, ev.Request.URL)
			b.mu.Unlock()
		}
	})
	headers := network.Headers{}
	if authorized {
		headers["Authorization"] = "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:"+token))
	}
	err := chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: headers}); err != nil {
				return err
			}
			_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
				Source: `window.__csp = []; document.addEventListener("securitypolicyviolation", function (e) { window.__csp.push(e.violatedDirective + " " + e.blockedURI); });`})
			return err
		}),
		chromedp.EmulateViewport(1280, 800))
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

func (b *browser) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// poll waits until the expression is true in the page.
func (b *browser) poll(t *testing.T, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr)); err != nil {
		t.Fatalf("waiting for %s: %v", expr, err)
	}
}

func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func evaluate[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// clean checks the page now shown: no CSP violation since it loaded, no
// console error or warning, and no request to another origin so far.
func (b *browser) clean(t *testing.T, origin string) {
	t.Helper()
	if v := evaluate[[]string](t, b, "window.__csp || ['no listener']"); len(v) > 0 {
		t.Errorf("CSP violations: %q", v)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.console) > 0 {
		t.Errorf("console: %q", b.console)
	}
	for _, u := range b.requests {
		if !strings.HasPrefix(u, origin+"/") {
			t.Errorf("a request left the origin %s: %s", origin, u)
		}
	}
}

// screenshot saves the page in light and dark to docs/ui/<name>-light.png
// and <name>-dark.png.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := filepath.Join("..", "..", "docs", "ui")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, scheme := range []string{"light", "dark"} {
		b.do(t, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
			return err
		}))
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		cancel()
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+scheme+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The console in a real browser against a real worker: the counter moves
// with the events, Explain names course 42's keys, a selected letter is
// purged after Confirm, a letter rejected by the rules is replayed from the
// page once the rules are fixed; every screen in light and dark, with no
// CSP violation, no console error and no request off the origin.
func TestBrowserConsole(t *testing.T) {
	needChromium(t)
	s := newStack(t, rulesV1)
	b := newBrowser(t, true)
	ctx := context.Background()

	// The overview's counter moves after events are published.
	b.do(t, chromedp.Navigate(s.base))
	b.poll(t, `document.getElementById("live").textContent === "live"`)
	before := b.text(t, "#events-applied")
	for i := range 3 {
		s.publish(t, "events.course.updated", fmt.Sprintf(`{"course_id":"%d"}`, 40+i))
	}
	b.poll(t, `Number(document.getElementById("events-applied").textContent) >= 3`)
	if before != "0" {
		t.Errorf("counter before the events %q, want 0", before)
	}
	b.clean(t, s.origin)
	b.screenshot(t, "overview")
	b.do(t, chromedp.EmulateViewport(390, 844))
	b.screenshot(t, "overview-phone")
	b.do(t, chromedp.EmulateViewport(1280, 800))

	// Explain shows course 42's keys.
	b.do(t, chromedp.Navigate(s.base+"rules"),
		chromedp.SendKeys(chromedp.ID("subject"), "events.course.updated"),
		chromedp.SendKeys(chromedp.ID("data"), `{"course_id": "42"}`),
		chromedp.Click(chromedp.ID("explain")),
		chromedp.WaitVisible(chromedp.ID("explain-result")))
	if got := b.text(t, "#explain-result"); !strings.Contains(got, "exact   cache:course_analytics:42\n") ||
		!strings.Contains(got, "pattern cache:course_analytics:42:*") {
		t.Errorf("Explain shows %q", got)
	}
	b.clean(t, s.origin)
	b.screenshot(t, "rules")

	// Two letters: an order event the rules reject (fixed below), and one
	// with a glob value, purged from the page.
	if err := s.rdb.Set(ctx, "cache:order:7", "cached", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.publish(t, "events.order.paid", `{"id":"7"}`)
	s.waitLetters(t, 1)
	s.publish(t, "events.course.updated", `{"course_id":"*"}`)
	s.waitLetters(t, 2)
	var orderSeq, globSeq uint64
	_ = s.letters.List(ctx, deadletter.Filter{}, func(l deadletter.Letter) error {
		if l.Subject == "events.order.paid" {
			orderSeq = l.Seq
		} else {
			globSeq = l.Seq
		}
		return nil
	})

	b.do(t, chromedp.Navigate(s.base+"dlq"), chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf("#letter-%d", globSeq))))
	if got := b.text(t, "#dlq-matched"); got != "2" {
		t.Errorf("the list counts %q letters, want 2", got)
	}
	b.clean(t, s.origin)
	b.screenshot(t, "dlq")
	b.do(t, chromedp.Navigate(fmt.Sprintf("%sdlq/%d", s.base, orderSeq)), chromedp.WaitVisible(chromedp.ID("letter-body")))
	b.clean(t, s.origin)
	b.screenshot(t, "letter")

	// Purge: the selected letter goes after Confirm; the other stays.
	b.do(t, chromedp.Navigate(s.base+"dlq"),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`input[name=seq][value="%d"]`, globSeq))),
		chromedp.Click(chromedp.ID("purge-selected")),
		chromedp.WaitVisible(chromedp.ID("confirm")))
	if got := b.text(t, "h1"); got != "Purge 1 letter?" {
		t.Errorf("confirmation %q", got)
	}
	b.screenshot(t, "confirm")
	if _, err := s.letters.Get(ctx, globSeq); err != nil {
		t.Fatalf("the letter is gone before Confirm: %v", err)
	}
	b.do(t, chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("result-summary")))
	if got := b.text(t, "#result-summary"); !strings.HasPrefix(got, "Deleted 1 letter") {
		t.Errorf("result %q", got)
	}
	if _, err := s.letters.Get(ctx, globSeq); !errors.Is(err, deadletter.ErrNoLetter) {
		t.Errorf("the purged letter: %v, want ErrNoLetter", err)
	}
	if _, err := s.letters.Get(ctx, orderSeq); err != nil {
		t.Errorf("the other letter went too: %v", err)
	}
	b.clean(t, s.origin)

	// Replay after a fix: the rules are fixed, the worker restarted, the
	// letter replayed from the page; its key is gone, and so is the letter.
	// The browser waits on about:blank, a page without an event stream,
	// while the server is down, so no stream retries against the stopped
	// server and logs a connection error.
	b.do(t, chromedp.Navigate("about:blank"))
	s.restart(t, rulesV2)
	b.do(t, chromedp.Navigate(s.base+"dlq"),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#letter-%d button[value="replay:%d"]`, orderSeq, orderSeq))),
		chromedp.WaitVisible(chromedp.ID("confirm")))
	if got := b.text(t, "h1"); got != "Replay 1 letter?" {
		t.Errorf("confirmation %q", got)
	}
	b.do(t, chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("result-summary")))
	if got := b.text(t, "#result-summary"); !strings.HasPrefix(got, "Replayed 1, kept 0, failed 0") {
		t.Errorf("result %q", got)
	}
	waitFor(t, "cache:order:7 to go", func() bool { return s.rdb.Exists(ctx, "cache:order:7").Val() == 0 })
	s.waitLetters(t, 0)
	b.clean(t, s.origin)

	// The other screens.
	b.do(t, chromedp.Navigate(s.base+"sweeps"), chromedp.WaitVisible(chromedp.ID("sweeps-table")))
	b.clean(t, s.origin)
	b.screenshot(t, "sweeps")

	if err := s.rdb.Set(ctx, "cache:course_analytics:9:a", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	b.do(t, chromedp.Navigate(s.base+"purge"),
		chromedp.SendKeys(chromedp.ID("patterns"), "cache:course_analytics:9:*"),
		chromedp.Click(chromedp.ID("count")),
		chromedp.WaitVisible(chromedp.ID("confirm")))
	if got := b.text(t, "h1"); got != "Purge 1 key?" {
		t.Errorf("dry run %q", got)
	}
	b.do(t, chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("purge-progress")))
	b.poll(t, `document.getElementById("purge-state").textContent.startsWith("removed 1 ")`)
	if s.rdb.Exists(ctx, "cache:course_analytics:9:a").Val() != 0 {
		t.Error("the purged key is still there")
	}
	b.clean(t, s.origin)
	b.screenshot(t, "purge")
}

// Read-only, under a path prefix: no action button on any screen, and a
// POST forged from the page fails; without credentials, 401.
func TestBrowserReadOnly(t *testing.T) {
	needChromium(t)
	s := newStack(t, rulesV1, "UI_READ_ONLY=true", "UI_PATH_PREFIX=/ops/invalidator")
	s.publish(t, "events.order.paid", `{"id":"7"}`)
	s.waitLetters(t, 1)
	b := newBrowser(t, true)
	for _, p := range []string{"", "sweeps", "dlq", "dlq/1", "rules", "purge"} {
		b.do(t, chromedp.Navigate(s.base+p), chromedp.WaitVisible(chromedp.ID("read-only")))
		labels := evaluate[[]string](t, b, `Array.from(document.querySelectorAll("button")).map(function (b) { return b.textContent.trim(); })`)
		for _, l := range labels {
			if l != "Explain" && l != "Filter" {
				t.Errorf("%s shows the button %q in read-only mode", p, l)
			}
		}
		b.clean(t, s.origin)
	}
	status := evaluate[int](t, b, `fetch(document.body.dataset.base + "dlq/action", {method: "POST", body: new URLSearchParams({do: "purge:1", confirm: "yes"})}).then(function (r) { return r.status; })`)
	if status != 405 {
		t.Errorf("forged POST: %d, want 405", status)
	}
	s.waitLetters(t, 1)

	anon := newBrowser(t, false)
	ctx, cancel := context.WithTimeout(anon.ctx, 30*time.Second)
	defer cancel()
	// Headless chromium answers a 401 with an auth challenge by failing
	// the load, as it has no dialog to ask with.
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(s.base))
	var le *chromedp.LoadError
	switch {
	case errors.As(err, &le) && strings.Contains(le.ErrorText, "AUTH"):
	case err == nil && resp.Status == 401:
	default:
		t.Errorf("without credentials: %v %v, want a 401", resp, err)
	}
}

// With the event stream blocked, the page falls back to polling, and the
// counter still moves.
func TestBrowserPollingFallback(t *testing.T) {
	needChromium(t)
	s := newStack(t, rulesV1)
	b := newBrowser(t, true)
	b.do(t, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Call(ctx, network.SetBlockedURLs, network.SetBlockedURLsParams{
			URLPatterns: []*network.BlockPattern{{URLPattern: s.base + "events*", Block: true}}})
		return err
	}), chromedp.Navigate(s.base))
	b.poll(t, `document.getElementById("live").textContent === "live (polling)"`)
	for i := range 2 {
		s.publish(t, "events.course.updated", fmt.Sprintf(`{"course_id":"%d"}`, i))
	}
	b.poll(t, `Number(document.getElementById("events-applied").textContent) >= 2`)
	if v := evaluate[[]string](t, b, "window.__csp || ['no listener']"); len(v) > 0 {
		t.Errorf("CSP violations: %q", v)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	polled := false
	for _, u := range b.requests {
		polled = polled || u == s.base+"poll"
	}
	if !polled {
		t.Errorf("no request to %spoll in %q", s.base, b.requests)
	}
}
