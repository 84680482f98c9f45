package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// eventually polls cond until it holds or within has passed.
func eventually(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	testserver.Eventually(t, what, within, cond)
}

// jsonRecords decodes the JSON log lines of out, skipping other lines.
func jsonRecords(out string) (recs []map[string]any, other []string) {
	for _, l := range lines(out) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			other = append(other, l)
			continue
		}
		recs = append(recs, m)
	}
	return recs, other
}

func absRules(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// loadKeys writes n keys prefix<i>, value "v".
func loadKeys(t *testing.T, rdb *redis.Client, prefix string, n int) {
	t.Helper()
	testserver.LoadKeys(t, rdb, prefix, n, 1)
}

// waitAcked waits until the worker's consumer has acked every event up to
// stream sequence last, and holds none pending.
func waitAcked(t *testing.T, js jetstream.JetStream, last uint64, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	cons, err := js.Consumer(ctx, "EVENTS", "invalidator")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "every event acked", within, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream == last
	})
}

// countKeys counts the keys matching pattern with SCAN.
func countKeys(t *testing.T, rdb *redis.Client, pattern string) int {
	t.Helper()
	return testserver.CountKeys(t, rdb, pattern)
}

// SIGTERM while a 300,000-key sweep is in flight: the worker finishes it,
// acks every event and exits 0, leaving nothing to redeliver.
func TestSIGTERMFinishesInFlightEvents(t *testing.T) {
	t.Parallel()
	testproc.Binary(t) // build before the servers start, so their clocks do not include it
	r := testserver.Redis(t)
	rdb := testserver.RedisClient(t, r)
	ns := testserver.NATS(t)
	_, js := testserver.JetStream(t, ns)
	ctx := context.Background()

	const swept = 300_000
	loadKeys(t, rdb, "cache:course_analytics:7:", swept)
	loadKeys(t, rdb, "other:", 10)
	users := []string{"1", "2", "3"}
	for _, u := range users {
		if err := rdb.MSet(ctx, "user:"+u, "v", "user:"+u+":profile", "v").Err(); err != nil {
			t.Fatal(err)
		}
	}

	p := testproc.Start(t, testproc.WorkerEnv(r.URL(), ns.ClientURL(), absRules(t), "SHUTDOWN_TIMEOUT=30s"), "run")
	p.WaitLog(t, "worker started", 30*time.Second)

	pub, err := events.NewPublisher(js, events.WithSource("test"))
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i, subject := range []string{"events.course.updated", "events.user.updated", "events.user.updated", "events.user.updated"} {
		data := map[string]any{"course_id": "7"}
		if i > 0 {
			data = map[string]any{"user_id": users[i-1]}
		}
		if last, err = pub.Publish(ctx, subject, data); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
	}

	// Stop once the worker has taken every event: the user keys (exact, so
	// quick) are gone, and the course event, delivered first, is being
	// swept. (Waiting only until the server has delivered them is not
	// enough: a fetch cancelled by SIGTERM drops what it has received.)
	eventually(t, "the user events applied", 30*time.Second, func() bool {
		n, err := rdb.Exists(ctx, "user:1", "user:2", "user:3").Result()
		return err == nil && n == 0
	})
	p.Signal(t, syscall.SIGTERM)

	if code := p.Wait(t, 60*time.Second); code != exitOK {
		t.Fatalf("exit code %d, want 0", code)
	}

	if n := countKeys(t, rdb, "cache:course_analytics:7:*"); n != 0 {
		t.Errorf("%d of %d cache:course_analytics:7:* keys left", n, swept)
	}
	if n := countKeys(t, rdb, "user:*"); n != 0 {
		t.Errorf("%d user:* keys left", n)
	}
	if n := countKeys(t, rdb, "other:*"); n != 10 {
		t.Errorf("%d other:* keys left, want 10", n)
	}

	// The acks were flushed before exit; the server applies them at once,
	// but poll briefly rather than race its bookkeeping.
	cons, err := js.Consumer(ctx, "EVENTS", "invalidator")
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.ConsumerInfo
	t.Cleanup(func() {
		if t.Failed() && info != nil {
			t.Logf("consumer: ack pending %d, pending %d, ack floor %d, last sequence %d",
				info.NumAckPending, info.NumPending, info.AckFloor.Stream, last)
		}
	})
	eventually(t, "every event acked", 5*time.Second, func() bool {
		info, err = cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == last
	})

	recs, other := jsonRecords(p.Stderr.String())
	if len(other) > 0 {
		t.Errorf("LOG_FORMAT=json, but stderr has other lines: %q", other)
	}
	var stopped bool
	for _, rec := range recs {
		switch rec["msg"] {
		case "worker stopped":
			stopped = true
		case "stopping: fetching stopped, finishing events in flight":
			t.Logf("events in flight at SIGTERM: %v", rec["in_flight"])
		}
		if rec["level"] == "ERROR" {
			t.Errorf("error logged: %v", rec)
		}
	}
	if !stopped {
		t.Error(`log has no "worker stopped"`)
	}
}

// A bad setting stops the binary at once with exit code 2 and one line.
func TestBinaryRejectsBadConfig(t *testing.T) {
	t.Parallel()
	broken := brokenRules(t)
	tests := []struct {
		name  string
		given []string // environment
		args  []string
		want  string // what the one stderr line names
	}{
		{"run, negative pool size", []string{"REDIS_MAX_CONNECTIONS=-1"}, []string{"run"}, "REDIS_MAX_CONNECTIONS"},
		{"run, bad flag value", nil, []string{"run", "--redis-max-connections=-1"}, "-redis-max-connections"},
		{"run, broken rules", []string{"INVALIDATOR_RULES=" + broken}, []string{"run"}, broken},
		{"dev, bad log level", []string{"LOG_LEVEL=loud"}, []string{"dev"}, "LOG_LEVEL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testproc.Start(t, append([]string{"HTTP_ADDR="}, tt.given...), tt.args...)
			if code := p.Wait(t, 30*time.Second); code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			stderr := p.Stderr.String()
			if n := strings.Count(stderr, "\n"); n != 1 || !strings.HasSuffix(stderr, "\n") {
				t.Errorf("stderr is not exactly one line: %q", stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q does not name %s", stderr, tt.want)
			}
			if out := p.Stdout.String(); out != "" {
				t.Errorf("stdout not empty: %q", out)
			}
		})
	}
}

// dev starts NATS and redis-server where none answer, invalidates through
// them, and stops both when interrupted.
func TestDevStartsAndStopsItsServers(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("tests need a real Redis: %v", servers.ErrNoRedisServer)
	}
	redisPort, natsPort := freePort(t), freePort(t)
	redisAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(redisPort))
	natsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(natsPort))
	natsURL := "nats://" + natsAddr
	p := testproc.Start(t, testproc.WorkerEnv("redis://"+redisAddr+"/0", natsURL, absRules(t),
		"PATH="+os.Getenv("PATH"), // dev looks up redis-server
		"SHUTDOWN_TIMEOUT=30s"), "dev")
	p.WaitLog(t, "invalidator dev is ready", 30*time.Second)
	p.WaitLog(t, "worker started", 30*time.Second) // the stream exists from here on
	for _, want := range []string{"started embedded NATS", "started redis-server on " + redisAddr} {
		if !strings.Contains(p.Stderr.String(), want) {
			t.Errorf("stderr does not say %q", want)
		}
	}

	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	if err := rdb.Set(ctx, "cache:course_analytics:42", "cached", 0).Err(); err != nil {
		t.Fatalf("SET on dev's Redis: %v", err)
	}

	pub := testproc.Start(t, []string{"NATS_URL=" + natsURL}, "publish", "events.course.updated", `{"course_id":"42"}`)
	if code := pub.Wait(t, 30*time.Second); code != exitOK || pub.Stdout.String() != "1\n" {
		t.Fatalf("publish: exit code %d, stdout %q, stderr %q; want 0 and sequence 1", code, pub.Stdout, pub.Stderr)
	}
	eventually(t, "cache:course_analytics:42 removed", 30*time.Second, func() bool {
		n, err := rdb.Exists(ctx, "cache:course_analytics:42").Result()
		return err == nil && n == 0
	})

	p.Signal(t, os.Interrupt)
	if code := p.Wait(t, 60*time.Second); code != exitOK {
		t.Fatalf("dev exit code %d, want 0", code)
	}
	for _, addr := range []string{redisAddr, natsAddr} {
		eventually(t, addr+" no longer answers", 10*time.Second, func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err != nil
		})
	}
	if m := regexp.MustCompile(`\(data in ([^)]+)\)`).FindStringSubmatch(p.Stderr.String()); m == nil {
		t.Error("dev did not say where its data is")
	} else if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev's data dir %s is still there (stat: %v)", m[1], err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}
