package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/warm"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkThroughput measures exact-key events per second through the
// whole worker (fetch, decode, plan, UNLINK, ack) against a bare baseline
// in the same run: a loop that fetches, UNLINKs the key and acks, with no
// decoding, rules or bookkeeping. "warm-hanging-source" is the worker with a
// warm target on every event whose source never answers (each request
// waits for the 5 s timeout): invalidation must not slow down. Run:
//
//	go test ./worker -run '^$' -bench BenchmarkThroughput -benchtime 20000x
func BenchmarkThroughput(b *testing.B) {
	if testing.Short() {
		b.Skip("needs real servers")
	}
	b.Run("worker", func(b *testing.B) { benchThroughput(b, runWorker) })
	b.Run("warm-fast-source", func(b *testing.B) {
		benchThroughput(b, func(b *testing.B, h *harness, n int) { runWorkerWarming(b, h, n, jsonBody(`{}`)) })
	})
	b.Run("warm-hanging-source", func(b *testing.B) {
		benchThroughput(b, func(b *testing.B, h *harness, n int) {
			obs := runWorkerWarming(b, h, n, func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
			if n > 2*warm.DefaultQueue && obs.get(warm.Shed) == 0 {
				b.Fatalf("no warm request was shed (outcomes %v): the source did not hang", obs.n)
			}
		})
	})
	b.Run("bare", func(b *testing.B) { benchThroughput(b, runBare) })
}

type consumeFunc func(b *testing.B, h *harness, n int)

const benchRules = "rules:\n  - on: events.user.*\n    invalidate: [\"user:{user_id}\"]\n"

func benchThroughput(b *testing.B, consume consumeFunc) {
	h := newHarness(b)
	rules, err := cachekeys.Parse("bench.yaml", []byte(benchRules))
	if err != nil {
		b.Fatal(err)
	}
	h.rules = rules // exact keys only: no SCAN
	n := b.N
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
	}
	h.set(keys...)
	publishUsers(b, h, n)
	b.ReportAllocs()
	b.ResetTimer()
	consume(b, h, n) // stops the timer once the n-th event is applied
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	if left, _ := h.rdb.Keys(context.Background(), "user:*").Result(); len(left) != 0 {
		b.Fatalf("%d keys left after %d events", len(left), n)
	}
}

func runWorker(b *testing.B, h *harness, n int) {
	runWorkerWith(b, h, n, worker.Deps{})
}

// runWorkerWarming runs the worker with a store-mode warm target on every
// event, served by handler.
func runWorkerWarming(b *testing.B, h *harness, n int, handler func(http.ResponseWriter, *http.Request)) *warmCounts {
	src := newSource(b, handler)
	rules, err := cachekeys.Parse("bench.yaml", []byte(benchRules+fmt.Sprintf(
		"    warm:\n      - key: warmed:{user_id}\n        from: %s/users/{user_id}\n        ttl: 60s\n", src.URL)))
	if err != nil {
		b.Fatal(err)
	}
	h.rules = rules
	obs := &warmCounts{}
	warmer := newWarmer(b, h.rdb, warm.Config{}, nil, obs)
	eng := newEngine(b, h.rdb, engine.Config{Generations: true})
	runWorkerWith(b, h, n, worker.Deps{Warmer: warmer, Engine: eng})
	return obs
}

func runWorkerWith(b *testing.B, h *harness, n int, deps worker.Deps) {
	cfg := worker.Config{} // the defaults
	deps.JetStream, deps.Redis, deps.Rules = h.js, h.rdb, h.rules
	w, err := worker.New(cfg, deps)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for w.Stats().Applied < int64(n) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer() // shutdown (up to FetchMaxWait for the fetch in flight) is not throughput
	cancel()
	<-done
}

func runBare(b *testing.B, h *harness, n int) {
	ctx := context.Background()
	c, err := h.js.CreateOrUpdateConsumer(ctx, worker.DefaultStream, jetstream.ConsumerConfig{Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 10000})
	if err != nil {
		b.Fatal(err)
	}
	for got := 0; got < n; {
		batch, err := c.Fetch(min(n-got, 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		pipe := h.rdb.Pipeline()
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
			pipe.Unlink(ctx, "user:"+m.Headers().Get("Bench-Id"))
		}
		if len(msgs) == 0 {
			b.Fatal("bare consumer fetched nothing")
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs {
			_ = m.Ack()
		}
		got += len(msgs)
	}
}

// publishUsers publishes n bare-JSON user events, asynchronously, and waits
// for the stream to hold them.
func publishUsers(b *testing.B, h *harness, n int) {
	ctx := context.Background()
	if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: worker.DefaultStream, Subjects: []string{"events.>"}}); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		id := strconv.Itoa(i)
		m := nats.NewMsg("events.user.updated")
		m.Data = []byte(`{"user_id": "` + id + `"}`)
		m.Header.Set("Bench-Id", id)
		if _, err := h.js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-h.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishing took over a minute")
	}
}
