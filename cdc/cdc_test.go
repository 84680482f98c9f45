package cdc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/jackc/pgx/v5"
)

// Each row change removes the keys the rules name for its row, through the
// real worker, and course 420's keys stay.
func TestRowChangesInvalidateThroughTheWorker(t *testing.T) {
	r := newRig(t, rigOptions{})
	keys42 := []string{"cache:course_analytics:42", "cache:course_analytics:42:w1", "cache:system_stats:all"}
	neighbour := []string{"cache:course_analytics:420", "cache:course_analytics:420:w1", "user:42"}
	steps := []struct {
		name string
		sql  string
	}{
		{"insert", "INSERT INTO courses (id, title) VALUES (42, 'Go')"},
		{"update", "UPDATE courses SET title = 'Go 2' WHERE id = 42"},
		{"delete", "DELETE FROM courses WHERE id = 42"},
	}
	r.set("cache:course_analytics:420")
	r.exec("INSERT INTO courses (id, title) VALUES (420, 'neighbour')")
	r.waitGone("cache:course_analytics:420") // its own event is applied before the steps
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r.set(append(keys42, neighbour...)...)
			r.exec(s.sql)
			r.waitGone(keys42...)
			r.requireKept(neighbour[:2]...)
			r.requireKept(neighbour[2])
		})
	}
	t.Run("truncate", func(t *testing.T) {
		r.set(append(keys42, "user:42")...)
		r.set("cache:course_analytics:420")
		r.exec("TRUNCATE courses")
		r.waitGone(append(keys42, "cache:course_analytics:420")...)
		r.requireKept("user:42")
	})
}

// An UPDATE of the key emits the old key's event and the new one's: both
// courses' keys go.
func TestKeyChangeRemovesOldAndNewKeys(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.set("cache:course_analytics:420")
	r.exec("INSERT INTO courses (id, title) VALUES (42, 'Go'), (420, 'neighbour')")
	r.waitGone("cache:course_analytics:420")
	r.set("cache:course_analytics:42", "cache:course_analytics:43", "cache:course_analytics:420")
	r.exec("UPDATE courses SET id = 43 WHERE id = 42")
	r.waitGone("cache:course_analytics:42", "cache:course_analytics:43")
	r.requireKept("cache:course_analytics:420")
}

// Under REPLICA IDENTITY FULL, a change of a mapped non-key column (email)
// removes the old email's key and the new one's.
func TestMappedColumnChangeRemovesBothValuesKeys(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.set("user:70")
	r.exec("INSERT INTO users (id, email, name) VALUES (7, 'old@example.com', 'Ann'), (70, 'other@example.com', 'Bob')")
	r.waitGone("user:70")
	r.set("user:7", "user:email:old@example.com", "user:email:new@example.com", "user:70", "user:email:other@example.com")
	r.exec("UPDATE users SET email = 'new@example.com' WHERE id = 7")
	r.waitGone("user:7", "user:email:old@example.com", "user:email:new@example.com")
	r.requireKept("user:70", "user:email:other@example.com")
	// A change of an unmapped column sends one event only: nothing mapped
	// moved. A later transaction (course 99) marks the end.
	before := len(r.events())
	r.exec("UPDATE users SET name = 'Anne' WHERE id = 7")
	r.exec("INSERT INTO courses (id) VALUES (99)")
	got := r.waitEvents(before + 2)
	if got[len(got)-1].subject != "events.course.created" {
		t.Fatalf("the last event is %s, want the marker events.course.created; events since: %+v", got[len(got)-1].subject, got[before:])
	}
	if n := len(got) - before - 1; n != 1 {
		t.Fatalf("an update of an unmapped column published %d events, want 1", n)
	}
	var ev struct {
		Data   map[string]any `json:"data"`
		Source string         `json:"source"`
		ID     string         `json:"id"`
		Time   time.Time      `json:"time"`
	}
	if err := json.Unmarshal(got[before].data, &ev); err != nil {
		t.Fatal(err)
	}
	if want := "/" + r.slot() + "/" + r.slot(); !strings.HasPrefix(ev.Source, "urn:invalidator:cdc:") || !strings.HasSuffix(ev.Source, want) {
		t.Errorf("source = %q, want urn:invalidator:cdc:<system id>/<database>/<slot>", ev.Source)
	}
	if ev.ID != got[before].id || time.Since(ev.Time) > time.Minute {
		t.Errorf("id %q (Nats-Msg-Id %q), time %v: want equal ids and the commit time", ev.ID, got[before].id, ev.Time)
	}
	if want := map[string]any{"user_id": "7", "email": "new@example.com"}; !maps.Equal(ev.Data, want) {
		t.Errorf("event data = %v, want %v (mapped and key columns only)", ev.Data, want)
	}
}

// Two transactions interleave: T1 writes, T2 writes and commits, T1 writes
// and commits. Every row's event is published once, with its own id.
func TestInterleavedTransactions(t *testing.T) {
	r := newRig(t, rigOptions{})
	ctx := context.Background()
	c1, c2 := r.conn(), r.conn()
	r.set("cache:course_analytics:1", "cache:course_analytics:2", "cache:course_analytics:3")
	t1, err := c1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, t1, "INSERT INTO courses (id) VALUES (1)")
	t2, err := c2.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, t2, "INSERT INTO courses (id) VALUES (2)")
	if err := t2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, t1, "INSERT INTO courses (id) VALUES (3)")
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r.waitGone("cache:course_analytics:1", "cache:course_analytics:2", "cache:course_analytics:3")
	got := r.waitEvents(3)
	requireUniqueIDs(t, got, 3)
}

// A COPY of many rows gives each row its event, with distinct ids though
// the rows share one change LSN.
func TestCopyOfManyRows(t *testing.T) {
	r := newRig(t, rigOptions{})
	const n = 2000
	rows := make([][]any, n)
	keys := make([]string, n)
	for i := range rows {
		rows[i] = []any{int32(i + 1), fmt.Sprintf("course %d", i+1)}
		keys[i] = fmt.Sprintf("cache:course_analytics:%d", i+1)
	}
	r.set(keys...)
	r.set("cache:course_analytics:4200")
	c := r.conn()
	copied, err := c.CopyFrom(context.Background(), pgx.Identifier{"courses"}, []string{"id", "title"}, pgx.CopyFromRows(rows))
	if err != nil || copied != n {
		t.Fatalf("COPY: %d rows, %v", copied, err)
	}
	r.waitGone(keys...)
	r.requireKept("cache:course_analytics:4200")
	requireUniqueIDs(t, r.waitEvents(n), n)
}

// An UPDATE that leaves a TOASTed column unchanged still names the row;
// the unchanged value is not sent (it is not mapped either way).
func TestToastColumnUnchanged(t *testing.T) {
	r := newRig(t, rigOptions{})
	big := randomText(t, 20000) // incompressible, so stored out of line
	r.set("cache:course_analytics:5")
	r.exec("INSERT INTO courses (id, title, description) VALUES (5, 'a', $1)", big)
	r.waitGone("cache:course_analytics:5")
	r.set("cache:course_analytics:5")
	before := len(r.events())
	r.exec("UPDATE courses SET title = 'b' WHERE id = 5")
	r.waitGone("cache:course_analytics:5")
	got := r.waitEvents(before + 1)
	if !bytes.Contains(got[before].data, []byte(`"course_id":"5"`)) || bytes.Contains(got[before].data, []byte("description")) {
		t.Errorf("update event = %s, want course_id 5 and no description", got[before].data)
	}
}

// A column added mid-stream (a new Relation message) changes nothing for
// the mapping.
func TestAlterTableMidStream(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.set("cache:course_analytics:8")
	r.exec("INSERT INTO courses (id) VALUES (8)")
	r.waitGone("cache:course_analytics:8")
	r.exec("ALTER TABLE courses ADD COLUMN level int")
	r.set("cache:course_analytics:8", "cache:course_analytics:80")
	r.exec("UPDATE courses SET level = 3 WHERE id = 8")
	r.waitGone("cache:course_analytics:8")
	r.requireKept("cache:course_analytics:80")
}

// pg_logical_emit_message commits with its transaction: user:42 and its
// sub-keys go, user:420 stays; a rolled-back one invalidates nothing; a bad
// body is published as it is and dead-lettered by the worker with the reason.
func TestEmittedMessage(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.set("user:42", "user:42:profile", "user:420", "user:43")
	r.exec(`BEGIN;
		INSERT INTO audit (note) VALUES ('x');
		SELECT pg_logical_emit_message(true, 'invalidator', '{"keys": ["user:42"], "patterns": ["user:42:*"]}');
		COMMIT`)
	r.waitGone("user:42", "user:42:profile")
	r.requireKept("user:420")

	r.exec(`BEGIN;
		SELECT pg_logical_emit_message(true, 'invalidator', '{"keys": ["user:43"]}');
		ROLLBACK`)
	r.set("user:44")
	r.exec(`SELECT pg_logical_emit_message(true, 'invalidator', '{"keys": ["user:44"]}')`)
	r.waitGone("user:44") // later than the rollback in the log
	r.requireKept("user:43", "user:420")

	r.exec(`SELECT pg_logical_emit_message(true, 'invalidator', 'not json')`)
	r.exec(`SELECT pg_logical_emit_message(true, 'other-prefix', '{"keys": ["user:420"]}')`)
	letters := deadletter.NewStore(r.js, worker.DefaultDeadLetterStream, worker.DefaultDeadLetterPrefix)
	var got []deadletter.Letter
	testserver.Eventually(t, "the bad body dead-lettered", 20*time.Second, func() bool {
		got = got[:0]
		_ = letters.List(context.Background(), deadletter.Filter{}, func(l deadletter.Letter) error { got = append(got, l); return nil })
		return len(got) > 0
	})
	if l := got[0]; l.Subject != "events.cache.invalidate" || l.Kind != deadletter.Malformed || string(l.Body) != "not json" ||
		!strings.HasPrefix(l.OriginalMsgID, "cdc:") {
		t.Errorf("letter = %+v (body %q), want the malformed body as published, with its cdc id", l, l.Body)
	}
	r.requireKept("user:420")
}

// A transaction with more events for one table than MaxTxEvents publishes
// one bulk event for it, which the rules map to the namespace.
func TestLargeTransactionBecomesBulk(t *testing.T) {
	r := newRig(t, rigOptions{maxTxEvents: 100})
	r.set("cache:course_analytics:777")
	r.exec("INSERT INTO courses (id) SELECT g FROM generate_series(1, 500) g")
	// 500 inserts in one transaction: over the cap of 100.
	r.waitGone("cache:course_analytics:777")
	r.set("cache:course_analytics:1", "cache:course_analytics:499:w", "cache:course_analytics:9999", "user:1")
	r.exec("UPDATE courses SET title = 'x' WHERE id <= 101") // over the cap again
	r.waitGone("cache:course_analytics:1", "cache:course_analytics:499:w", "cache:course_analytics:9999")
	r.requireKept("user:1")
	got := r.waitEvents(2)
	if len(got) != 2 || got[0].subject != "events.course.bulk" || got[1].subject != "events.course.bulk" {
		t.Errorf("events = %+v, want two events.course.bulk and nothing else", got)
	}
	// Under the cap, rows are published one by one.
	r.exec("UPDATE courses SET title = 'y' WHERE id <= 100")
	if got := r.waitEvents(102); len(got) != 102 || got[101].subject != "events.course.updated" {
		t.Errorf("%d events, want 102 (the last events.course.updated)", len(got))
	}
}

func (r *rig) conn() *pgx.Conn {
	r.t.Helper()
	c, err := pgx.Connect(context.Background(), r.db)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func mustExec(t *testing.T, tx pgx.Tx, sql string) {
	t.Helper()
	if _, err := tx.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// requireUniqueIDs checks that the stream holds exactly n events with n
// distinct cdc ids.
func requireUniqueIDs(t *testing.T, got []streamed, n int) {
	t.Helper()
	ids := map[string]bool{}
	for _, e := range got {
		if !strings.HasPrefix(e.id, "cdc:") {
			t.Errorf("event id %q is not a cdc id", e.id)
		}
		ids[e.id] = true
	}
	if len(got) != n || len(ids) != n {
		t.Errorf("%d events with %d distinct ids, want %d of each", len(got), len(ids), n)
	}
}

func randomText(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
