package testproc_test

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines and removes the build.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		testproc.Cleanup()
		os.Exit(code)
	}))
}

// Concurrent writes all land, whole, while a reader polls.
func TestBufferConcurrentWrites(t *testing.T) {
	t.Parallel()
	var b testproc.Buffer
	const writers, lines = 8, 100
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range lines {
				fmt.Fprintln(&b, "line")
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "line\n"); n != writers*lines {
		t.Errorf("%d lines, want %d", n, writers*lines)
	}
}

// A bad setting ends the process at once: Wait gives its exit code and the
// output is in the buffers. Binary builds from this package's directory too.
func TestStartWaitExitCode(t *testing.T) {
	t.Parallel()
	p := testproc.Start(t, []string{"HTTP_ADDR=", "REDIS_MAX_CONNECTIONS=-1"}, "run")
	if code := p.Wait(t, 30*time.Second); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	if code := p.ExitCode(); code != 2 {
		t.Errorf("ExitCode %d after Wait, want 2", code)
	}
	if !strings.Contains(p.Stderr.String(), "REDIS_MAX_CONNECTIONS") {
		t.Errorf("stderr does not name the setting: %q", p.Stderr)
	}
}

// A worker waiting for servers that are down logs so, runs on, and exits 0
// on SIGTERM; another one is ended by SIGKILL.
func TestWaitLogStopKill(t *testing.T) {
	t.Parallel()
	port, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	environ := []string{
		fmt.Sprintf("REDIS_URL=redis://127.0.0.1:%d/0", port),
		fmt.Sprintf("NATS_URL=nats://127.0.0.1:%d", port),
		"INVALIDATOR_RULES=../../testdata/rules.yaml",
		"HTTP_ADDR=", "LOG_FORMAT=json", "REDIS_SOCKET_CONNECT_TIMEOUT=500ms",
	}
	stopped, killed := testproc.Start(t, environ, "run"), testproc.Runner{StderrTail: 100}.Start(t, environ, "run")
	for _, p := range []*testproc.Proc{stopped, killed} {
		p.WaitLog(t, "not reachable yet", 30*time.Second)
		if code := p.ExitCode(); code != -1 {
			t.Fatalf("ExitCode %d while running, want -1", code)
		}
	}
	if code := stopped.Stop(t, 30*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM %d, want 0", code)
	}
	killed.Kill(t)
	select {
	case <-killed.Exited():
	default:
		t.Error("Exited not closed after Kill")
	}
	if code := killed.ExitCode(); code != -1 {
		t.Errorf("ExitCode %d after SIGKILL, want -1", code)
	}
}
