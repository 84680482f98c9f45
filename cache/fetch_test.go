package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/redis/go-redis/v9"
)

// 100 concurrent Fetch calls for one missing key make exactly one load.
func TestFetchSharesOneLoad(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, rdb redis.UniversalClient) {
		c, _ := newCacheOn(t, rdb)
		testFetchSharesOneLoad(t, c)
	})
}

func testFetchSharesOneLoad(t *testing.T, c *Cache) {
	const callers = 100
	var started, loads atomic.Int64
	load := func(context.Context) (analytics, error) {
		loads.Add(1)
		for started.Load() < callers { // every caller is in Fetch before the load ends
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		return analytics{Course: "42", Students: 7}, nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			started.Add(1)
			v, err := Fetch(t.Context(), c, "cache:course_analytics:42", time.Minute, load)
			if err == nil && v.Students != 7 {
				err = fmt.Errorf("got %+v", v)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d loads, want 1", n)
	}
	var v analytics
	if found, err := c.Get(t.Context(), "cache:course_analytics:42", &v); err != nil || !found || v.Students != 7 {
		t.Fatalf("after Fetch: found %v, %+v", found, v)
	}
}

// version is a value with the version of the source it was loaded from.
type version struct {
	V int64 `json:"v"`
}

// TestFetchNeverStoresAStaleValue: a load blocked across an invalidation
// (exact, pattern, or the whole plan of a course event, applied as the
// worker applies it) never stores its older value, over 200 random
// interleavings: the invalidation lands before the claim, during the load,
// or after the fill, and the load is released before, during or after
// the invalidation's sweep.
//
// On a Redis Cluster a fill refused by a scope generation (in another slot
// than the key) may be written and then taken back by the same Fetch: no
// reader sees it (its stamp is stale), and it is gone when Fetch returns.
func TestFetchNeverStoresAStaleValue(t *testing.T) {
	t.Parallel()
	forEachTopology(t, testFetchNeverStoresAStaleValue)
}

func testFetchNeverStoresAStaleValue(t *testing.T, rdb redis.UniversalClient) {
	c, _ := newCacheOn(t, rdb, WithLogger(slog.New(slog.DiscardHandler)))
	eng := newEngineOn(t, rdb, engine.Config{})
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var refused, stored int
	for i := range 200 {
		course := strconv.Itoa(1000 + i)
		key, job := "cache:course_analytics:"+course, engine.Job{Exact: []string{"cache:course_analytics:" + course}}
		switch rng.IntN(3) {
		case 1:
			key, job = key+":detail", engine.Job{Patterns: []string{key + ":*"}}
		case 2:
			key = key + ":detail"
			job = engine.Job{Exact: []string{"cache:course_analytics:" + course}, Patterns: []string{"cache:course_analytics:" + course + ":*", "cache:system_stats:*"}}
		}
		var source atomic.Int64
		source.Store(1)
		loading, release := make(chan struct{}), make(chan struct{})
		load := func(context.Context) (version, error) {
			v := source.Load()
			close(loading)
			<-release
			return version{v}, nil
		}
		invalidate := func() {
			source.Add(1) // the application commits, then the event is handled
			if _, err := engine.Invalidate(ctx, eng, job); err != nil {
				t.Error(err)
			}
		}
		when := rng.IntN(3)
		if when == 0 {
			invalidate()
		}
		fetched := make(chan error, 1)
		go func() {
			_, err := Fetch(ctx, c, key, time.Minute, load)
			fetched <- err
		}()
		<-loading
		if when == 1 {
			if rng.IntN(2) == 0 {
				go func() { time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond); close(release) }()
				invalidate()
			} else {
				invalidate()
				close(release)
			}
		} else {
			close(release)
		}
		if err := <-fetched; err != nil {
			t.Fatal(err)
		}
		if when == 2 {
			invalidate()
		}
		var got version
		found, err := c.Get(ctx, key, &got)
		if err != nil {
			t.Fatal(err)
		}
		if found && got.V != source.Load() {
			t.Fatalf("interleaving %d (%d, %+v): read version %d after the invalidation of version %d", i, when, job, got.V, source.Load()-1)
		}
		if raw, err := rdb.Get(ctx, key).Result(); err == nil && when == 1 && !found {
			t.Fatalf("interleaving %d: a stale value was written: %q", i, raw)
		}
		if found {
			stored++
		} else {
			refused++
		}
	}
	t.Logf("200 interleavings: %d current values stored, %d fills refused or removed", stored, refused)
}

// TestReaderNeverSeesAnOlderValue: readers (Get and Fetch) never see a
// value older than an invalidation that completed before their read
// began, while fillers and invalidations (exact and pattern, as the worker
// applies them) race on a few keys.
func TestReaderNeverSeesAnOlderValue(t *testing.T) {
	t.Parallel()
	forEachTopology(t, testReaderNeverSeesAnOlderValue)
}

func testReaderNeverSeesAnOlderValue(t *testing.T, rdb redis.UniversalClient) {
	c, _ := newCacheOn(t, rdb, WithLogger(slog.New(slog.DiscardHandler)))
	eng := newEngineOn(t, rdb, engine.Config{})
	type item struct {
		key     string
		source  atomic.Int64 // the committed version
		floor   atomic.Int64 // the last version whose invalidation completed
		pattern string       // a pattern over key
	}
	var items []*item
	for _, course := range []string{"7", "8"} {
		base := "cache:course_analytics:" + course
		items = append(items, &item{key: base, pattern: "cache:course_analytics:" + course + "*"})
		for n := range 3 {
			items = append(items, &item{key: base + ":" + strconv.Itoa(n), pattern: base + ":*"})
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	var reads, hits, invalidations atomic.Int64
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for ctx.Err() == nil {
				it := items[rng.IntN(len(items))]
				switch {
				case w < 2: // mutators: commit, invalidate, then raise the floor
					v := it.source.Add(1)
					job := engine.Job{Exact: []string{it.key}}
					if rng.IntN(2) == 0 {
						job = engine.Job{Patterns: []string{it.pattern}}
					}
					if _, err := engine.Invalidate(ctx, eng, job); err != nil {
						return // the deadline
					}
					invalidations.Add(1)
					time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
					for f := it.floor.Load(); f < v && !it.floor.CompareAndSwap(f, v); f = it.floor.Load() {
					}
				case w < 4: // fillers
					floor := it.floor.Load()
					got, err := Fetch(ctx, c, it.key, time.Minute, func(context.Context) (version, error) {
						v := it.source.Load()
						time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
						return version{v}, nil
					})
					if err == nil && got.V < floor {
						t.Errorf("Fetch of %s returned version %d, older than the invalidation of %d", it.key, got.V, floor)
					}
				default: // readers
					floor := it.floor.Load()
					var got version
					found, err := c.Get(ctx, it.key, &got)
					if err != nil {
						continue
					}
					reads.Add(1)
					if found {
						hits.Add(1)
						if got.V < floor {
							t.Errorf("Get of %s returned version %d, older than the invalidation of %d", it.key, got.V, floor)
						}
					}
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d reads (%d hits), %d invalidations", reads.Load(), hits.Load(), invalidations.Load())
	if hits.Load() == 0 || invalidations.Load() == 0 {
		t.Fatal("no hits or no invalidations: the test shows nothing")
	}
}

// With Redis down, Fetch falls back to load and logs one ⚠️ line for the
// whole outage.
func TestFetchWithoutRedis(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rdb.Close()
	logs := &logBuffer{}
	c := mustNew(t, rdb, WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	loads := 0
	for range 5 {
		v, err := Fetch(t.Context(), c, "cache:system_stats:global", time.Minute, func(context.Context) (int, error) {
			loads++
			return 42, nil
		})
		if err != nil || v != 42 {
			t.Fatalf("Fetch = %d, %v; want 42 from load", v, err)
		}
	}
	if loads != 5 {
		t.Errorf("%d loads, want 5", loads)
	}
	if n := logs.count("⚠️"); n != 1 {
		t.Errorf("%d ⚠️ lines for one outage, want 1:\n%s", n, logs.String())
	}
	_, err := Fetch(t.Context(), c, "k:1", time.Minute, func(context.Context) (int, error) { return 0, errors.New("source down") })
	if err == nil || err.Error() != "source down" {
		t.Errorf("a failing load = %v, want its error", err)
	}
}
