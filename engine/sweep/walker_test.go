package sweep_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
)

func newWalker(t testing.TB, rdb *redis.Client, cfg sweep.Config) *sweep.Walker {
	t.Helper()
	w := sweep.New(rdb, cfg)
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// Course 42's pattern removes course 42's keys and nothing else: not
// course 420's, not the key without the separator, not other prefixes.
// The walk logs one line per pass and reports to the observer.
func TestSweepLeavesNeighboursUntouched(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	ctx := context.Background()
	fill(t, rdb, []string{"cache:course_analytics:42:a", "cache:course_analytics:42:b",
		"cache:course_analytics:420:x", "cache:course_analytics:4:x", "cache:course_analytics:42",
		"other:cache:course_analytics:42:a"})
	fill(t, rdb, courseKeys(500, 4))
	var logs bytes.Buffer
	obs := &recorder{}
	w := newWalker(t, rdb, sweep.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Observer: obs})

	res, err := w.Sweep(ctx, []string{"cache:course_analytics:42:*"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 6 || res.ScanCalls == 0 { // a, b and 42:0..3
		t.Errorf("result %+v, want 6 removed", res)
	}
	for _, k := range []string{"cache:course_analytics:420:x", "cache:course_analytics:4:x",
		"cache:course_analytics:42", "other:cache:course_analytics:42:a", "cache:course_analytics:420:0"} {
		if n := rdb.Exists(ctx, k).Val(); n != 1 {
			t.Errorf("%s was removed", k)
		}
	}
	if n := rdb.DBSize(ctx).Val(); n != 2000 {
		t.Errorf("DBSIZE %d, want 2000", n)
	}
	testserver.Eventually(t, "walk stops", 5*time.Second, func() bool { return !w.Status().Running })
	if !strings.Contains(logs.String(), "🔍 sweep pass finished") || !strings.Contains(logs.String(), "patterns=1") {
		t.Errorf("no pass line in the log:\n%s", logs.String())
	}
	if obs.passes.Load() != 1 || obs.waits.Load() != 1 || obs.removed.Load() != 6 || obs.examined.Load() == 0 {
		t.Errorf("observer saw passes=%d waits=%d removed=%d examined=%d",
			obs.passes.Load(), obs.waits.Load(), obs.removed.Load(), obs.examined.Load())
	}
}

type recorder struct {
	passes, waits, removed, examined atomic.Int64
}

func (r *recorder) PassFinished(sweep.Pass)   { r.passes.Add(1) }
func (r *recorder) KeysExamined(n int)        { r.examined.Add(int64(n)) }
func (r *recorder) KeysRemoved(n int)         { r.removed.Add(int64(n)) }
func (r *recorder) ActivePatterns(int)        {}
func (r *recorder) PatternWait(time.Duration) { r.waits.Add(1) }
func (r *recorder) Progress(float64)          {}

// Patterns joining at every phase of a pass (just after it starts, mid
// pass, just before the cursor returns to 0, at random) while Redis grows
// its table several times, or shrinks it, miss no key that existed before
// they joined; a plain SCAN MATCH loop finds none of them afterwards.
func TestSweepCompleteWhileRehashing(t *testing.T) {
	t.Parallel()
	for _, grow := range []bool{true, false} {
		name := map[bool]string{true: "grow", false: "shrink"}[grow]
		t.Run(name, func(t *testing.T) { testRehash(t, grow) })
	}
}

func testRehash(t *testing.T, grow bool) {
	const groups, perGroup, churn = 48, 40, 300_000
	rdb := newRedis(t)
	ctx := context.Background()
	var base []string
	for g := range groups {
		for i := range perGroup {
			base = append(base, fmt.Sprintf("base:%d:%d", g, i))
		}
	}
	fill(t, rdb, base)
	churnKey := func(i int) string { return fmt.Sprintf("churn:%d", i) }
	if !grow {
		keys := make([]string, churn)
		for i := range keys {
			keys[i] = churnKey(i)
		}
		fill(t, rdb, keys)
	}
	_, startSize := tableSize(t, rdb)
	w := newWalker(t, rdb, sweep.Config{ScanCount: 100, MaxScanCount: 200})

	stop := make(chan struct{})
	var bg sync.WaitGroup
	var minSize, maxSize atomic.Int64
	minSize.Store(startSize)
	maxSize.Store(startSize)
	bg.Go(func() { // keeps the walk running across passes
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w.Sweep(ctx, []string{"keepalive:*"}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	bg.Go(func() { // grows or shrinks the table
		for i := 0; i < churn; i += 1000 {
			pipe := rdb.Pipeline()
			for j := i; j < i+1000; j++ {
				if grow {
					pipe.Set(ctx, churnKey(j), "v", 0)
				} else {
					pipe.Unlink(ctx, churnKey(j))
				}
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	})
	bg.Go(func() { // watches the table size
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			small, large := tableSize(t, rdb)
			minSize.Store(min(minSize.Load(), small))
			maxSize.Store(max(maxSize.Load(), large))
		}
	})

	var joiners sync.WaitGroup
	for g := range groups {
		joiners.Go(func() {
			time.Sleep(time.Duration(g/4) * 60 * time.Millisecond) // waves while the table changes
			waitForPhase(w, g%4, uint64(g))
			pattern := fmt.Sprintf("base:%d:*", g)
			res, err := w.Sweep(ctx, []string{pattern})
			if err != nil {
				t.Error(err)
				return
			}
			if left := scanAll(t, rdb, pattern); len(left) > 0 {
				t.Errorf("%s complete (%+v), but SCAN MATCH still finds %d keys: %q", pattern, res, len(left), left[:1])
			}
		})
	}
	joiners.Wait()
	close(stop)
	bg.Wait()
	if left := scanAll(t, rdb, "base:*"); len(left) > 0 {
		t.Errorf("%d base keys survived", len(left))
	}
	t.Logf("table size %d at start, %d..%d during the sweeps", startSize, minSize.Load(), maxSize.Load())
	if grow && maxSize.Load() < 8*startSize {
		t.Errorf("table grew from %d to %d only: the test did not rehash enough", startSize, maxSize.Load())
	}
	if !grow && minSize.Load() > maxSize.Load()/8 {
		t.Errorf("table shrank from %d to %d only", maxSize.Load(), minSize.Load())
	}
}

// waitForPhase waits (at most a few seconds) for a moment of the walk:
// 0 just after a pass starts, 1 mid pass, 2 just before the cursor returns
// to 0, 3 a random moment.
func waitForPhase(w *sweep.Walker, phase int, seed uint64) {
	if phase == 3 {
		time.Sleep(time.Duration(rand.New(rand.NewPCG(seed, 1)).IntN(300)) * time.Millisecond)
		return
	}
	in := func(p float64) bool {
		switch phase {
		case 0:
			return p < 0.02
		case 1:
			return p > 0.45 && p < 0.55
		}
		return p > 0.97
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if s := w.Status(); s.Running && in(s.Progress) {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// 200 concurrent Sweep calls with distinct patterns over 200k keys share
// the walk: Redis serves at most two passes' worth of SCAN calls, counted
// against a plain SCAN pass with the same COUNT in the same run.
func TestSweepOnePassServesMany(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	ctx := context.Background()
	fill(t, rdb, courseKeys(10_000, 20))
	rdb.ConfigResetStat(ctx)
	scanAll(t, rdb, "nothing:*")
	onePass := scanCalls(t, rdb)
	rdb.ConfigResetStat(ctx)

	// COUNT stays at 1000 (no adaptation), as in the reference pass.
	w := newWalker(t, rdb, sweep.Config{MaxCallTime: time.Hour})
	var wg sync.WaitGroup
	var removed atomic.Int64
	for c := range 200 {
		wg.Go(func() {
			res, err := w.Sweep(ctx, []string{fmt.Sprintf("cache:course_analytics:%d:*", c)})
			if err != nil {
				t.Error(err)
			}
			removed.Add(res.Removed)
		})
	}
	wg.Wait()
	calls := scanCalls(t, rdb)
	t.Logf("one SCAN pass: %d calls; 200 shared sweeps: %d calls (%.2f passes)", onePass, calls, float64(calls)/float64(onePass))
	if calls > 2*onePass+2 {
		t.Errorf("200 sweeps made %d SCAN calls, more than two passes (%d)", calls, 2*onePass)
	}
	if removed.Load() != 200*20 || rdb.DBSize(ctx).Val() != 200_000-200*20 {
		t.Errorf("removed %d, DBSIZE %d", removed.Load(), rdb.DBSize(ctx).Val())
	}
}

// A Redis error in a round trip (SCAN refused by ACL mid-walk) fails every
// pattern active in the walk, with the error wrapped; a pattern that joins
// later starts afresh and completes. A caller whose context ends leaves
// alone.
func TestSweepErrorFailsActivePatternsOnly(t *testing.T) {
	t.Parallel()
	admin := newRedis(t)
	rdb := admin
	ctx := context.Background()
	fill(t, admin, courseKeys(2_500, 20))
	w := newWalker(t, rdb, sweep.Config{ScanCount: 20, MaxScanCount: 20, MinScanCount: 20})

	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() {
		_, err := w.Sweep(cctx, []string{"cache:course_analytics:3:*"})
		cancelled <- err
	}()
	errs := make(chan error, 2)
	for _, p := range []string{"cache:course_analytics:1:*", "cache:course_analytics:2:*"} {
		go func() {
			_, err := w.Sweep(ctx, []string{p})
			errs <- err
		}()
	}
	testserver.Eventually(t, "walk under way", 10*time.Second, func() bool {
		s := w.Status()
		return s.ActivePatterns == 3 && s.Progress > 0.05
	})
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller got %v", err)
	}
	testserver.Eventually(t, "cancelled pattern leaves", 5*time.Second, func() bool { return w.Status().ActivePatterns == 2 })
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "-scan").Err(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var rerr redis.Error
		if err := <-errs; !errors.As(err, &rerr) || !strings.HasPrefix(rerr.Error(), "NOPERM") {
			t.Errorf("active pattern got %v, want the Redis error", err)
		}
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "+scan").Err(); err != nil {
		t.Fatal(err)
	}
	res, err := w.Sweep(ctx, []string{"cache:course_analytics:7:*"})
	if err != nil || res.Removed != 20 {
		t.Errorf("later sweep: %+v, %v", res, err)
	}
}

// Close fails waiting callers with ErrClosed, stops the walk, and later
// calls fail at once.
func TestSweepClose(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	ctx := context.Background()
	fill(t, rdb, courseKeys(2_000, 10))
	w := sweep.New(rdb, sweep.Config{ScanCount: 10, MaxScanCount: 10, MinScanCount: 10})
	errc := make(chan error, 1)
	go func() {
		_, err := w.Sweep(ctx, []string{"cache:*"})
		errc <- err
	}()
	testserver.Eventually(t, "walk under way", 5*time.Second, func() bool { return w.Status().Running })
	if st := w.Status(); len(st.Patterns) != 1 || st.Patterns[0] != "cache:*" || st.StartedAt.IsZero() {
		t.Errorf("status %+v", st)
	}
	_ = w.Close()
	_ = w.Close()
	if err := <-errc; !errors.Is(err, sweep.ErrClosed) {
		t.Errorf("waiting caller got %v", err)
	}
	if _, err := w.Sweep(ctx, []string{"a:*"}); !errors.Is(err, sweep.ErrClosed) {
		t.Errorf("Sweep after Close: %v", err)
	}
	if w.Status().Running {
		t.Error("still running after Close")
	}
}

// slowlogKeys is the keyspace of TestSweepStaysOutOfSlowlog: 1M by
// default; -sweep.slowlog-keys=10000000 runs it on 10M keys (about 1.2 GB of
// Redis memory and a minute or two), as an operator's large keyspace.
var slowlogKeys = flag.Int("sweep.slowlog-keys", 1_000_000, "keys of TestSweepStaysOutOfSlowlog (DEBUG POPULATE)")

// matching counts the keys key:0 … key:n-1 that start with "key:"+prefix.
func matching(n int, prefix string) int64 {
	var c int64
	lo := 0
	for _, r := range prefix {
		lo = lo*10 + int(r-'0')
	}
	for width := 1; lo < n; width *= 10 {
		c += int64(min(lo+width, n) - lo)
		lo *= 10
	}
	return c
}

// Over a million keys (or -sweep.slowlog-keys), no SCAN or UNLINK call of
// the walk takes 2 ms or more on the server (SLOWLOG), from the first call
// of the walk on. Not parallel, and up to three sweeps: on a busy 2-core
// machine a server descheduled mid-call can log any command now and then
// (seen: single calls of 5-48 ms with COUNT under 200 while other test
// packages ran), while a COUNT that is too large makes calls slow in every
// sweep. So a sweep passes with slow calls for at most one round trip in
// 200, and one of three sweeps must pass. The log line gives the figures
// (slow calls, their COUNT) to compare between runs. The patterns are those of the
// 10M-key report: "key:12*", with "key:3?" beside it on 1M keys.
func TestSweepStaysOutOfSlowlog(t *testing.T) {
	n := *slowlogKeys
	patterns, want := []string{"key:12*"}, matching(n, "12")
	if n <= 1_000_000 {
		patterns = append(patterns, "key:1*", "key:3?")
		want = matching(n, "1") + 10
	}
	rdb := newRedis(t)
	ctx := context.Background()
	rdb.ConfigSet(ctx, "slowlog-log-slower-than", "2000")
	rdb.ConfigSet(ctx, "slowlog-max-len", "1000")
	w := newWalker(t, rdb, sweep.Config{})
	opts := *rdb.Options()
	opts.ReadTimeout = -1 // DEBUG POPULATE of 10M keys takes seconds
	admin := redis.NewClient(&opts)
	defer admin.Close()
	var slow []string
	for attempt := range 3 {
		if err := admin.Do(ctx, "DEBUG", "POPULATE", n, "key").Err(); err != nil {
			t.Fatal(err)
		}
		rdb.SlowLogReset(ctx)
		rdb.ConfigResetStat(ctx)
		start := time.Now()
		res, err := w.Sweep(ctx, patterns)
		if err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(start)
		logs, err := rdb.SlowLogGet(ctx, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		slow = slow[:0]
		for _, l := range logs {
			if name := strings.ToUpper(l.Args[0]); name == "SCAN" || name == "UNLINK" {
				slow = append(slow, fmt.Sprintf("%s took %s: %q", name, l.Duration, l.Args[:min(len(l.Args), 6)]))
			}
		}
		t.Logf("sweep %d of %d keys removed %d keys in %d SCAN calls, %s (%s per call on the server); %d slow calls: %q",
			attempt+1, n, res.Removed, res.ScanCalls, elapsed.Round(time.Millisecond), scanUsecPerCall(t, rdb), len(slow), slow)
		if res.Removed != want {
			t.Errorf("removed %d keys, want %d", res.Removed, want)
		}
		if left := scanAll(t, rdb, "key:12*"); len(left) > 0 {
			t.Errorf("%d keys survived", len(left))
		}
		if int64(len(slow)) <= res.ScanCalls/200 {
			return
		}
	}
	t.Errorf("every sweep logged slow calls for more than 1 round trip in 200, the last: %q", slow)
}

// scanUsecPerCall reads the mean server time of a SCAN from INFO
// commandstats.
func scanUsecPerCall(t testing.TB, rdb *redis.Client) string {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if _, rest, ok := strings.Cut(line, "cmdstat_scan:"); ok {
			for f := range strings.SplitSeq(strings.TrimSpace(rest), ",") {
				if v, ok := strings.CutPrefix(f, "usec_per_call="); ok {
					return v + " µs"
				}
			}
		}
	}
	return "?"
}

// With a budget, the walk examines keys no faster than the budget (plus
// one burst): the time a pass takes is measured against DBSIZE.
func TestSweepBudget(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	ctx := context.Background()
	if err := rdb.Do(ctx, "DEBUG", "POPULATE", 100_000, "key").Err(); err != nil {
		t.Fatal(err)
	}
	const budget = 50_000
	w := newWalker(t, rdb, sweep.Config{Budget: budget})
	start := time.Now()
	res, err := w.Sweep(ctx, []string{"nothing:*"})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	rate := float64(100_000-sweep.DefaultScanCount) / elapsed.Seconds() // less one burst
	t.Logf("pass over 100k keys in %s: %.0f keys/s with a budget of %d (examined %d)", elapsed, rate, budget, res.Examined)
	if rate > 1.2*budget {
		t.Errorf("examined %.0f keys/s, budget %d", rate, budget)
	}
}

// A dry walker removes nothing and reports each matching key once, all
// patterns in one pass.
func TestSweepDryRun(t *testing.T) {
	t.Parallel()
	rdb := newRedis(t)
	ctx := context.Background()
	if err := rdb.Do(ctx, "DEBUG", "POPULATE", 20000, "key").Err(); err != nil {
		t.Fatal(err)
	}
	before := rdb.DBSize(ctx).Val()
	seen := map[string]int{}
	w := newWalker(t, rdb, sweep.Config{DryRun: func(k string) { seen[k]++ }, MaxCallTime: time.Hour})
	res, err := w.Sweep(ctx, []string{"key:1*", "key:1?", "key:2*"})
	if err != nil {
		t.Fatal(err)
	}
	want := len(scanAll(t, rdb, "key:[12]*"))
	if len(seen) != want || res.Removed != int64(want) {
		t.Errorf("reported %d keys (Removed %d), want the %d that match", len(seen), res.Removed, want)
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s reported %d times", k, n)
		}
	}
	if after := rdb.DBSize(ctx).Val(); after != before {
		t.Errorf("DBSIZE %d after a dry run, was %d", after, before)
	}
	if passCalls := before/1000 + 2; res.ScanCalls > 2*passCalls {
		t.Errorf("%d SCAN calls for three patterns, want about one pass (%d)", res.ScanCalls, passCalls)
	}
}
