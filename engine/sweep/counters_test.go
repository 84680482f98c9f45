package sweep_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// syncBuffer is a bytes.Buffer a logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// passLines returns the pass= and removed= of each "🔍 sweep pass finished"
// line.
func passLines(log string) (passes, removed []int64) {
	re := regexp.MustCompile(`sweep pass finished" pass=(\d+) .* removed=(\d+) `)
	for _, m := range re.FindAllStringSubmatch(log, -1) {
		p, _ := strconv.ParseInt(m[1], 10, 64)
		r, _ := strconv.ParseInt(m[2], 10, 64)
		passes, removed = append(passes, p), append(removed, r)
	}
	return passes, removed
}

// The walk's counters tell one story: pass numbers run 1, 2, 3 without a
// gap, an idle Status.Pass equals the passes the observer was told of, a
// pass line's removed= counts the keys of its last page too (they are
// unlinked in the round trip after it) and adds up to the metric, and a
// pattern of two callers is listed and counted once.
func TestSweepCountersAgree(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	ctx := context.Background()
	fill(t, rdb, courseKeys(20, 600)) // 12,000 keys, 600 a course
	var logs syncBuffer
	obs := &recorder{}
	w := newWalker(t, rdb, sweep.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Observer: obs,
		ScanCount: 50, MinScanCount: 50, MaxScanCount: 50, Budget: 30_000}) // a pass of about 0.4 s

	for c := range 3 {
		res, err := w.Sweep(ctx, []string{fmt.Sprintf("cache:course_analytics:%d:*", c)})
		if err != nil || res.Removed != 600 {
			t.Fatalf("sweep %d: %+v, %v", c, res, err)
		}
		testserver.Eventually(t, "walk stops", 5*time.Second, func() bool { return !w.Status().Running })
		if st := w.Status(); st.Pass != int64(c+1) || obs.passes.Load() != int64(c+1) {
			t.Errorf("after sweep %d: Status.Pass %d, observer passes %d, want %d", c, st.Pass, obs.passes.Load(), c+1)
		}
	}
	passes, removed := passLines(logs.String())
	if !slices.Equal(passes, []int64{1, 2, 3}) || !slices.Equal(removed, []int64{600, 600, 600}) {
		t.Errorf("pass lines: passes %v, removed %v; want 1, 2, 3 with 600 each\n%s", passes, removed, logs.String())
	}
	if obs.removed.Load() != 1800 {
		t.Errorf("observer removed %d, want 1800", obs.removed.Load())
	}

	// Two callers with the same pattern, one with a second pattern.
	first := make(chan error, 1)
	go func() {
		_, err := w.Sweep(ctx, []string{"cache:course_analytics:5:*"})
		first <- err
	}()
	testserver.Eventually(t, "first caller joined", 5*time.Second, func() bool { return w.Status().ActivePatterns == 1 })
	second := make(chan error, 1)
	go func() {
		_, err := w.Sweep(ctx, []string{"cache:course_analytics:5:*", "cache:course_analytics:6:*"})
		second <- err
	}()
	testserver.Eventually(t, "second caller joined", 5*time.Second, func() bool {
		return slices.Contains(w.Status().Patterns, "cache:course_analytics:6:*")
	})
	st := w.Status()
	if len(first) == 0 { // the first caller's pattern is still in the walk
		if st.ActivePatterns != 2 || !slices.Equal(st.Patterns, []string{"cache:course_analytics:5:*", "cache:course_analytics:6:*"}) {
			t.Errorf("status with a pattern of two callers: %d active, %q", st.ActivePatterns, st.Patterns)
		}
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, "walk stops", 5*time.Second, func() bool { return !w.Status().Running })
	passes, _ = passLines(logs.String())
	if st := w.Status(); st.Pass != obs.passes.Load() || passes[len(passes)-1] != st.Pass {
		t.Errorf("idle Status.Pass %d, observer passes %d, last pass line %d", st.Pass, obs.passes.Load(), passes[len(passes)-1])
	}
	for i, p := range passes {
		if p != int64(i+1) {
			t.Errorf("pass numbers %v skip", passes)
			break
		}
	}
}

// On a 2-key database one call examines 2 keys, not the COUNT it asked
// for; at debug level each SCAN page logs one line.
func TestSweepExaminedAndPageLines(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	ctx := context.Background()
	fill(t, rdb, []string{"user:1", "other:1"})
	var logs syncBuffer
	w := newWalker(t, rdb, sweep.Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	res, err := w.Sweep(ctx, []string{"user:*"})
	if err != nil || res.Removed != 1 || res.Examined != 2 || res.ScanCalls != 1 {
		t.Errorf("result %+v, %v; want 1 removed, 2 examined in 1 call", res, err)
	}
	if n := strings.Count(logs.String(), "🔍 sweep page"); n != 1 || !strings.Contains(logs.String(), "returned=1 matched=1 examined=2") {
		t.Errorf("%d page lines, want 1 that says returned=1 matched=1 examined=2:\n%s", n, logs.String())
	}
	// The key of the pass's only page is unlinked in the round trip after
	// it, and still counts for that pass.
	if _, removed := passLines(logs.String()); !slices.Equal(removed, []int64{1}) {
		t.Errorf("pass lines say removed %v, want [1]:\n%s", removed, logs.String())
	}

	fill(t, rdb, courseKeys(10, 1000))
	res, err = w.Sweep(ctx, []string{"cache:course_analytics:3:*"})
	if err != nil || res.Removed != 1000 {
		t.Fatalf("%+v, %v", res, err)
	}
	if n := strings.Count(logs.String(), "🔍 sweep page"); int64(n) != 1+res.ScanCalls {
		t.Errorf("%d page lines for %d SCAN calls", n-1, res.ScanCalls)
	}
	if res.Examined < 9_000 || res.Examined > 10_001 {
		t.Errorf("examined %d keys of 10,001", res.Examined)
	}
}

// unlinkCalls reads cmdstat_unlink calls from INFO commandstats.
func unlinkCalls(t testing.TB, rdb interface {
	Info(context.Context, ...string) *redis.StringCmd
}) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_unlink:calls="); ok {
			n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			return n
		}
	}
	return 0
}

// With SlotOf, a page's matches go in one UNLINK per group (a cluster
// node's hash slot), not one per key: 4 groups make at most 4 UNLINKs a
// page, and every key still goes.
func TestSweepGroupsUnlinksBySlot(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	ctx := context.Background()
	fill(t, rdb, courseKeys(10, 1000))
	w := newWalker(t, rdb, sweep.Config{SlotOf: func(k string) int { return int(k[len(k)-1]) % 4 }})
	rdb.ConfigResetStat(ctx)
	res, err := w.Sweep(ctx, []string{"cache:course_analytics:3:*"})
	if err != nil || res.Removed != 1000 {
		t.Fatalf("%+v, %v", res, err)
	}
	calls := unlinkCalls(t, rdb)
	t.Logf("1000 keys removed in %d UNLINKs over %d SCAN calls", calls, res.ScanCalls)
	if calls > 4*(res.ScanCalls+1) || calls >= 1000 {
		t.Errorf("%d UNLINKs for 1000 keys in %d pages, want at most 4 a page", calls, res.ScanCalls)
	}
	if n := len(scanAll(t, rdb, "cache:course_analytics:3:*")); n != 0 {
		t.Errorf("%d keys left", n)
	}
}
