package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/redis/go-redis/v9"
)

// LeastPrivilegeACL is the Redis ACL the README documents for the worker:
// the key prefixes of testdata/rules.yaml and the worker's own, and only
// the commands it sends.
var LeastPrivilegeACL = []any{
	"on", ">worker-pw", "resetkeys", "~cache:*", "~user:*", "~invalidator:*", "resetchannels", "-@all",
	"+scan", "+unlink", "+get", "+set", "+mget", "+eval", "+evalsha", "+ping", "+info", "+dbsize",
	"+hello", "+auth", "+client|setname", "+getdel",
}

// TestLeastPrivilegeUser runs the worker as the documented ACL user, with
// generations on (as when warming) and the consistency checker on every
// event (GETDEL and SET GET of the captured generations, its GET and MGET
// reads): exact keys and patterns go, neighbours stay, and nothing is
// refused.
func TestLeastPrivilegeUser(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.rdb.Do(ctx, append([]any{"ACL", "SETUSER", "invalidator"}, LeastPrivilegeACL...)...).Err(); err != nil {
		t.Fatal(err)
	}
	user := testserver.RedisClientAs(t, h.redis, "invalidator", "worker-pw")
	if err := user.Ping(ctx).Err(); err != nil {
		t.Fatalf("the documented user cannot even PING: %v", err)
	}
	h.set("cache:course_analytics:42", "cache:course_analytics:42:summary", "cache:course_analytics:420", "cache:system_stats:global",
		"user:7", "user:7:profile", "user:70", "other:1")
	cfg := testConfig()
	cfg.Consistency = consistency.Config{Sample: 1, Delays: []time.Duration{50 * time.Millisecond}}
	r := h.start(cfg, worker.Deps{Redis: user, Engine: newEngine(t, user, engine.Config{Generations: true})})
	h.publish("events.course.updated", course(42))
	h.publish("events.user.updated", map[string]any{"user_id": "7"})
	h.eventually("both applied", 20*time.Second, func() bool { return r.w.Stats().Applied == 2 })
	h.eventually("both checked", 20*time.Second, func() bool {
		w := r.w.Consistency().Report(time.Now()).Timescales[0].LastHour
		return w.Checked+w.Unknown >= 2
	})
	for _, k := range []string{"cache:course_analytics:42", "cache:course_analytics:42:summary", "cache:system_stats:global", "user:7", "user:7:profile"} {
		if h.exists(k) {
			t.Errorf("%s survived", k)
		}
	}
	for _, k := range []string{"cache:course_analytics:420", "user:70", "other:1"} {
		if !h.exists(k) {
			t.Errorf("%s was removed", k)
		}
	}
	if s := r.w.Stats(); s.Retried != 0 || s.DeadLettered != 0 || s.Paused != "" {
		t.Errorf("stats %+v: the documented user lacks something", s)
	}
	// And what it must not do: keys outside its prefixes.
	if err := user.Unlink(ctx, "other:1").Err(); err == nil || !redis.IsPermissionError(err) {
		t.Errorf("UNLINK other:1 as the worker = %v, want NOPERM", err)
	}
	if err := user.FlushAll(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("FLUSHALL as the worker = %v, want NOPERM", err)
	}
}
