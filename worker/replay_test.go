package worker_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
)

// TestFailoverReplay loses an acked UNLINK in a failover on purpose, with
// the replay window on and off. The replica's replication is held
// (CLIENT PAUSE WRITE on the replica), an event removes a key on the master
// and is acked, the master is SIGKILLed at once, and the sentinels promote
// the replica, which never saw the UNLINK: the key is back, stale.
//   - window off: the worker sees the new master and the key stays on it,
//     stale: the loss is real, and nothing but the replay would repair it;
//   - window on (the default, 10s, or 500ms, shorter than the failover):
//     the worker sees the new master's run_id, re-reads the event from the
//     stream and applies it again, and the key is gone; nothing is acked or
//     dead-lettered twice.
func TestFailoverReplay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		window    time.Duration
		wantStale bool
	}{
		{name: "on", window: 0, wantStale: false}, // 0: the default window
		{name: "off", window: -1, wantStale: true},
		// The window counts back from when the old master last answered,
		// not from when the new one is seen: the failover (about 2s) takes
		// longer than this window, and the event is replayed all the same.
		{name: "shorter than the outage", window: 500 * time.Millisecond, wantStale: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSentinelHarness(t)
			const key = "cache:replay:1"
			s.setReplicated(key, "cache:replay:other")
			rec, logs := newOutcomes(), &testserver.Logs{}
			cfg := testConfig()
			cfg.FailoverReplayWindow = tc.window
			cfg.Logger = slog.New(logs)
			r := s.start(cfg, worker.Deps{Observer: rec})
			master, replica := s.master()
			ctx := context.Background()

			// Replication is held from here until the replica has lost its
			// link to the killed master; the pause must outlast the event's
			// apply and the kill, else the UNLINK reaches the replica.
			const hold = 5 * time.Second
			held := time.Now()
			if err := servers.HoldReplication(ctx, replica, hold); err != nil {
				t.Fatal(err)
			}
			seq := s.publish("events.cache.invalidate", map[string]any{"keys": []any{key}})
			s.eventually("the event is applied and acked", 10*time.Second, func() bool {
				return slices.Contains(rec.of(seq), worker.Applied)
			})
			if nodeHas(t, master, key) {
				t.Fatal("the key is still on the master after the event was applied")
			}
			if err := s.sentinels.Kill(master); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			// Once the replica has lost the link, the UNLINK it held is gone;
			// release it then, so that it does not hold up its own promotion.
			if err := servers.WaitLinkDown(ctx, replica); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(held); d > hold/2 {
				t.Fatalf("the replica lost its link %v after replication was held for %v: too late to be sure the UNLINK was lost", d, hold)
			}
			if err := servers.ReleaseReplication(ctx, replica); err != nil {
				t.Fatal(err)
			}
			promoted, err := s.sentinels.WaitFailover(ctx, master.Addr())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("failover %v after the kill", time.Since(killed).Round(time.Millisecond))
			if promoted != replica {
				t.Fatalf("promoted %s, want the replica %s", promoted.Addr(), replica.Addr())
			}

			if tc.wantStale {
				// The last line the replayer writes for a master change,
				// whatever it does: the replay is off, or done, or stopped.
				s.eventually("the worker has handled the new master", 20*time.Second, func() bool {
					return logs.Find("the failover replay is off") != "" || logs.Find("failover replay done") != "" ||
						logs.Find("failover replay stopped") != ""
				})
				if !nodeHas(t, promoted, key) {
					t.Fatal("without the replay the key is gone from the new master: the UNLINK was not lost, so this test proves nothing")
				}
				t.Logf("without the replay %s is back on the new master, stale (%s)", key, logs.Find("master changed"))
			} else {
				s.eventually("the replay removes the stale key", 20*time.Second, func() bool {
					return logs.Find("failover replay done") != "" && !nodeHas(t, promoted, key)
				})
				t.Logf("%s; %s", logs.Find("replaying"), logs.Find("failover replay done"))
			}
			if !nodeHas(t, promoted, "cache:replay:other") {
				t.Error("cache:replay:other, which no event names, is gone")
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

// A permission refused during a failover replay pauses the replay as it
// pauses the handlers (one retry loop serves both): the replay waits, the
// worker says why it is paused, and once the permission is granted the
// replay removes the key and reports no failure. The master change is a
// restart (a new run_id); the worker's ACL user comes back without UNLINK.
func TestRefusedPermissionPausesTheFailoverReplay(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	acl := h.acl
	user := h.user()
	const key = "user:1"
	h.set(key)
	logs := &testserver.Logs{}
	cfg := testConfig()
	cfg.Logger = slog.New(logs)
	r := h.start(cfg, worker.Deps{Redis: user, Engine: newEngine(t, user, engine.Config{})})
	seq := h.publish("events.user.updated", map[string]any{"user_id": 1})
	h.eventually("the event applied", 10*time.Second, func() bool { return r.w.Stats().Applied == 1 && !h.exists(key) })

	// A new master: the key is back (as if its UNLINK was lost), and the
	// worker's user may not UNLINK.
	if err := h.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := h.redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h.set(key)
	acl("on", ">pw", "~*", "+@all", "-unlink")
	h.eventually("the replay paused with the reason", 20*time.Second, func() bool {
		return logs.Find("replaying") != "" && strings.Contains(r.w.Stats().Paused, "NOPERM")
	})
	if !h.exists(key) {
		t.Fatal("the key went while UNLINK was refused")
	}
	if s := logs.Find("failover replay"); s != "" {
		t.Fatalf("the replay ended while UNLINK was refused: %s", s)
	}
	acl("+unlink")
	h.eventually("the replay done once granted", 30*time.Second, func() bool {
		return logs.Find("failover replay done") != "" && !h.exists(key)
	})
	if s := logs.Find("could not replay"); s != "" {
		t.Errorf("the replay counted a failure: %s (seq %d)", s, seq)
	}
}
