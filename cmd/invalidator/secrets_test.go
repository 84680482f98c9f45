package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The secrets of the secrets test: none may appear in any output.
const (
	redisPassword = "r3dis-Pa55word"
	natsPassword  = "n4ts-Pa55word"
	opsToken      = "0ps-T0ken-value"
	warmSecret    = "w4rm-S3cret-value"
)

// transcript collects everything the outside world saw: response bodies
// and headers, and the process's output.
type transcript struct {
	mu  sync.Mutex
	out strings.Builder
}

func (tr *transcript) add(format string, a ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	fmt.Fprintf(&tr.out, format+"\n", a...)
}

func (tr *transcript) request(t *testing.T, method, u, token string) int {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	tr.add("%s %s -> %d %v\n%s", method, u, resp.StatusCode, resp.Header, body)
	return resp.StatusCode
}

// The worker runs against a Redis with requirepass and a NATS server with
// user and password, with an ops token and a warm header from the
// environment. Every endpoint is driven, an event is applied, Redis is
// stopped and restarted, and then a second process starts with wrong
// passwords. No secret appears in any log line, response or error.
func TestNoSecretInAnyOutput(t *testing.T) {
	for _, format := range []string{"json", "pretty"} {
		t.Run(format, func(t *testing.T) { secretsScenario(t, format) })
	}
}

func secretsScenario(t *testing.T, format string) {
	r := testserver.Redis(t, testserver.WithPassword(redisPassword), testserver.WithAOF())
	rdb := testserver.RedisClient(t, r)
	ns := testserver.NATSWith(t, servers.NATSOptions{Username: "svc", Password: natsPassword})
	natsURL := fmt.Sprintf("nats://svc:%s@%s", natsPassword, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	var tr transcript

	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != warmSecret {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"warm": true}`)
	}))
	t.Cleanup(src.Close)
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, fmt.Appendf(nil, `
rules:
  - on: events.course.*
    invalidate: ["cache:course_analytics:{course_id}", "cache:course_analytics:{course_id}:*"]
    warm:
      - key: cache:course_analytics:{course_id}
        from: %s/courses/{course_id}
        ttl: 60s
        headers_from_env: {Authorization: WARM_AUTH}
`, src.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	base := "http://" + httpAddr
	environ := []string{
		"REDIS_URL=" + r.URL(), "NATS_URL=" + natsURL, "OPS_TOKEN=" + opsToken, "WARM_AUTH=" + warmSecret,
		"INVALIDATOR_RULES=" + rules, "HTTP_ADDR=" + httpAddr, "LOG_LEVEL=debug", "LOG_FORMAT=" + format,
		"SHUTDOWN_TIMEOUT=10s", "REDIS_SOCKET_TIMEOUT=1s", "REDIS_SOCKET_CONNECT_TIMEOUT=1s",
	}
	p := testproc.Start(t, environ, "run")
	p.WaitLog(t, "worker started", 30*time.Second)

	// An invalidation, and the warm that follows it.
	if err := rdb.Set(context.Background(), "cache:course_analytics:9", "old", 0).Err(); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	pub, _ := events.NewPublisher(js)
	if _, err := pub.Publish(context.Background(), "events.course.updated", map[string]any{"course_id": "9"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "warmed value", 20*time.Second, func() bool {
		v, _ := rdb.Get(context.Background(), "cache:course_analytics:9").Result()
		return v == `{"warm": true}`
	})

	// Every endpoint, with and without the token.
	for _, path := range []string{"/health", "/health/live", "/health/ready", "/metrics", "/nope"} {
		tr.request(t, http.MethodGet, base+path, "")
	}
	for _, path := range []string{"/api/v3/system/health/detailed", "/api/v3/system/redis/stats"} {
		if code := tr.request(t, http.MethodGet, base+path, opsToken); code != http.StatusOK {
			t.Errorf("GET %s with the token: %d", path, code)
		}
		if code := tr.request(t, http.MethodGet, base+path, "wrong"); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d", path, code)
		}
	}
	tr.request(t, http.MethodPost, base+"/api/v3/system/redis/test", opsToken)
	tr.request(t, http.MethodGet, base+"/api/v3/system/redis/test", opsToken)

	// A connection failure: Redis goes away, and the endpoints say so.
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "unhealthy", 20*time.Second, func() bool {
		return tr.request(t, http.MethodGet, base+"/health", "") == http.StatusServiceUnavailable
	})
	tr.request(t, http.MethodGet, base+"/api/v3/system/health/detailed", opsToken)
	tr.request(t, http.MethodGet, base+"/api/v3/system/redis/stats", opsToken)
	tr.request(t, http.MethodPost, base+"/api/v3/system/redis/test", opsToken)
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy again", 20*time.Second, func() bool {
		return tr.request(t, http.MethodGet, base+"/health", "") == http.StatusOK
	})
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, 30*time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	tr.add("stdout:\n%s\nstderr:\n%s", p.Stdout, p.Stderr)

	// Wrong passwords, one server at a time: the process stops with an
	// error that must not echo them either.
	wrongRedis := strings.Replace(r.URL(), redisPassword, redisPassword+"-wrong", 1)
	wrongNATS := strings.Replace(natsURL, natsPassword, natsPassword+"-wrong", 1)
	for _, wrong := range [][2]string{{"REDIS_URL=" + wrongRedis, environ[1]}, {environ[0], "NATS_URL=" + wrongNATS}} {
		bad := append([]string(nil), environ...)
		bad[0], bad[1] = wrong[0], wrong[1]
		q := testproc.Start(t, bad, "run")
		if code := q.Wait(t, 30*time.Second); code != exitFailure {
			t.Errorf("wrong password: exit code %d, want %d", code, exitFailure)
		}
		tr.add("stdout:\n%s\nstderr:\n%s", q.Stdout, q.Stderr)
	}

	all := tr.out.String()
	if !strings.Contains(all, "unhealthy") || !strings.Contains(all, "worker started") ||
		!strings.Contains(all, "password refused by Redis") || !strings.Contains(all, "credentials refused by NATS") {
		t.Fatalf("the transcript misses what the test drove:\n%s", all)
	}
	for _, s := range []string{redisPassword, natsPassword, opsToken, warmSecret} {
		for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s)} {
			if strings.Contains(all, form) {
				i := strings.Index(all, form)
				t.Errorf("secret %q appears in the output: ...%s...", s, all[max(0, i-200):min(len(all), i+100)])
			}
		}
	}
}
