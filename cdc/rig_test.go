package cdc_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/cdc"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	testserver.RequirePostgres = os.Getenv(testserver.RequirePostgresEnv) != ""
	code := m.Run()
	testserver.StopPostgres()
	testproc.Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// schema is the tables of testdata/rules-cdc.yaml, and one the rules do not map.
const schema = `
CREATE TABLE courses (id int PRIMARY KEY, title text NOT NULL DEFAULT '', description text);
CREATE TABLE users (id int PRIMARY KEY, email text, name text);
ALTER TABLE users REPLICA IDENTITY FULL;
CREATE TABLE audit (id bigserial PRIMARY KEY, note text);
`

// rig is a database, NATS, Redis, a real worker and a cdc Runner.
type rig struct {
	t     *testing.T
	db    string // URL
	nc    *nats.Conn
	js    jetstream.JetStream
	rdb   *redis.Client
	rules *cachekeys.Rules
	log   *logBuffer
	stops []func()
}

type rigOptions struct {
	maxTxEvents int
	duplicates  time.Duration // the stream's duplicate window; 0 is the worker's default
	noRunner    bool
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, db: testserver.Database(t), log: &logBuffer{}}
	testserver.SQL(t, r.db, schema)
	r.nc, r.js = testserver.JetStream(t, testserver.NATS(t))
	r.rdb = testserver.RedisClient(t, testserver.Redis(t))
	var err error
	if r.rules, err = cachekeys.Load("../testdata/rules-cdc.yaml"); err != nil {
		t.Fatal(err)
	}
	if o.duplicates > 0 {
		_, err := r.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: worker.DefaultStream,
			Subjects: []string{"events.>"}, Duplicates: o.duplicates, Storage: jetstream.FileStorage})
		if err != nil {
			t.Fatal(err)
		}
	}
	r.startWorker()
	if !o.noRunner {
		r.startRunner(cdc.Config{MaxTxEvents: o.maxTxEvents})
	}
	t.Cleanup(r.stop)
	return r
}

func (r *rig) stop() {
	for i := len(r.stops) - 1; i >= 0; i-- {
		r.stops[i]()
	}
	r.stops = nil
}

func (r *rig) startWorker() {
	r.t.Helper()
	w, err := worker.New(testserver.WorkerConfig(), worker.Deps{JetStream: r.js, Redis: r.rdb, Rules: r.rules})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	select {
	case <-w.Started():
	case <-time.After(30 * time.Second):
		r.t.Fatal("the worker did not start within 30s")
	}
	r.stops = append(r.stops, func() { cancel(); <-done })
}

// startRunner starts a Runner with cfg's zero fields set for the rig, and
// waits until it streams. It returns a function that stops it.
func (r *rig) startRunner(cfg cdc.Config) (*cdc.Runner, func()) {
	r.t.Helper()
	cfg.DatabaseURL = r.db
	if cfg.Slot == "" {
		cfg.Slot = r.slot() // slots are the server's, not the database's
	}
	cfg.Tables = r.rules.CDC()
	cfg.Logger = slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	run, err := cdc.New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run.Run(ctx, r.nc) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				r.t.Errorf("Run: %v", err)
			}
		})
	}
	r.stops = append(r.stops, stop)
	testserver.Eventually(r.t, "the runner streams", 30*time.Second, func() bool {
		select {
		case err := <-done:
			done <- err
			r.t.Fatalf("Run ended at start: %v\n%s", err, r.log)
		default:
		}
		return run.Status().Active
	})
	return run, stop
}

// slot is the rig's slot name: its database's name.
func (r *rig) slot() string {
	u, err := url.Parse(r.db)
	if err != nil {
		r.t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// exec runs SQL on the rig's database.
func (r *rig) exec(sql string, args ...any) {
	r.t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, r.db)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		r.t.Fatalf("%s: %v", sql, err)
	}
}

// set stores each key with a value.
func (r *rig) set(keys ...string) {
	r.t.Helper()
	for _, k := range keys {
		if err := r.rdb.Set(context.Background(), k, "cached", 0).Err(); err != nil {
			r.t.Fatal(err)
		}
	}
}

// waitGone waits until every key is gone.
func (r *rig) waitGone(keys ...string) {
	r.t.Helper()
	testserver.Eventually(r.t, fmt.Sprintf("keys %v gone", keys), 20*time.Second, func() bool {
		n, err := r.rdb.Exists(context.Background(), keys...).Result()
		return err == nil && n == 0
	})
}

// requireKept fails unless every key exists.
func (r *rig) requireKept(keys ...string) {
	r.t.Helper()
	for _, k := range keys {
		n, err := r.rdb.Exists(context.Background(), k).Result()
		if err != nil || n != 1 {
			r.t.Errorf("key %s was removed (exists=%d, err=%v); it should stay", k, n, err)
		}
	}
}

// streamed is one message of the EVENTS stream.
type streamed struct {
	subject, id string
	data        []byte
}

// events returns every message of the EVENTS stream, in order.
func (r *rig) events() []streamed {
	r.t.Helper()
	ctx := context.Background()
	s, err := r.js.Stream(ctx, worker.DefaultStream)
	if err != nil {
		r.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []streamed
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, streamed{subject: m.Subject, id: m.Header.Get("Nats-Msg-Id"), data: m.Data})
	}
	return out
}

// waitEvents waits until the stream holds at least n messages and returns them.
func (r *rig) waitEvents(n int) []streamed {
	r.t.Helper()
	var got []streamed
	testserver.Eventually(r.t, fmt.Sprintf("%d events in the stream", n), 30*time.Second, func() bool {
		got = r.events()
		return len(got) >= n
	})
	return got
}

// logBuffer collects log lines; safe for concurrent use.
type logBuffer = testproc.Buffer
