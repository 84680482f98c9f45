package cdc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// process starts `invalidator cdc` on the rig's database and NATS, with
// extra environment variables, and waits until it streams.
func (r *rig) process(extra ...string) *testproc.Proc {
	r.t.Helper()
	p := testproc.Start(r.t, r.env(extra...), "cdc")
	p.WaitLog(r.t, "streaming from the slot", 30*time.Second)
	return p
}

// env is the environment of an `invalidator cdc` process on the rig's
// database, slot and NATS; extra settings come last and win.
func (r *rig) env(extra ...string) []string {
	r.t.Helper()
	rules, err := filepath.Abs("../testdata/rules-cdc.yaml")
	if err != nil {
		r.t.Fatal(err)
	}
	return append([]string{"CDC_DATABASE_URL=" + r.db, "CDC_SLOT=" + r.slot(), "NATS_URL=" + r.nc.ConnectedUrl(),
		"INVALIDATOR_RULES=" + rules, "HTTP_ADDR=", "LOG_FORMAT=json", "LOG_LEVEL=debug"}, extra...)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// workload is six transactions with 405 events in all: a single insert,
// an interleaved pair, a COPY of 300 rows, an UPDATE of 100 rows and a
// last insert. The COPY is the 4th transaction to commit.
func (r *rig) workload() map[string]int {
	r.t.Helper()
	ctx := context.Background()
	want := map[string]int{}
	add := func(action string, ids ...int) {
		for _, id := range ids {
			want[fmt.Sprintf("%s/%d", action, id)]++
		}
	}
	r.exec("INSERT INTO courses (id) VALUES (1)")
	add("created", 1)
	c1, c2 := r.conn(), r.conn()
	ta, err := c1.Begin(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	mustExec(r.t, ta, "INSERT INTO courses (id) VALUES (2)")
	tb, err := c2.Begin(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	mustExec(r.t, tb, "INSERT INTO courses (id) VALUES (3)")
	if err := tb.Commit(ctx); err != nil {
		r.t.Fatal(err)
	}
	mustExec(r.t, ta, "INSERT INTO courses (id) VALUES (4)")
	if err := ta.Commit(ctx); err != nil {
		r.t.Fatal(err)
	}
	add("created", 2, 3, 4)
	rows := make([][]any, 300)
	for i := range rows {
		rows[i] = []any{int32(1000 + i)}
		add("created", 1000+i)
	}
	if _, err := c1.CopyFrom(ctx, pgx.Identifier{"courses"}, []string{"id"}, pgx.CopyFromRows(rows)); err != nil {
		r.t.Fatal(err)
	}
	r.exec("UPDATE courses SET title = 'x' WHERE id BETWEEN 1000 AND 1099")
	for i := 1000; i < 1100; i++ {
		add("updated", i)
	}
	r.exec("INSERT INTO courses (id) VALUES (5)")
	add("created", 5)
	return want
}

// rowsOf counts the stream's events by action/course_id, and returns the
// count of each id.
func rowsOf(t *testing.T, got []streamed) (rows map[string]int, ids map[string]int) {
	t.Helper()
	rows, ids = map[string]int{}, map[string]int{}
	for _, e := range got {
		var ev struct {
			Data map[string]string `json:"data"`
		}
		if err := json.Unmarshal(e.data, &ev); err != nil {
			t.Fatalf("event %s: %v", e.id, err)
		}
		action := e.subject[strings.LastIndex(e.subject, ".")+1:]
		rows[action+"/"+ev.Data["course_id"]]++
		ids[e.id]++
	}
	return rows, ids
}

// commitLSN is the commit LSN in a cdc id, cdc:<slot>:<LSN>:<index>.
func commitLSN(t *testing.T, id string) pglogrepl.LSN {
	t.Helper()
	parts := strings.Split(id, ":")
	lsn, err := pglogrepl.ParseLSN(parts[2])
	if err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	return lsn
}

// confirmedFlush is the slot's confirmed_flush_lsn.
func (r *rig) confirmedFlush() pglogrepl.LSN {
	r.t.Helper()
	var s string
	c := r.conn()
	if err := c.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", r.slot()).Scan(&s); err != nil {
		r.t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		r.t.Fatal(err)
	}
	return lsn
}

// The process is SIGKILLed at a fail point of the COPY transaction (the
// 4th), then started again. Every row's event is in the stream exactly
// once, and the slot's confirmed position covers the last commit.
func TestCrashAtFailPoints(t *testing.T) {
	for _, point := range []string{"after-puback", "mid-publish", "after-confirm"} {
		t.Run(point, func(t *testing.T) {
			r := newRig(t, rigOptions{noRunner: true})
			p := r.process("CDC_FAIL_POINT=" + point + ":4")
			want := r.workload()
			if code := p.Wait(t, 30*time.Second); code != -1 && code != 128+int(syscall.SIGKILL) {
				t.Fatalf("the process exited with %d, want a SIGKILL at the fail point", code)
			}
			p.WaitLog(t, "fail point reached", time.Second)
			before := r.events()
			copied, copyLSN := 0, pglogrepl.LSN(0)
			for _, e := range before {
				var ev struct {
					Data map[string]string `json:"data"`
				}
				_ = json.Unmarshal(e.data, &ev)
				if e.subject == "events.course.created" && len(ev.Data["course_id"]) == 4 {
					copied++
					copyLSN = commitLSN(t, e.id)
				}
			}
			confirmed := r.confirmedFlush()
			switch point {
			case "after-puback":
				if copied != 300 || confirmed >= copyLSN {
					t.Fatalf("at the kill: %d of the COPY's events in (want 300), confirmed %s (want before its commit %s)", copied, confirmed, copyLSN)
				}
			case "mid-publish":
				if copied == 0 || copied >= 300 || len(before) >= 405 || confirmed >= copyLSN {
					t.Fatalf("at the kill: %d of the COPY's events in (want some, not all), %d in all, confirmed %s (want before %s)", copied, len(before), confirmed, copyLSN)
				}
			case "after-confirm":
				if copied != 300 || confirmed <= copyLSN {
					t.Fatalf("at the kill: %d of the COPY's events in (want 300), confirmed %s (want past its commit %s)", copied, confirmed, copyLSN)
				}
			}
			p2 := r.process()
			r.waitEvents(405)
			if code := p2.Stop(t, 20*time.Second); code != 0 {
				t.Errorf("the restarted process exited with %d after SIGTERM", code)
			}
			got := r.events()
			rows, ids := rowsOf(t, got)
			for k, n := range want {
				if rows[k] != n {
					t.Errorf("row event %s: %d in the stream, want %d", k, rows[k], n)
				}
			}
			if len(got) != 405 || len(ids) != 405 {
				t.Errorf("%d events with %d distinct ids, want 405 of each", len(got), len(ids))
			}
			last := commitLSN(t, got[len(got)-1].id)
			if c := r.confirmedFlush(); c <= last {
				t.Errorf("confirmed_flush_lsn %s does not cover the last commit %s", c, last)
			}
		})
	}
}

// With a duplicate window shorter than the restart, the transaction
// published before the kill is stored twice: repeats are allowed, loss not.
func TestCrashPastTheDuplicateWindow(t *testing.T) {
	r := newRig(t, rigOptions{noRunner: true, duplicates: 100 * time.Millisecond})
	p := r.process("CDC_FAIL_POINT=after-puback:4")
	want := r.workload()
	p.Wait(t, 30*time.Second)
	time.Sleep(300 * time.Millisecond) // past the window: the repeats are not dropped
	r.process()
	got := r.waitEvents(405 + 300)
	rows, ids := rowsOf(t, got)
	for k, n := range want {
		if rows[k] < n {
			t.Errorf("row event %s: %d in the stream, want at least %d", k, rows[k], n)
		}
	}
	for id, n := range ids {
		if n > 2 {
			t.Errorf("id %s stored %d times", id, n)
		}
	}
}

// dev runs cdc in the worker's process when CDC_DATABASE_URL is set and
// the rules have a cdc section: a row change removes its keys.
func TestDevRunsCDC(t *testing.T) {
	r := newRig(t, rigOptions{noRunner: true})
	env := append(r.env("REDIS_URL=redis://"+r.rdb.Options().Addr+"/0", "NATS_CONSUMER=dev"), "HOME="+t.TempDir(), "PATH=/usr/bin:/bin")
	p := testproc.Start(t, env, "dev")
	p.WaitLog(t, "streaming from the slot", 60*time.Second)
	r.set("cache:course_analytics:11", "cache:course_analytics:110")
	r.exec("INSERT INTO courses (id) VALUES (11)")
	r.waitGone("cache:course_analytics:11")
	r.requireKept("cache:course_analytics:110")
	if code := p.Stop(t, 30*time.Second); code != 0 {
		t.Errorf("dev exited with %d after SIGTERM", code)
	}
}

// NATS goes away while rows change and comes back: cdc confirms nothing
// meanwhile, publishes again with the same ids, and every row's event is in
// the stream once.
func TestNATSOutageLosesNothing(t *testing.T) {
	port, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	opts := servers.NATSOptions{Port: port, StoreDir: t.TempDir()}
	ns, err := servers.StartNATS(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	r := &rig{t: t, db: testserver.Database(t), log: &logBuffer{}}
	testserver.SQL(t, r.db, schema)
	r.nc, r.js = testserver.JetStream(t, ns)
	if _, err := r.js.CreateStream(context.Background(), worker.Config{}.StreamConfig()); err != nil {
		t.Fatal(err)
	}
	p := r.process()
	for i := 1; i <= 50; i++ {
		r.exec("INSERT INTO courses (id) VALUES ($1)", i)
	}
	r.waitEvents(50)
	ns.Shutdown()
	ns.WaitForShutdown()
	for i := 51; i <= 100; i++ {
		r.exec("INSERT INTO courses (id) VALUES ($1)", i)
	}
	p.WaitLog(t, "publish to JetStream failed", 30*time.Second)
	before := r.confirmedFlush()
	if ns, err = servers.StartNATS(opts); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, "the test's connection back", 20*time.Second, r.nc.IsConnected)
	got := r.waitEvents(100)
	p.WaitLog(t, "publishing to JetStream again", 30*time.Second)
	testserver.Eventually(t, "the last commit confirmed", 20*time.Second, func() bool {
		return r.confirmedFlush() > commitLSN(t, r.events()[len(r.events())-1].id)
	})
	rows, ids := rowsOf(t, r.events())
	for i := 1; i <= 100; i++ {
		if n := rows[fmt.Sprintf("created/%d", i)]; n != 1 {
			t.Errorf("course %d: %d events, want 1", i, n)
		}
	}
	if len(ids) != 100 || len(got) < 100 {
		t.Errorf("%d distinct ids for %d messages, want 100", len(ids), len(got))
	}
	if before > commitLSN(t, got[50].id) {
		t.Errorf("confirmed %s during the outage, past the first unpublished commit %s", before, commitLSN(t, got[50].id))
	}
}
