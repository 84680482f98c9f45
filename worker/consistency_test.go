package worker_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/internal/metrics"
	"github.com/invalidator/invalidator/internal/ops"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// checkerConfig samples every event and checks it at delays.
func checkerConfig(m *metrics.Metrics, delays ...time.Duration) consistency.Config {
	var labels []string
	for _, d := range delays {
		labels = append(labels, consistency.Timescale(d))
	}
	return consistency.Config{Sample: 1, Delays: delays, Observer: m.Consistency(labels)}
}

// guardFill writes key through the guard (claim, guarded fill), as
// cache.Fetch does, and returns the value stored, stamp included.
func guardFill(t *testing.T, rdb *redis.Client, key, payload string) string {
	t.Helper()
	ctx := context.Background()
	p, err := guard.New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Claim(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := p.Fill(ctx, c, []byte(payload), time.Minute); err != nil || !ok {
		t.Fatalf("fill %s = %v, %v", key, ok, err)
	}
	v, err := rdb.Get(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func get(t *testing.T, rdb *redis.Client, key string) string {
	t.Helper()
	v, err := rdb.Get(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

// TestConsistencyCheckerInTheWorker runs the worker with the checker on
// every event, and its metrics and ops endpoint as `invalidator run` wires
// them. One event removes user:1 (exact) and user:1:* (a pattern over
// user:1:a and user:1:b, filled through the guard). Right after it is
// applied, a buggy snapshot restore writes user:1's old generation token
// and old stamped value back (stale), and a service fills user:1:a again
// through the guard (refilled); user:1:b stays gone (consistent). The
// metrics, the endpoint's counts and nines, its finding and the one ⚠️
// line agree, at both timescales.
func TestConsistencyCheckerInTheWorker(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	old := guardFill(t, h.rdb, "user:1", "old")
	oldToken := get(t, h.rdb, guard.Key("user:1"))
	guardFill(t, h.rdb, "user:1:a", "old")
	guardFill(t, h.rdb, "user:1:b", "old")
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Sources{})
	logs := &testserver.Logs{}
	cfg := testConfig()
	cfg.Logger = slog.New(logs)
	cfg.Consistency = checkerConfig(m, 300*time.Millisecond, 600*time.Millisecond)
	r := h.start(cfg, worker.Deps{Observer: m, Engine: newEngine(t, h.rdb, engine.Config{Generations: true})})
	if r.w.Consistency() == nil {
		t.Fatal("the checker is off")
	}
	h.publish("events.user.updated", map[string]any{"user_id": 1})
	h.eventually("the event applied", 10*time.Second, func() bool { return r.w.Stats().Applied == 1 })
	ctx := context.Background()
	if err := h.rdb.MSet(ctx, guard.Key("user:1"), oldToken, "user:1", old).Err(); err != nil {
		t.Fatal(err)
	}
	guardFill(t, h.rdb, "user:1:a", "new")
	h.eventually("both checks made", 10*time.Second, func() bool {
		return counterValue(t, reg, "invalidator_consistency_checks_total", "600ms", "pattern", "consistent") == 1
	})

	for _, ts := range []string{"300ms", "600ms"} {
		for _, c := range []struct {
			kind, result string
			want         float64
		}{{"exact", "stale", 1}, {"pattern", "refilled", 1}, {"pattern", "consistent", 1}, {"exact", "consistent", 0}, {"exact", "unknown", 0}} {
			if got := counterValue(t, reg, "invalidator_consistency_checks_total", ts, c.kind, c.result); got != c.want {
				t.Errorf("checks_total{timescale=%s,kind=%s,result=%s} = %v, want %v", ts, c.kind, c.result, got, c.want)
			}
		}
	}
	srv := httptest.NewServer(ops.New("", ops.Deps{Redis: h.rdb, Worker: r.w, Gatherer: reg}).Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/api/v3/system/consistency")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	var rep struct {
		Enabled bool
		consistency.Report
	}
	if err := json.Unmarshal(body, &rep); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v3/system/consistency = %d %s (%v)", res.StatusCode, body, err)
	}
	if !rep.Enabled || !slices.Equal(rep.Delays, []string{"300ms", "600ms"}) || len(rep.Timescales) != 2 {
		t.Fatalf("report %s", body)
	}
	for _, ts := range rep.Timescales {
		h := ts.LastHour
		if h.Checked != 3 || h.Stale != 1 || h.Unknown != 0 || h.Nines == nil || *h.Nines < 0.47 || *h.Nines > 0.48 || h.NinesAtLeast != nil {
			t.Errorf("%s last hour %s, want 3 checked, 1 stale, -log10(1/3) = 0.477 nines", ts.Timescale, body)
		}
	}
	if len(rep.Recent) != 1 {
		t.Fatalf("recent_stale %s, want one finding", body)
	}
	f := rep.Recent[0]
	if f.EventID == "" || f.Subject != "events.user.updated" || f.Key != "user:1" || f.Displaced != oldToken ||
		f.Generation != guard.Key("user:1") || !slices.Equal(f.Timescales, []string{"300ms", "600ms"}) {
		t.Errorf("finding %+v", f)
	}
	warns := logs.Containing("⚠️ stale value")
	if len(warns) != 1 || !strings.Contains(warns[0], "id="+f.EventID) || !strings.Contains(warns[0], "displaced="+oldToken) {
		t.Errorf("⚠️ lines %q, want one for the finding", warns)
	}
}

// TestConsistencyCheckerOff: with a negative sample the worker has no
// checker, and the endpoint says so.
func TestConsistencyCheckerOff(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := testConfig()
	cfg.Consistency.Sample = -1
	r := h.start(cfg, worker.Deps{})
	if r.w.Consistency() != nil {
		t.Fatal("a checker with a negative sample")
	}
	rec := httptest.NewRecorder()
	ops.New("", ops.Deps{Redis: h.rdb, Worker: r.w}).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v3/system/consistency", nil))
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "{\n  \"enabled\": false\n}" {
		t.Errorf("GET /api/v3/system/consistency = %d %q", rec.Code, rec.Body.String())
	}
}

// TestConsistencyCheckerFindsTheLostGeneration loses the invalidation of a
// stamped key in a Sentinel failover, as TestFailoverReplay does, with the
// failover replay off (FAILOVER_REPLAY_WINDOW=0): the replica's
// replication is held, the event's GETDEL of the key's own generation and
// its UNLINK are acked by the master, the master is SIGKILLed, and the
// replica that never saw them is promoted. The key is back with its old
// stamp and its old generation: the checker, reading the new master at the
// 8s delay, reports it stale, with the token the event displaced.
func TestConsistencyCheckerFindsTheLostGeneration(t *testing.T) {
	t.Parallel()
	s := newSentinelHarness(t)
	const key = "user:5"
	ctx := context.Background()
	p, err := guard.New(s.rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Set(ctx, key, []byte("old"), time.Minute); err != nil {
		t.Fatal(err)
	}
	oldToken := get(t, s.rdb, guard.Key(key))
	if n, err := s.rdb.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v", n, err)
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, metrics.Sources{})
	logs := &testserver.Logs{}
	cfg := testConfig()
	cfg.FailoverReplayWindow = -1 // FAILOVER_REPLAY_WINDOW=0
	cfg.Logger = slog.New(logs)
	cfg.Consistency = checkerConfig(m, 200*time.Millisecond, 8*time.Second)
	r := s.start(cfg, worker.Deps{Observer: m, Engine: newEngine(t, s.rdb, engine.Config{Generations: true})})
	master, replica := s.master()

	const hold = 5 * time.Second
	held := time.Now()
	if err := servers.HoldReplication(ctx, replica, hold); err != nil {
		t.Fatal(err)
	}
	s.publish("events.user.updated", map[string]any{"user_id": 5})
	s.eventually("the event applied", 10*time.Second, func() bool { return r.w.Stats().Applied == 1 })
	if nodeHas(t, master, key) {
		t.Fatal("the key is still on the master after the event was applied")
	}
	if err := s.sentinels.Kill(master); err != nil {
		t.Fatal(err)
	}
	if err := servers.WaitLinkDown(ctx, replica); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(held); d > hold/2 {
		t.Fatalf("the replica lost its link %v after replication was held for %v: too late to be sure the writes were lost", d, hold)
	}
	if err := servers.ReleaseReplication(ctx, replica); err != nil {
		t.Fatal(err)
	}
	promoted, err := s.sentinels.WaitFailover(ctx, master.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if promoted != replica || !nodeHas(t, promoted, key) {
		t.Fatal("the key is not back on the promoted replica: the invalidation was not lost, so this test proves nothing")
	}
	s.eventually("the 8s check", 20*time.Second, func() bool {
		return counterValue(t, reg, "invalidator_consistency_checks_total", "8s", "exact", "stale")+
			counterValue(t, reg, "invalidator_consistency_checks_total", "8s", "exact", "consistent") > 0
	})
	if n := counterValue(t, reg, "invalidator_consistency_checks_total", "8s", "exact", "stale"); n != 1 {
		t.Fatalf("stale at 8s = %v, want 1", n)
	}
	rep := r.w.Consistency().Report(time.Now())
	if len(rep.Recent) != 1 || rep.Recent[0].Key != key || rep.Recent[0].Displaced != oldToken || !slices.Contains(rep.Recent[0].Timescales, "8s") {
		t.Errorf("findings %+v, want %s stale at 8s with the displaced token %s", rep.Recent, key, oldToken)
	}
	t.Logf("finding %+v", rep.Recent)
}

// counterValue is the value of counter name with the labels timescale,
// kind and result.
func counterValue(t *testing.T, g prometheus.Gatherer, name, timescale, kind, result string) float64 {
	t.Helper()
	return testserver.MetricValue(t, g, name, map[string]string{"timescale": timescale, "kind": kind, "result": result})
}
