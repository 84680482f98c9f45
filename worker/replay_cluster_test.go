package worker_test

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/redis/go-redis/v9"
)

// TestClusterFailoverReplay is TestFailoverReplay on a Redis Cluster of 3
// masters with a replica each: the replication of the key's shard is held,
// an event removes the key on its master and is acked, the master is
// SIGKILLed, and the cluster promotes the replica, which never saw the
// UNLINK. With the window on (the default), the worker sees that shard's
// new master and applies the event again, and the key is gone; with it off
// the key stays, stale, which shows the loss was real.
func TestClusterFailoverReplay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		window    time.Duration
		wantStale bool
	}{
		{name: "on", window: 0, wantStale: false},
		{name: "off", window: -1, wantStale: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := testserver.RedisClusterWith(t, servers.RedisClusterOptions{Masters: 3, Replicas: 1, NodeTimeout: time.Second})
			rdb := testserver.ClusterClient(t, c)
			ctx := context.Background()
			const key, other = "cache:replay:1", "cache:replay:other"
			master, replica, err := c.MasterOf(ctx, key)
			if err != nil || replica == nil {
				t.Fatalf("master of %s: %v, %v, replica %v", key, master, err, replica)
			}
			direct := redis.NewClient(&redis.Options{Addr: master.Addr()})
			defer direct.Close()
			for _, k := range []string{key, other} {
				if err := rdb.Set(ctx, k, "v", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := direct.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
				t.Fatalf("WAIT 1 = %d, %v", n, err)
			}
			h := newHarness(t)
			eng, err := engine.NewCluster(rdb, engine.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer eng.Close()
			rec, logs := newOutcomes(), &testserver.Logs{}
			cfg := testConfig()
			cfg.FailoverReplayWindow = tc.window
			cfg.Logger = slog.New(logs)
			r := h.start(cfg, worker.Deps{Redis: rdb, Engine: eng, Observer: rec})
			h.eventually("the replayer watches the masters", 10*time.Second, func() bool {
				return logs.Find("watches the cluster's masters") != ""
			})

			const hold = 5 * time.Second
			held := time.Now()
			if err := servers.HoldReplication(ctx, replica, hold); err != nil {
				t.Fatal(err)
			}
			seq := h.publish("events.cache.invalidate", map[string]any{"keys": []any{key}})
			h.eventually("the event is applied and acked", 10*time.Second, func() bool {
				return slices.Contains(rec.of(seq), worker.Applied)
			})
			if nodeHas(t, master, key) {
				t.Fatal("the key is still on the master after the event was applied")
			}
			if err := servers.Kill(master); err != nil {
				t.Fatal(err)
			}
			if err := servers.WaitLinkDown(ctx, replica); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(held); d > hold/2 {
				t.Fatalf("the replica lost its link %v after replication was held for %v: too late to be sure the UNLINK was lost", d, hold)
			}
			if err := servers.ReleaseReplication(ctx, replica); err != nil {
				t.Fatal(err)
			}
			h.eventually("the replica is promoted", 30*time.Second, func() bool {
				m, _, err := c.MasterOf(ctx, key)
				return err == nil && m == replica
			})

			if tc.wantStale {
				h.eventually("the worker sees the shard's new master", 20*time.Second, func() bool {
					return logs.Find("master changed") != ""
				})
				time.Sleep(time.Second) // a replay, if any, would be done by now
				if !nodeHas(t, replica, key) {
					t.Fatal("without the replay the key is gone from the new master: the UNLINK was not lost, so this test proves nothing")
				}
				t.Logf("without the replay %s is back on the new master, stale (%s)", key, logs.Find("master changed"))
			} else {
				h.eventually("the replay removes the stale key", 30*time.Second, func() bool {
					return logs.Find("failover replay done") != "" && !nodeHas(t, replica, key)
				})
				t.Logf("%s; %s", logs.Find("replaying"), logs.Find("failover replay done"))
			}
			if rdb.Exists(ctx, other).Val() != 1 {
				t.Error(other + ", which no event names, is gone")
			}
			if outs := rec.of(seq); !slices.Equal(outs, []worker.Outcome{worker.Applied}) {
				t.Errorf("outcomes of the event = %v, want one applied (the replay acks nothing)", outs)
			}
			if st := r.w.Stats(); st.DeadLettered != 0 || st.Applied != 1 {
				t.Errorf("stats %+v, want 1 applied and none dead-lettered", st)
			}
		})
	}
}
