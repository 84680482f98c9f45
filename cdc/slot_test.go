package cdc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cdc"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
)

// ready is the status code and "status" of a process's /health/ready.
func ready(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/health/ready")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body.Status
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

// A second process on the slot is a standby (ready answers 503
// "standby"). SIGKILL the active one while 10,000 single-row UPDATE
// transactions are being written: the standby takes over, and every
// course's key is gone in the end, while a key no row names stays.
func TestStandbyTakesOver(t *testing.T) {
	r := newRig(t, rigOptions{noRunner: true})
	const n = 10000
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := r.process("HTTP_ADDR=" + addrA)
	b := testproc.Start(t, r.env("HTTP_ADDR="+addrB), "cdc")
	b.WaitLog(t, "standby", 30*time.Second)
	if code, st := ready(t, addrB); code != http.StatusServiceUnavailable || st != "standby" {
		t.Fatalf("standby's /health/ready = %d %q, want 503 \"standby\"", code, st)
	}
	if code, _ := ready(t, addrA); code != http.StatusOK {
		t.Fatalf("active's /health/ready = %d, want 200", code)
	}
	if m := metricsText(t, addrB); !strings.Contains(m, "invalidator_cdc_standby 1") {
		t.Errorf("the standby's /metrics lacks invalidator_cdc_standby 1")
	}
	r.set("cache:course_analytics:10000")
	r.exec(fmt.Sprintf("INSERT INTO courses (id) SELECT g FROM generate_series(1, %d) g", n))
	r.waitGone("cache:course_analytics:10000") // the inserts are applied
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("cache:course_analytics:%d", i+1)
	}
	r.set(keys...)
	r.set("cache:course_analytics:20000")
	writes := make(chan error, 1)
	go func() {
		c := r.conn()
		for i := 1; i <= n; i++ {
			if _, err := c.Exec(context.Background(), "UPDATE courses SET title = 'v2' WHERE id = $1", i); err != nil {
				writes <- err
				return
			}
		}
		writes <- nil
	}()
	testserver.Eventually(t, "some updates applied", 20*time.Second, func() bool {
		left, _ := r.rdb.Exists(context.Background(), keys[:100]...).Result()
		return left < 100
	})
	killed := time.Now()
	a.Kill(t)
	b.WaitLog(t, "streaming from the slot", 30*time.Second)
	t.Logf("the standby took over %s after the kill", time.Since(killed).Round(time.Millisecond))
	if err := <-writes; err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, "every course's key gone", 60*time.Second, func() bool {
		left := 0
		for i := 0; i < n; i += 1000 {
			m, _ := r.rdb.Exists(context.Background(), keys[i:i+1000]...).Result()
			left += int(m)
		}
		return left == 0
	})
	r.requireKept("cache:course_analytics:20000")
	if code, _ := ready(t, addrB); code != http.StatusOK {
		t.Errorf("the new active's /health/ready = %d, want 200", code)
	}
	var detailed struct {
		Components struct {
			CDC struct {
				Role       string `json:"role"`
				Slot       string `json:"slot"`
				LagBytes   int64  `json:"lag_bytes"`
				LastCommit struct {
					LSN string `json:"lsn"`
				} `json:"last_commit"`
			} `json:"cdc"`
		} `json:"components"`
	}
	getJSON(t, "http://"+addrB+"/api/v3/system/health/detailed", &detailed)
	if c := detailed.Components.CDC; c.Role != "active" || c.Slot != r.slot() || c.LastCommit.LSN == "" {
		t.Errorf("detailed health's cdc component = %+v, want the active role, the slot and the last commit", c)
	}
	body := metricsText(t, addrB)
	for _, m := range []string{"invalidator_cdc_transactions_total", `invalidator_cdc_events_total{action="updated",entity="course"}`,
		"invalidator_cdc_slot_lag_bytes", "invalidator_cdc_commit_to_ack_seconds_bucket", "invalidator_cdc_standby 0", "invalidator_cdc_slot_lost_total 0",
		"invalidator_cdc_visibility_wait_seconds_count"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func metricsText(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// After heavy writes to a table the publication leaves out, the slot's lag
// falls under 1 MB within seconds: idle keepalives are confirmed.
func TestIdleSlotKeepsUp(t *testing.T) {
	r := newRig(t, rigOptions{noRunner: true})
	run, _ := r.startRunner(cdc.Config{})
	r.exec("INSERT INTO audit (note) SELECT repeat('x', 200) FROM generate_series(1, 50000)")
	var lag int64
	testserver.Eventually(t, "the slot's lag under 1 MB", 30*time.Second, func() bool {
		c := r.conn()
		err := c.QueryRow(context.Background(), `SELECT (pg_current_wal_flush_lsn() - confirmed_flush_lsn)::bigint
			FROM pg_replication_slots WHERE slot_name = $1`, r.slot()).Scan(&lag)
		c.Close(context.Background())
		return err == nil && lag < 1<<20
	})
	t.Logf("lag %d bytes", lag)
	testserver.Eventually(t, "the runner reports a lag under 1 MB", 10*time.Second, func() bool {
		l := run.Status().LagBytes
		return l >= 0 && l < 1<<20
	})
}

// The slot is dropped while the process is stopped, and a course changes
// meanwhile. The next start publishes every entity's bulk event before any
// row event, so the change missed is covered.
func TestLostSlotPublishesBulkFirst(t *testing.T) {
	r := newRig(t, rigOptions{noRunner: true})
	_, stop := r.startRunner(cdc.Config{})
	r.set("cache:course_analytics:1")
	r.exec("INSERT INTO courses (id) VALUES (1)")
	r.waitGone("cache:course_analytics:1")
	stop()
	testserver.Eventually(t, "the slot inactive", 10*time.Second, func() bool {
		c := r.conn()
		defer c.Close(context.Background())
		var active bool
		return c.QueryRow(context.Background(), "SELECT active FROM pg_replication_slots WHERE slot_name = $1", r.slot()).Scan(&active) == nil && !active
	})
	r.exec("SELECT pg_drop_replication_slot($1)", r.slot())
	r.exec("UPDATE courses SET title = 'missed' WHERE id = 1") // no slot sees this
	r.set("cache:course_analytics:1", "cache:course_analytics:1:w", "user:9")
	before := len(r.events())
	r.startRunner(cdc.Config{})
	r.set("cache:course_analytics:2")
	r.exec("INSERT INTO courses (id) VALUES (2)")
	r.waitGone("cache:course_analytics:1", "cache:course_analytics:1:w", "cache:course_analytics:2")
	got := r.waitEvents(before + 3)[before:]
	if got[0].subject != "events.course.bulk" || got[1].subject != "events.user.bulk" || got[2].subject != "events.course.created" {
		t.Errorf("events after the restart: %s, %s, %s; want events.course.bulk, events.user.bulk, then the row", got[0].subject, got[1].subject, got[2].subject)
	}
	if !contains(r.log.String(), "replication slot was lost") {
		t.Errorf("no ⚠️ line for the lost slot in:\n%s", r.log)
	}
}

// A slot whose WAL was removed (wal_status lost, through
// max_slot_wal_keep_size) is dropped, made again, and answered with bulk
// events.
func TestSlotWithLostWAL(t *testing.T) {
	r := newRig(t, rigOptions{noRunner: true})
	_, stop := r.startRunner(cdc.Config{})
	stop()
	pg := testserver.Postgres(t)
	admin := pg.URL("postgres")
	testserver.SQL(t, admin, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
	testserver.SQL(t, admin, "SELECT pg_reload_conf()")
	t.Cleanup(func() {
		testserver.SQL(t, admin, "ALTER SYSTEM RESET max_slot_wal_keep_size")
		testserver.SQL(t, admin, "SELECT pg_reload_conf()")
	})
	var status string
	testserver.Eventually(t, "wal_status lost", 60*time.Second, func() bool {
		r.exec("INSERT INTO audit (note) SELECT repeat('y', 500) FROM generate_series(1, 20000)")
		r.exec("SELECT pg_switch_wal()")
		r.exec("CHECKPOINT")
		c := r.conn()
		defer c.Close(context.Background())
		_ = c.QueryRow(context.Background(), "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", r.slot()).Scan(&status)
		return status == "lost"
	})
	before := len(r.events())
	r.set("cache:course_analytics:5")
	r.startRunner(cdc.Config{})
	r.waitGone("cache:course_analytics:5")
	got := r.waitEvents(before + 2)[before:]
	if got[0].subject != "events.course.bulk" || got[1].subject != "events.user.bulk" {
		t.Errorf("events after the restart: %s, %s; want the bulk events", got[0].subject, got[1].subject)
	}
	if !contains(r.log.String(), "wal_status lost") {
		t.Errorf("no line for the lost WAL in:\n%s", r.log)
	}
}

// The setup the README gives works: the tables' owner makes the
// publication, and cdc runs as a role with only REPLICATION LOGIN.
func TestLeastPrivilegeRole(t *testing.T) {
	r := newRig(t, rigOptions{noRunner: true})
	role := "cdc_" + r.slot()
	r.exec("CREATE PUBLICATION invalidator FOR TABLE courses, users")
	r.exec("CREATE ROLE " + role + " WITH LOGIN REPLICATION PASSWORD 'pw'")
	owner := r.db
	r.db = strings.Replace(r.db, "postgres@", role+":pw@", 1)
	r.startRunner(cdc.Config{})
	r.db = owner
	r.set("cache:course_analytics:3")
	r.exec("INSERT INTO courses (id) VALUES (3)")
	r.waitGone("cache:course_analytics:3")
}
