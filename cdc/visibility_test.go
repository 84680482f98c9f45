package cdc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/cdc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PostgreSQL sends a commit to logical decoding once its record is
// flushed, before the committing backend makes it visible. An event is
// published only once its commit is visible: a reader that reads the row
// as soon as the event arrives never sees a version older than the
// event's. Writers commit single-row UPDATEs as fast as they can while
// readers, on each event, read the row on their own connections.
// Without the visibility gate, 3 to 78 of about 40,000 reads were older
// (4 writers, 2 CPUs).
func TestEventsFollowVisibleCommits(t *testing.T) {
	const (
		rows      = 4
		readers   = 4
		writeFor  = 3 * time.Second
		maxWrites = 5000 // per writer
	)
	db := testserver.Database(t)
	testserver.SQL(t, db, `CREATE TABLE items (id int PRIMARY KEY, version int NOT NULL DEFAULT 0);
		ALTER TABLE items REPLICA IDENTITY FULL;
		INSERT INTO items (id) SELECT g FROM generate_series(1, `+strconv.Itoa(rows)+`) g`)
	nc, js := testserver.JetStream(t, testserver.NATS(t))
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: worker.DefaultStream, Subjects: []string{"events.>"},
		Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}

	// Readers: on each event, the row's version as a new statement sees it.
	evs := make(chan *nats.Msg, 1<<16)
	sub, err := nc.ChanSubscribe("events.item.updated", evs)
	if err != nil {
		t.Fatal(err)
	}
	var checked, stale atomic.Int64
	var mu sync.Mutex
	last := map[int]int{} // the highest version an event named, per row
	var firstStale []string
	var rg sync.WaitGroup
	for range readers {
		c := connect(t, db)
		rg.Add(1)
		go func() {
			defer rg.Done()
			for m := range evs {
				var ev struct {
					Data map[string]string `json:"data"`
				}
				if err := json.Unmarshal(m.Data, &ev); err != nil {
					t.Errorf("event %s: %v", m.Data, err)
					continue
				}
				id, version := atoi(t, ev.Data["item_id"]), atoi(t, ev.Data["version"])
				var got int
				if err := c.QueryRow(ctx, "SELECT version FROM items WHERE id = $1", id).Scan(&got); err != nil {
					t.Errorf("read item %d: %v", id, err)
					continue
				}
				checked.Add(1)
				mu.Lock()
				last[id] = max(last[id], version)
				if got < version {
					stale.Add(1)
					if len(firstStale) < 5 {
						firstStale = append(firstStale, fmt.Sprintf("item %d: event of version %d, read %d", id, version, got))
					}
				}
				mu.Unlock()
			}
		}()
	}

	obs := &waitCounter{}
	stop := startVisibilityRunner(t, db, nc, obs)

	// Writers: one row each, as fast as they go, for writeFor at most.
	final := make([]int, rows+1)
	var wg sync.WaitGroup
	until := time.Now().Add(writeFor)
	for id := 1; id <= rows; id++ {
		c := connect(t, db)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < maxWrites && time.Now().Before(until); n++ {
				if err := c.QueryRow(ctx, "UPDATE items SET version = version + 1 WHERE id = $1 RETURNING version", id).Scan(&final[id]); err != nil {
					t.Errorf("update item %d: %v", id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	writes := 0
	for _, v := range final {
		writes += v
	}
	// Every row's last version has been read after its event: the
	// readers saw the whole run, not a prefix of it.
	testserver.Eventually(t, "the event of every row's last version read", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id := 1; id <= rows; id++ {
			if last[id] < final[id] {
				return false
			}
		}
		return true
	})
	stop()
	_ = sub.Unsubscribe()
	close(evs)
	rg.Wait()
	t.Logf("%d commits, %d events checked, %d commits waited for visibility", writes, checked.Load(), obs.n.Load())
	if writes < 1000 {
		t.Fatalf("only %d commits in %v: too few to exercise the race", writes, writeFor)
	}
	if n := stale.Load(); n > 0 {
		t.Errorf("%d of %d reads right after an event saw an older version than the event's (%s): the event was published before its commit was visible",
			n, checked.Load(), strings.Join(firstStale, "; "))
	}
}

// startVisibilityRunner runs a Runner on the items table, mapping its
// version column, until the returned stop is called.
func startVisibilityRunner(t *testing.T, db string, nc *nats.Conn, obs cdc.Observer) func() {
	t.Helper()
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	log := &logBuffer{}
	run, err := cdc.New(cdc.Config{DatabaseURL: db, Slot: strings.TrimPrefix(u.Path, "/"), Observer: obs,
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Tables: []cachekeys.CDCTable{{Schema: "public", Name: "items", Entity: "item",
			Columns: map[string]string{"id": "item_id", "version": "version"}}}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run.Run(rctx, nc) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	testserver.Eventually(t, "the runner streams", 30*time.Second, func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("Run ended at start: %v\n%s", err, log)
		default:
		}
		return run.Status().Active
	})
	return stop
}

// waitCounter is a cdc.Observer that counts visibility waits.
type waitCounter struct{ n atomic.Int64 }

func (*waitCounter) Transaction(time.Duration)      {}
func (*waitCounter) Event(string, string)           {}
func (*waitCounter) SlotLost()                      {}
func (w *waitCounter) VisibilityWait(time.Duration) { w.n.Add(1) }

func connect(t *testing.T, db string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Errorf("%q is not a number", s)
	}
	return n
}
