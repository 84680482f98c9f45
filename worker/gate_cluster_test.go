package worker_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
)

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
	for i := events / 3; i < events; i++ {
		h.publish("events.user.updated", map[string]any{"user_id": strconv.Itoa(i)})
	}
	h.eventually("the gate closes while a master is down", 10*time.Second, func() bool { return !r.w.Stats().RedisUp })
	time.Sleep(1500 * time.Millisecond) // events wait through several health intervals and ack waits
	paused := r.w.Stats()
	if paused.DeadLettered != 0 {
		t.Fatalf("%d events dead-lettered while a master was down", paused.DeadLettered)
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
