package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go"
)

// TestFetchRenewedBeforeExpiry watches the worker's pull requests on the
// server's API subject: each must be followed by the next one before it
// expires, so that a request is always waiting on the server. nats-server
// 2.9 drops an expired request without the 408 that ends the fetch when an
// event arrives just after its expiry (consumer.go, nextWaiting); a worker
// that asked for the next fetch only when the last one ended then had no
// request on the server until the fetch's client-side deadline, the last
// tenth of FetchMaxWait (~100 ms at the production 1 s), while events
// queued: the staleness tail of issue 17. The worker runs with the
// production FetchMaxWait, and events published meanwhile must have their
// keys removed.
func TestFetchRenewedBeforeExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 6 s per server")
	}
	for _, kind := range natsKinds {
		t.Run(kind.name, func(t *testing.T) {
			js := kind.start(t)
			h := newHarnessOn(t, js)
			type pull struct {
				at      time.Time
				expires time.Duration
			}
			pulls := make(chan pull, 64)
			sub, err := js.Conn().Subscribe("$JS.API.CONSUMER.MSG.NEXT.EVENTS."+worker.DefaultConsumer, func(m *nats.Msg) {
				var req struct {
					Expires time.Duration `json:"expires"`
				}
				if json.Unmarshal(m.Data, &req) == nil {
					select {
					case pulls <- pull{time.Now(), req.Expires}:
					default:
					}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			if err := js.Conn().Flush(); err != nil {
				t.Fatal(err)
			}
			h.start(worker.Config{}, worker.Deps{}) // production defaults: FetchMaxWait 1s

			const n = 6
			keys := numbered("user:", n)
			h.set(keys...)
			var seen []pull
			for i := range n {
				select {
				case p := <-pulls:
					seen = append(seen, p)
				case <-time.After(5 * time.Second):
					t.Fatalf("no pull request within 5 s after %d", len(seen))
				}
				h.publish("events.user.updated", map[string]any{"user_id": itoa(i)})
			}
			h.eventually("every event's key is gone", 10*time.Second, func() bool {
				n, err := h.rdb.Exists(context.Background(), keys...).Result()
				return err == nil && n == 0
			})
			late := 0
			for i := 1; i < len(seen); i++ {
				prev, next := seen[i-1], seen[i]
				if prev.expires <= 0 {
					t.Fatalf("pull request %d has no expiry", i-1)
				}
				if gap := next.at.Sub(prev.at.Add(prev.expires)); gap >= 0 {
					late++
					t.Logf("pull request %d came %v after request %d expired", i, gap, i-1)
				}
			}
			// One allowed: a renewal that a loaded machine delayed by over 100 ms.
			if late > 1 {
				t.Errorf("%d of %d pull requests came after the previous one had expired", late, len(seen)-1)
			}
		})
	}
}
