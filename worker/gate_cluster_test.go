package worker_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/redis/go-redis/v9"
)

// clusterInfoCalls is how many CLUSTER INFO node has answered (INFO
// commandstats).
func clusterInfoCalls(t *testing.T, node *servers.Redis) int64 {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: node.Addr()})
	defer rdb.Close()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_cluster|info:calls="); ok {
			n, _, _ := strings.Cut(rest, ",")
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// TestClusterMasterDownPausesConsumption runs the worker on a real
// 3-master Redis Cluster (AOF on, so a stopped master keeps its keys) and
// stops one master while events flow, then starts it again. The health gate
// watches every master: consumption pauses while one is down, and every
// event (exact keys and a pattern each) is applied once the master is
// back (some twice: held past AckWait, they were redelivered), none
// dead-lettered, every key they name is gone, and the neighbours stay.
func TestClusterMasterDownPausesConsumption(t *testing.T) {
	c := testserver.RedisClusterWith(t, servers.RedisClusterOptions{Masters: 3, AppendOnly: true, NodeTimeout: time.Second})
	rdb := testserver.ClusterClient(t, c)
	h := newHarness(t)
	eng, err := engine.NewCluster(rdb, engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	const events = 60
	ctx := t.Context()
	pipe := rdb.Pipeline()
	for i := range events {
		id := strconv.Itoa(i)
		pipe.Set(ctx, "user:"+id, "v", 0)
		pipe.Set(ctx, "user:"+id+":profile", "v", 0)
		pipe.Set(ctx, "user:"+id+"0000:kept", "v", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	r := h.start(testConfig(), worker.Deps{Redis: rdb, Engine: eng})

	for i := range events / 3 {
		h.publish("events.user.updated", map[string]any{"user_id": strconv.Itoa(i)})
	}
	down := c.Nodes()[1]
	if err := down.Stop(); err != nil {
		t.Fatal(err)
	}
	h.eventually("the gate closes while a master is down", 10*time.Second, func() bool { return !r.w.Stats().RedisUp })
	// The health probes (backing off from 100 ms) are the clock here: each
	// asks every master for CLUSTER INFO, and a live one counts them. Two
	// probes after the gate closed (300 ms), the fetch that was waiting
	// then (FetchMaxWait, 200 ms) has returned; the events published from
	// then on wait through three more.
	live := c.Nodes()[0]
	probes := clusterInfoCalls(t, live)
	h.eventually("2 health probes while paused", 20*time.Second, func() bool { return clusterInfoCalls(t, live) >= probes+2 })
	for i := events / 3; i < events; i++ {
		h.publish("events.user.updated", map[string]any{"user_id": strconv.Itoa(i)})
	}
	probes = clusterInfoCalls(t, live)
	h.eventually("3 more health probes while paused", 30*time.Second, func() bool { return clusterInfoCalls(t, live) >= probes+3 })
	paused := r.w.Stats()
	if paused.DeadLettered != 0 || paused.RedisUp {
		t.Fatalf("while a master was down: %+v, want nothing dead-lettered and Redis down", paused)
	}
	// Fetching stopped: the events published while paused are all still
	// in the stream.
	cons, err := h.js.Consumer(ctx, "EVENTS", "invalidator")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cons.Info(ctx); err != nil || info.NumPending != events-events/3 {
		t.Fatalf("consumer while paused: %+v, %v; want the %d events published meanwhile pending", info, err, events-events/3)
	}
	if err := down.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitOK(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Events held past AckWait while paused are redelivered: at least once.
	h.eventually("every event applied", 30*time.Second, func() bool { return r.w.Stats().Applied >= events })
	st := r.w.Stats()
	if st.DeadLettered != 0 {
		t.Errorf("%d events dead-lettered, want none", st.DeadLettered)
	}
	for i := range events {
		id := strconv.Itoa(i)
		if n := rdb.Exists(ctx, "user:"+id, "user:"+id+":profile").Val(); n != 0 {
			t.Errorf("user %s: %d of its keys are still there", id, n)
		}
		if rdb.Exists(ctx, "user:"+id+"0000:kept").Val() != 1 {
			t.Errorf("user %s: a neighbour was removed", id)
		}
	}
	t.Logf("%d events: applied %d before the restart, %d in all (%d redeliveries), %d dead-lettered",
		events, paused.Applied, st.Applied, st.Applied-events, st.DeadLettered)
}
