package warm_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/warm"
	"github.com/redis/go-redis/v9"
)

// heldWarmer is a warmer on a Redis client and a source whose answers can
// be held: each request reads the version, then, if a gate was handed to it
// through hold, signals started and waits for the gate, then answers
// {"v": version read}. guardRig and clusterRig share it.
type heldWarmer struct {
	warmer  *warm.Warmer
	src     *httptest.Server
	version atomic.Int64
	hold    chan chan struct{}
	started chan struct{}
}

// newHeldWarmer starts the source and a warmer on rdb; the source is closed
// at cleanup.
func newHeldWarmer(t *testing.T, rdb redis.UniversalClient) *heldWarmer {
	t.Helper()
	h := &heldWarmer{hold: make(chan chan struct{}, 16), started: make(chan struct{}, 16)}
	h.src = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		v := h.version.Load()
		select {
		case gate := <-h.hold:
			h.started <- struct{}{}
			<-gate
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"v": %d}`, v)
	}))
	t.Cleanup(h.src.Close)
	var err error
	if h.warmer, err = warm.New(rdb, warm.Config{}, nil); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *heldWarmer) req(key string) cachekeys.WarmRequest {
	return cachekeys.WarmRequest{Key: key, URL: h.src.URL + "/x", Host: h.src.Listener.Addr().String(), TTL: time.Minute}
}

// warmHeld warms key with the source held until during has run; it returns
// the outcome.
func (h *heldWarmer) warmHeld(t *testing.T, key string, during func()) warm.Outcome {
	t.Helper()
	gate := make(chan struct{})
	h.hold <- gate
	out := make(chan warm.Outcome, 1)
	go func() { out <- h.warmer.Warm(context.Background(), h.req(key)) }()
	<-h.started // the generations are claimed and the source has read its data
	during()
	close(gate)
	return <-out
}

// raceWarms is the randomized race of the held source against an
// invalidation, over 200 interleavings: in each, a warm of key races the
// data's version being raised and then invalidate, and the source may be
// released early. key, read through rdb, must always end absent or holding
// the newer value, and at least one warm must have been refused as stale.
func (h *heldWarmer) raceWarms(t *testing.T, rdb redis.UniversalClient, key string, invalidate func() error) {
	t.Helper()
	ctx := context.Background()
	outcomes := map[warm.Outcome]int{}
	const rounds = 200
	for round := range rounds {
		gate := make(chan struct{})
		var once sync.Once
		open := func() { once.Do(func() { close(gate) }) }
		h.hold <- gate
		var wg sync.WaitGroup
		wg.Go(func() { outcomes[h.warmer.Warm(ctx, h.req(key))]++ })
		wg.Go(func() {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
			h.version.Add(1) // the application commits newer data, then publishes
			if err := invalidate(); err != nil {
				t.Error(err)
			}
			open()
		})
		wg.Go(func() {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
			if rand.IntN(2) == 0 {
				open()
			}
		})
		wg.Wait()
		<-h.started
		got, err := rdb.Get(ctx, key).Result()
		if err == nil && got != fmt.Sprintf(`{"v": %d}`, h.version.Load()) {
			t.Fatalf("round %d: key holds %s, but the data is at version %d: a stale write", round, got, h.version.Load())
		}
		rdb.Del(ctx, key)
	}
	t.Logf("outcomes over %d rounds: %v", rounds, outcomes)
	if outcomes[warm.SkippedStale] == 0 {
		t.Errorf("no round raced (outcomes %v): the test did not exercise the guard", outcomes)
	}
}

// guardRig is a Redis deployment, a held warmer on it and an engine with
// generations: one server (newGuardRig) or a cluster (newClusterRig).
type guardRig struct {
	*heldWarmer
	rdb redis.UniversalClient
	eng engine.Engine
}

// newRig makes the rig on rdb with eng (closed at cleanup), or fails on err.
func newRig[E interface {
	engine.Engine
	io.Closer
}](t *testing.T, rdb redis.UniversalClient, eng E, err error) *guardRig {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	return &guardRig{heldWarmer: newHeldWarmer(t, rdb), rdb: rdb, eng: eng}
}

// newGuardRig is the rig on one redis-server.
func newGuardRig(t *testing.T) *guardRig {
	t.Helper()
	rdb := testserver.RedisClient(t, testserver.Redis(t))
	eng, err := engine.NewRedis(rdb, engine.Config{Generations: true})
	return newRig(t, rdb, eng, err)
}

// The ways an invalidation can invalidate an exact key's generation: the
// engine's (SET to a batch token, before the UNLINK), and removal, in the
// same UNLINK as the key or in an UNLINK queued before the key's.
var exactForms = []struct {
	name       string
	invalidate func(ctx context.Context, g *guardRig, key string) error
}{
	{"engine", func(ctx context.Context, g *guardRig, key string) error {
		_, err := engine.Invalidate(ctx, g.eng, engine.Job{Exact: []string{key}})
		return err
	}},
	{"unlink-with-key", func(ctx context.Context, g *guardRig, key string) error {
		return g.rdb.Unlink(ctx, key, guard.Key(key)).Err()
	}},
	{"unlink-before-key", func(ctx context.Context, g *guardRig, key string) error {
		_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Unlink(ctx, guard.Key(key))
			p.Unlink(ctx, key)
			return nil
		})
		return err
	}},
}

// A fill whose fetch is overtaken by an invalidation is refused, whichever
// way the invalidation invalidates the generation; one that starts after
// it stores.
func TestGuardRefusesAFillOvertakenByAnInvalidation(t *testing.T) {
	for _, form := range exactForms {
		t.Run(form.name, func(t *testing.T) {
			g := newGuardRig(t)
			ctx := t.Context()
			const key = "cache:course_analytics:7"
			for i := range 3 { // a fresh key, then one whose generation a fill and an invalidation left
				out := g.warmHeld(t, key, func() {
					g.version.Add(1)
					if err := form.invalidate(ctx, g, key); err != nil {
						t.Fatal(err)
					}
				})
				if out != warm.SkippedStale {
					t.Fatalf("round %d: outcome %s, want %s", i, out, warm.SkippedStale)
				}
				if n := g.rdb.Exists(ctx, key).Val(); n != 0 {
					t.Fatalf("round %d: the older value was written", i)
				}
				if out := g.warmer.Warm(ctx, g.req(key)); out != warm.Stored {
					t.Fatalf("round %d: a fill after the invalidation: %s, want %s", i, out, warm.Stored)
				}
			}
		})
	}
}

// A generation that expires (here: is removed) while the fetch runs makes
// the write a skipped one, for the key's own generation and for a
// prefix's, even when nothing else changed.
func TestGuardExpiredGenerationSkips(t *testing.T) {
	g := newGuardRig(t)
	ctx := t.Context()
	const key = "cache:course_analytics:7"
	for _, gen := range guard.Keys(key) {
		g.rdb.Del(ctx, key) // the value the previous round stored
		out := g.warmHeld(t, key, func() { g.rdb.Del(ctx, gen) })
		if out != warm.SkippedStale || g.rdb.Exists(ctx, key).Val() != 0 {
			t.Errorf("%s expired during the fetch: outcome %s, want %s and no write", gen, out, warm.SkippedStale)
		}
		// A claim after the expiry takes a new token, so a later fill stores.
		if out := g.warmer.Warm(ctx, g.req(key)); out != warm.Stored {
			t.Errorf("fill after %s expired: %s, want %s", gen, out, warm.Stored)
		}
	}
}

// Two fills that claim with no invalidation between them share the token
// and both store; the generation keys hold tokens with the TTL.
func TestGuardSharedTokenStores(t *testing.T) {
	g := newGuardRig(t)
	ctx := t.Context()
	const key = "cache:course_analytics:7"
	var second warm.Outcome
	first := g.warmHeld(t, key, func() { second = g.warmer.Warm(ctx, g.req(key)) })
	if first != warm.Stored || second != warm.Stored {
		t.Fatalf("outcomes %s, %s, want both %s", first, second, warm.Stored)
	}
	for _, gen := range guard.Keys(key) {
		v := g.rdb.Get(ctx, gen).Val()
		if v == "" || v == "0" {
			t.Errorf("%s = %q, want a token", gen, v)
		}
		if ttl := g.rdb.PTTL(ctx, gen).Val(); ttl <= guard.TTL-time.Minute {
			t.Errorf("PTTL %s = %s, want about %s", gen, ttl, guard.TTL)
		}
	}
}

// The ABA that claiming prefixes rules out: a key ending with the separator
// has a generation key that is also a scope's. A fill of a key below it
// that had read that generation as missing ("0") would match again after a
// pattern invalidation SET it and an exact one removed it.
func TestGuardNoABAOnAScopeGeneration(t *testing.T) {
	g := newGuardRig(t)
	ctx := t.Context()
	out := g.warmHeld(t, "user:1:x", func() {
		g.version.Add(1)
		if _, err := engine.Invalidate(ctx, g.eng, engine.Job{Patterns: []string{"user:1:*"}}); err != nil {
			t.Fatal(err)
		}
		g.rdb.Unlink(ctx, "user:1:", guard.Key("user:1:")) // an exact removal of "user:1:"
	})
	if out != warm.SkippedStale || g.rdb.Exists(ctx, "user:1:x").Val() != 0 {
		t.Fatalf("outcome %s, want %s and no write", out, warm.SkippedStale)
	}
}

// TestGuardRaceEveryForm is the randomized race of a held source against
// an invalidation, over 200 interleavings, each invalidation taking one of
// the forms at random (exact key by the engine, by removal with the key or
// before it, or the pattern of its sub-keys' parent through the engine):
// the key always ends absent or holding the newer value.
func TestGuardRaceEveryForm(t *testing.T) {
	g := newGuardRig(t)
	ctx := context.Background()
	const key = "cache:course_analytics:7"
	invalidations := append([]func() error{}, func() error {
		_, err := engine.Invalidate(ctx, g.eng, engine.Job{Patterns: []string{"cache:course_analytics:*"}})
		return err
	}, func() error { // an event's plan: the key and its sub-keys
		_, err := engine.Invalidate(ctx, g.eng, engine.Job{Exact: []string{key}, Patterns: []string{key + ":*"}})
		return err
	})
	for _, f := range exactForms {
		invalidations = append(invalidations, func() error { return f.invalidate(ctx, g, key) })
	}
	g.raceWarms(t, g.rdb, key, func() error { return invalidations[rand.IntN(len(invalidations))]() })
}
