package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// banner returns the copy-paste lines dev printed: the indented lines after
// "In another terminal:", without their indentation.
func banner(t *testing.T, stderr string) []string {
	t.Helper()
	_, after, ok := strings.Cut(stderr, "In another terminal:")
	if !ok {
		t.Fatalf("dev printed no copy-paste example:\n%s", stderr)
	}
	var out []string
	for _, l := range strings.Split(after, "\n") {
		if strings.HasPrefix(l, "Stop with") {
			break
		}
		if strings.HasPrefix(l, "  ") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// sh runs script in a shell with only PATH set, as a fresh terminal would.
func sh(t *testing.T, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sh -c %q: %v\n%s", script, err, out)
	}
	return string(out)
}

// dev on a non-default NATS port and a Redis with a password: the example it
// prints works when pasted into another terminal (with the password filled
// in where it says so), and shows no password.
func TestDevExampleWorksWhenPasted(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"redis-server", "redis-cli", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs %s: %v", tool, err)
		}
	}
	const password = "d3v-Pa55word"
	redisAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	p := testproc.Start(t, testproc.WorkerEnv("redis://:"+password+"@"+redisAddr+"/0", natsURL, absRules(t),
		"PATH="+os.Getenv("PATH")), "dev")
	p.WaitLog(t, "invalidator dev is ready", 30*time.Second)
	p.WaitLog(t, "worker started", 30*time.Second)

	example := banner(t, p.Stderr.String())
	// In a fresh terminal: the exports once, then each line in turn.
	var exports, set, publish, check string
	for _, l := range example {
		l = strings.ReplaceAll(l, "<password>", password)
		switch {
		case strings.HasPrefix(l, "export "):
			exports = l
		case strings.Contains(l, " SET "):
			set = l
		case strings.Contains(l, " publish "):
			publish = l
		case strings.Contains(l, " EXISTS "):
			check = l
		}
	}
	if exports == "" || set == "" || publish == "" || check == "" {
		t.Fatalf("the example lacks the export, SET, publish or EXISTS line: %q", example)
	}
	if !strings.Contains(exports, natsURL) {
		t.Errorf("the example does not export the NATS in use, %s: %q", natsURL, exports)
	}
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, Password: password})
	t.Cleanup(func() { _ = rdb.Close() })

	sh(t, exports+"\n"+set)
	if n, err := rdb.Exists(ctx, "cache:course_analytics:42").Result(); err != nil || n != 1 {
		t.Fatalf("after the SET line, EXISTS = %d, %v; want 1", n, err)
	}
	sh(t, exports+"\n"+publish)
	eventually(t, "cache:course_analytics:42 removed", 30*time.Second, func() bool {
		n, err := rdb.Exists(ctx, "cache:course_analytics:42").Result()
		return err == nil && n == 0
	})
	out := lines(sh(t, exports+"\n"+check))
	if len(out) == 0 || strings.TrimPrefix(out[len(out)-1], "(integer) ") != "0" {
		t.Errorf("the EXISTS line printed %q, want 0", out)
	}

	p.Signal(t, os.Interrupt)
	if code := p.Wait(t, 60*time.Second); code != exitOK {
		t.Errorf("dev exit code %d, want 0", code)
	}
	if strings.Contains(p.Stderr.String()+p.Stdout.String(), password) {
		t.Errorf("dev's output shows the password:\n%s", p.Stderr)
	}
}

// dev on a NATS that already answers warns that it uses it and creates its
// streams there.
func TestDevWarnsAboutARunningNATS(t *testing.T) {
	t.Parallel()
	r := testserver.Redis(t)
	ns := testserver.NATS(t)
	p := testproc.Start(t, testproc.WorkerEnv(r.URL(), ns.ClientURL(), absRules(t)), "dev")
	p.WaitLog(t, "worker started", 30*time.Second)
	var warning string
	for _, l := range lines(p.Stderr.String()) {
		if strings.HasPrefix(l, "⚠️") && strings.Contains(l, ns.ClientURL()) {
			warning = l
		}
	}
	for _, want := range []string{"already answers", "EVENTS", "EVENTS_DLQ", "invalidator"} {
		if !strings.Contains(warning, want) {
			t.Errorf("the warning %q does not say %q:\n%s", warning, want, p.Stderr)
		}
	}
	p.Signal(t, os.Interrupt)
	if code := p.Wait(t, 60*time.Second); code != exitOK {
		t.Errorf("dev exit code %d, want 0", code)
	}
}
