package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
)

// SIGTERM right after 50 events with a warm target were acked: the warm
// requests those events queued are made during the shutdown (stop
// fetching, finish, ack, warm, close), or, past SHUTDOWN_TIMEOUT, counted
// as dropped; none is shed silently.
func TestSIGTERMMakesTheWarmRequestsOfAckedEvents(t *testing.T) {
	t.Parallel()
	const n = 50
	tests := []struct {
		name       string
		timeout    string
		answer     func(release <-chan struct{}) // how the source answers
		wantStored int
	}{
		{"within the deadline: every request made", "30s", func(<-chan struct{}) { time.Sleep(300 * time.Millisecond) }, n},
		{"past the deadline: every request counted dropped", "1s", func(release <-chan struct{}) { <-release }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testproc.Binary(t)
			release := make(chan struct{})
			var started atomic.Int64
			src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started.Add(1)
				tt.answer(release)
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"course":%q}`, strings.TrimPrefix(r.URL.Path, "/courses/"))
			}))
			t.Cleanup(src.Close)
			t.Cleanup(func() { close(release) }) // runs before src.Close
			rules := filepath.Join(t.TempDir(), "rules.yaml")
			if err := os.WriteFile(rules, []byte(`rules:
  - on: events.course.*
    invalidate:
      - cache:course:{course_id}
    warm:
      - key: cache:course:{course_id}
        from: `+src.URL+`/courses/{course_id}
        ttl: 60s
`), 0o600); err != nil {
				t.Fatal(err)
			}
			r := testserver.Redis(t)
			rdb := testserver.RedisClient(t, r)
			ns := testserver.NATS(t)
			_, js := testserver.JetStream(t, ns)
			ctx := context.Background()

			p := testproc.Start(t, testproc.WorkerEnv(r.URL(), ns.ClientURL(), rules, "SHUTDOWN_TIMEOUT="+tt.timeout), "run")
			p.WaitLog(t, "worker started", 30*time.Second)
			pub, err := events.NewPublisher(js, events.WithSource("test"))
			if err != nil {
				t.Fatal(err)
			}
			var last uint64
			for i := range n {
				if last, err = pub.Publish(ctx, "events.course.updated", map[string]any{"course_id": strconv.Itoa(i)}); err != nil {
					t.Fatal(err)
				}
			}
			waitAcked(t, js, last, 30*time.Second)
			p.Signal(t, syscall.SIGTERM)
			if code := p.Wait(t, 60*time.Second); code != exitOK {
				t.Fatalf("exit code %d, want 0", code)
			}

			stored := 0
			for i := range n {
				want := `{"course":"` + strconv.Itoa(i) + `"}`
				if v, _ := rdb.Get(ctx, "cache:course:"+strconv.Itoa(i)).Result(); v == want {
					stored++
				}
			}
			var dropped float64
			recs, _ := jsonRecords(p.Stderr.String())
			for _, rec := range recs {
				if msg, _ := rec["msg"].(string); strings.HasSuffix(msg, "warm requests dropped: the shutdown deadline passed before they were made") {
					dropped, _ = rec["dropped"].(float64)
				}
			}
			if stored != tt.wantStored || stored+int(dropped) != n {
				t.Fatalf("%d keys warmed and %v requests counted dropped, want %d warmed and %d in all (%d requests reached the source)",
					stored, dropped, tt.wantStored, n, started.Load())
			}
		})
	}
}
