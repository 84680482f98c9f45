// Package enginetest is the contract every engine.Engine passes, one suite
// for all of them, as Watermill's TestPubSub is for its pub/subs and River's
// riverdrivertest for its drivers:
//
//	func TestContract(t *testing.T) {
//		enginetest.Run(t, func(t *testing.T) enginetest.Setup {
//			rdb := testserver.RedisClient(t, testserver.Redis(t))
//			e, err := engine.NewRedis(rdb, engine.Config{})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return enginetest.Setup{Engine: e, Client: rdb}
//		})
//	}
//
// Every case asserts what is left in Redis, not only what the engine says.
package enginetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

// Setup is one engine under test and a client on the keyspace it serves.
type Setup struct {
	// Engine is the engine under test.
	Engine engine.Engine
	// Client seeds and inspects keys: a *redis.Client on the same server,
	// or a *redis.ClusterClient on the same cluster (keys are then listed on
	// every master). It must log in as the same user as the engine, with
	// the right to run ACL SETUSER: the per-job errors case narrows that
	// user's key permissions for a while (on every node).
	Client redis.UniversalClient
}

// Run runs every case of the contract against the engines newEngine makes.
// newEngine is called once per case; the engines of different cases may
// share a server, since each case keeps to keys under its own prefix. The
// cases run one after the other, because one of them changes ACLs.
func Run(t *testing.T, newEngine func(t *testing.T) Setup) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newEngine(t)
			if s.Engine == nil || s.Client == nil {
				t.Fatal("Setup needs an Engine and a Client")
			}
			c.run(t, s, "enginetest:"+c.id+":")
		})
	}
}

var cases = []struct {
	name, id string
	run      func(t *testing.T, s Setup, prefix string)
}{
	{"done exactly once per job", "once", testDoneOnce},
	{"callbacks may be concurrent", "concurrent", testConcurrentCallbacks},
	{"errors are reported per job", "errors", testErrorsPerJob},
	{"cancelled before Apply", "precancel", testCancelledBefore},
	{"cancellation stops a sweep", "cancel", testCancelStopsSweep},
	{"neighbours stay untouched", "neighbours", testNeighbours},
	{"exact jobs do not wait for patterns", "nowait", testExactNotHeldBack},
	{"large job", "large", testLargeJob},
	{"capture reports what a job displaced", "capture", testCapture},
}

// recorder is the done callback of a case: safe for concurrent calls, it
// counts the calls per job and notices calls out of range or after Apply
// returned.
type recorder struct {
	mu       sync.Mutex
	calls    []int
	results  []engine.Result
	errs     []error
	order    []int
	returned bool
	faults   []string
}

func newRecorder(n int) *recorder {
	return &recorder{calls: make([]int, n), results: make([]engine.Result, n), errs: make([]error, n)}
}

func (r *recorder) done(i int, res engine.Result, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case i < 0 || i >= len(r.calls):
		r.faults = append(r.faults, fmt.Sprintf("done called with index %d of %d jobs", i, len(r.calls)))
		return
	case r.returned:
		r.faults = append(r.faults, fmt.Sprintf("done called for job %d after Apply returned", i))
	}
	r.calls[i]++
	r.results[i], r.errs[i] = res, err
	r.order = append(r.order, i)
}

// apply runs jobs through s.Engine and checks that done was called exactly
// once per job before Apply returned.
func apply(t *testing.T, ctx context.Context, s Setup, jobs []engine.Job) *recorder {
	t.Helper()
	rec := newRecorder(len(jobs))
	s.Engine.Apply(ctx, jobs, rec.done)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.returned = true
	for _, f := range rec.faults {
		t.Error(f)
	}
	for i, n := range rec.calls {
		if n != 1 {
			t.Errorf("job %d: done called %d times, want exactly once", i, n)
		}
	}
	return rec
}

// requireNoErrors fails the test for each job that reported an error.
func (r *recorder) requireNoErrors(t *testing.T) {
	t.Helper()
	for i, err := range r.errs {
		if err != nil {
			t.Errorf("job %d: %v", i, err)
		}
	}
}

func keys(prefix, name string, n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = prefix + name + ":" + strconv.Itoa(i)
	}
	return ks
}

// testDoneOnce: done is called exactly once per job, across many jobs of
// every kind, including duplicate jobs, keys repeated within a job and
// across jobs, and empty jobs; every key asked for is gone, the others stay.
func testDoneOnce(t *testing.T, s Setup, p string) {
	var jobs []engine.Job
	var gone []string
	kept := keys(p, "keep", 20)
	for i := range 60 {
		ks := keys(p, "k"+strconv.Itoa(i), 3)
		switch i % 6 {
		case 0:
			jobs = append(jobs, engine.Job{})
			kept = append(kept, ks...)
			continue
		case 1:
			jobs = append(jobs, engine.Job{Exact: ks})
		case 2:
			jobs = append(jobs, engine.Job{Exact: ks}, engine.Job{Exact: ks})
		case 3:
			jobs = append(jobs, engine.Job{Exact: append(ks, ks...)})
		case 4:
			jobs = append(jobs, engine.Job{Exact: ks[:1], Patterns: []string{p + "k" + strconv.Itoa(i) + ":*"}})
		case 5:
			jobs = append(jobs, engine.Job{Exact: append(ks, keys(p, "k"+strconv.Itoa(i-1), 3)...)})
		}
		gone = append(gone, ks...)
	}
	seed(t, s.Client, append(gone, kept...)...)
	apply(t, t.Context(), s, jobs).requireNoErrors(t)
	requireKeys(t, s.Client, p+"*", kept)
}

// testConcurrentCallbacks: a callback that takes its time, and is called
// from several goroutines at once, delays nothing it should not: every job
// completes once, its keys are gone.
func testConcurrentCallbacks(t *testing.T, s Setup, p string) {
	var jobs []engine.Job
	var all []string
	for i := range 32 {
		ks := keys(p, "c"+strconv.Itoa(i), 4)
		all = append(all, ks...)
		if i%2 == 0 {
			jobs = append(jobs, engine.Job{Patterns: []string{p + "c" + strconv.Itoa(i) + ":*"}})
		} else {
			jobs = append(jobs, engine.Job{Exact: ks})
		}
	}
	seed(t, s.Client, all...)
	var inFlight, most atomic.Int32
	rec := newRecorder(len(jobs))
	s.Engine.Apply(t.Context(), jobs, func(i int, res engine.Result, err error) {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(2 * time.Millisecond)
		rec.done(i, res, err)
		inFlight.Add(-1)
	})
	if n := inFlight.Load(); n != 0 {
		t.Errorf("Apply returned with %d callbacks still running", n)
	}
	for i, n := range rec.calls {
		if n != 1 {
			t.Errorf("job %d: done called %d times, want exactly once", i, n)
		}
	}
	rec.requireNoErrors(t)
	requireKeys(t, s.Client, p+"*", nil)
	t.Logf("at most %d callbacks ran at once", most.Load())
}

// testErrorsPerJob: one job's failure is that job's alone. A real per-job
// failure needs a server that refuses one job's work and not the others':
// UNLINK of a key of the wrong type or a missing key is no error, and
// config-made failures (a sweep limit) would tie the suite to one engine's
// options. So the case narrows the ACL of the engine's user for a while:
// keys under the case's "ok" prefix and the generation keys stay writable,
// the rest read-only. The job with an exact key, and the job with a pattern,
// that reach read-only keys fail with NOPERM (as an error wrapping a
// redis.Error, so that the consumer can classify it); the exact jobs beside
// them succeed, and the read-only keys are still there. The other jobs are
// exact-only on purpose: a shared sweep may fail every pattern of the pass
// that met the refusal.
func testErrorsPerJob(t *testing.T, s Setup, p string) {
	ok, ro := keys(p, "ok", 4), keys(p, "ro", 3)
	seed(t, s.Client, append(slices.Clone(ok), ro...)...)
	restrictKeys(t, s.Client, "~"+p+"ok:*", "~"+guard.KeyPrefix+"*", "%R~*")
	jobs := []engine.Job{
		{Exact: ok[:2]},
		{Exact: ro[:1]},
		{Patterns: []string{p + "ro:*"}},
		{Exact: ok[2:]},
	}
	rec := apply(t, t.Context(), s, jobs)
	for i, wantFail := range []bool{false, true, true, false} {
		switch err := rec.errs[i]; {
		case !wantFail && err != nil:
			t.Errorf("job %d failed, want success: %v", i, err)
		case wantFail && err == nil:
			t.Errorf("job %d succeeded, want NOPERM", i)
		case wantFail && !redis.HasErrorPrefix(err, "NOPERM"):
			t.Errorf("job %d: error %q does not wrap a NOPERM redis.Error", i, err)
		}
	}
	if r := rec.results[0].Removed + rec.results[3].Removed; r != 4 {
		t.Errorf("the succeeding jobs removed %d keys, want 4", r)
	}
	requireKeys(t, s.Client, p+"*", ro)
}

// testCancelledBefore: with ctx already cancelled, no work starts, every
// job fails with an error wrapping context.Canceled, and every key stays.
func testCancelledBefore(t *testing.T, s Setup, p string) {
	ks := keys(p, "x", 6)
	seed(t, s.Client, ks...)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	jobs := []engine.Job{{Exact: ks[:2]}, {Patterns: []string{p + "*"}}, {Exact: ks[2:3], Patterns: []string{p + "x:5"}}, {}}
	rec := apply(t, ctx, s, jobs)
	for i, err := range rec.errs[:3] {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("job %d: error %v, want one wrapping context.Canceled", i, err)
		}
	}
	requireKeys(t, s.Client, p+"*", ks)
}

// bigKeyspace is how many keys the cases that need a slow sweep load.
const bigKeyspace = 100_000

// testCancelStopsSweep: cancelling ctx while a pattern sweeps a large
// keyspace makes Apply return promptly, the job fails with an error
// wrapping context.Canceled, and most matching keys are still there. The
// cancel comes as soon as the first keys are gone (DBSIZE drops), not after
// a sleep.
func testCancelStopsSweep(t *testing.T, s Setup, p string) {
	seed(t, s.Client, keys(p, "big", bigKeyspace)...)
	before := dbSize(t, s.Client)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	returned := make(chan *recorder, 1)
	go func() { returned <- apply(t, ctx, s, []engine.Job{{Patterns: []string{p + "big:*"}}}) }()
	deadline := time.Now().Add(30 * time.Second)
	for dbSize(t, s.Client) >= before {
		if time.Now().After(deadline) {
			t.Fatal("the sweep removed nothing within 30s")
		}
	}
	cancel()
	var rec *recorder
	select {
	case rec = <-returned:
	case <-time.After(2 * time.Second):
		t.Fatal("Apply still running 2s after its context was cancelled")
	}
	if err := rec.errs[0]; !errors.Is(err, context.Canceled) {
		t.Errorf("job error %v, want one wrapping context.Canceled", err)
	}
	if left := len(listKeys(t, s.Client, p+"big:*")); left < bigKeyspace/2 {
		t.Errorf("%d of %d keys left after the cancel, want most: the sweep went on", left, bigKeyspace)
	}
}

// testNeighbours: course 42's key and pattern never reach course 420's
// keys, course 4200's or user 42's.
func testNeighbours(t *testing.T, s Setup, p string) {
	c := p + "cache:course_analytics:"
	gone := []string{c + "42", c + "42:summary", c + "42:students:7"}
	kept := []string{c + "420", c + "420:summary", c + "4200:x", c + "42x", p + "user:42", p + "cache:course:42"}
	seed(t, s.Client, append(slices.Clone(gone), kept...)...)
	rec := apply(t, t.Context(), s, []engine.Job{{Exact: []string{c + "42"}, Patterns: []string{c + "42:*"}}})
	rec.requireNoErrors(t)
	if r := rec.results[0].Removed; r != int64(len(gone)) {
		t.Errorf("Removed = %d, want %d", r, len(gone))
	}
	requireKeys(t, s.Client, p+"*", kept)
}

// testExactNotHeldBack: in a batch with a slow pattern job (a sweep of a
// large keyspace), the exact-only jobs are done before it.
func testExactNotHeldBack(t *testing.T, s Setup, p string) {
	seed(t, s.Client, keys(p, "fill", bigKeyspace)...)
	exact := keys(p, "e", 5)
	seed(t, s.Client, exact...)
	jobs := []engine.Job{{Patterns: []string{p + "fill:*7"}}, {Exact: exact[:2]}, {Patterns: []string{p + "nothing:*"}}, {Exact: exact[2:]}}
	rec := apply(t, t.Context(), s, jobs)
	rec.requireNoErrors(t)
	first := map[int]int{}
	for pos, i := range rec.order {
		first[i] = pos
	}
	for _, e := range []int{1, 3} {
		for _, pj := range []int{0, 2} {
			if first[e] > first[pj] {
				t.Errorf("exact job %d was done after pattern job %d (order %v)", e, pj, rec.order)
			}
		}
	}
	if n := len(listKeys(t, s.Client, p+"fill:*")); n != bigKeyspace-bigKeyspace/10 {
		t.Errorf("%d fill keys left, want %d", n, bigKeyspace-bigKeyspace/10)
	}
	requireKeys(t, s.Client, p+"e:*", nil)
}

// testLargeJob: a job with more exact keys than one UNLINK carries (2,500),
// each asked twice, removes them all and counts each once.
func testLargeJob(t *testing.T, s Setup, p string) {
	ks := keys(p, "l", 2500)
	kept := keys(p, "m", 3)
	seed(t, s.Client, append(slices.Clone(ks), kept...)...)
	rec := apply(t, t.Context(), s, []engine.Job{{Exact: append(slices.Clone(ks), ks...)}})
	rec.requireNoErrors(t)
	if r := rec.results[0].Removed; r != int64(len(ks)) {
		t.Errorf("Removed = %d, want %d", r, len(ks))
	}
	requireKeys(t, s.Client, p+"*", kept)
}

// seed sets every key (value "v") with pipelined SETs, which a cluster
// client splits by node.
func seed(t *testing.T, c redis.UniversalClient, keys ...string) {
	t.Helper()
	for chunk := range slices.Chunk(keys, 10_000) {
		pipe := c.Pipeline()
		for _, k := range chunk {
			pipe.Set(t.Context(), k, "v", 0)
		}
		if _, err := pipe.Exec(t.Context()); err != nil {
			t.Fatalf("seed %d keys: %v", len(chunk), err)
		}
	}
}

// listKeys returns every key matching pattern, on every master of a cluster.
func listKeys(t *testing.T, c redis.UniversalClient, pattern string) []string {
	t.Helper()
	var (
		mu  sync.Mutex
		all []string
	)
	scan := func(ctx context.Context, node *redis.Client) error {
		iter := node.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			all = append(all, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	switch c := c.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(t.Context(), scan)
	case *redis.Client:
		err = scan(t.Context(), c)
	default:
		t.Fatalf("listing keys needs a *redis.Client or *redis.ClusterClient, not %T", c)
	}
	if err != nil {
		t.Fatalf("list keys %q: %v", pattern, err)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// requireKeys fails the test unless the keys matching pattern are exactly want.
func requireKeys(t *testing.T, c redis.UniversalClient, pattern string, want []string) {
	t.Helper()
	got := listKeys(t, c, pattern)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("keys matching %q:\n got  %s\n want %s", pattern, summary(got), summary(want))
	}
}

func summary(ks []string) string {
	if len(ks) > 12 {
		return fmt.Sprintf("%d keys: %s …", len(ks), strings.Join(ks[:12], " "))
	}
	return fmt.Sprintf("%d keys: %s", len(ks), strings.Join(ks, " "))
}

func dbSize(t *testing.T, c redis.UniversalClient) int64 {
	t.Helper()
	n, err := c.DBSize(t.Context()).Result()
	if err != nil {
		t.Fatalf("DBSIZE: %v", err)
	}
	return n
}

// restrictKeys replaces the key permissions of the client's user with
// perms on every node, and restores them when the test ends.
func restrictKeys(t *testing.T, c redis.UniversalClient, perms ...string) {
	t.Helper()
	ctx := context.Background()
	user, err := c.Do(ctx, "ACL", "WHOAMI").Text()
	if err != nil {
		t.Fatalf("ACL WHOAMI: %v", err)
	}
	each := func(fn func(ctx context.Context, node *redis.Client) error) error {
		if cc, ok := c.(*redis.ClusterClient); ok {
			return cc.ForEachShard(ctx, fn)
		}
		return fn(ctx, c.(*redis.Client))
	}
	var (
		mu    sync.Mutex
		saved = map[string][]string{}
	)
	err = each(func(ctx context.Context, node *redis.Client) error {
		info, err := node.Do(ctx, "ACL", "GETUSER", user).Result()
		if err != nil {
			return err
		}
		mu.Lock()
		saved[node.Options().Addr] = keyPerms(info)
		mu.Unlock()
		args := append([]any{"ACL", "SETUSER", user, "resetkeys"}, anys(perms)...)
		return node.Do(ctx, args...).Err()
	})
	t.Cleanup(func() {
		err := each(func(ctx context.Context, node *redis.Client) error {
			args := append([]any{"ACL", "SETUSER", user, "resetkeys"}, anys(saved[node.Options().Addr])...)
			return node.Do(ctx, args...).Err()
		})
		if err != nil {
			t.Errorf("restore the key permissions of %q: %v", user, err)
		}
	})
	if err != nil {
		t.Fatalf("narrow the key permissions of %q (the Setup client needs ACL rights): %v", user, err)
	}
}

// keyPerms returns the key patterns of an ACL GETUSER reply ("~*" → ["~*"]).
func keyPerms(info any) []string {
	var fields []any
	switch v := info.(type) {
	case []any:
		fields = v
	case map[any]any:
		for k, x := range v {
			fields = append(fields, k, x)
		}
	}
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "keys" {
			if s, ok := fields[i+1].(string); ok {
				return strings.Fields(s)
			}
		}
	}
	return []string{"~*"}
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// testCapture: a job with Capture reports the token each generation it
// moved held before (own generations of exact keys, the scope's), the
// batch token, and a sample of at most engine.MaxCapturedKeys of the keys
// its pattern removed, all of them keys the pattern matched; another job
// of the batch naming the same exact key and scope does not hide the
// tokens from before the batch, and reports no capture. Without
// generations the capture says so and holds the keys only.
func testCapture(t *testing.T, s Setup, p string) {
	ctx := t.Context()
	e1, e2, scope := p+"e:1", p+"e:2", p+"pat:"
	pattern := scope + "*"
	matched := keys(p, "pat", 150)
	seed(t, s.Client, append([]string{e1, e2}, matched...)...)
	own := guard.Key
	if _, ok := s.Client.(*redis.ClusterClient); ok {
		own = guard.ClusterKey
	}
	for k, v := range map[string]string{own(e1): "tok-e1", guard.Key(scope): "tok-scope"} {
		if err := s.Client.Set(ctx, k, v, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rec := apply(t, ctx, s, []engine.Job{
		{Exact: []string{e1}, Patterns: []string{scope + "none*"}},
		{Exact: []string{e1, e2}, Patterns: []string{pattern}, Capture: true},
	})
	rec.requireNoErrors(t)
	if c := rec.results[0].Capture; c != nil {
		t.Errorf("the job without Capture reports %+v", c)
	}
	c := rec.results[1].Capture
	if c == nil {
		t.Fatal("the job with Capture reports no capture")
	}
	gens := false
	if g, ok := s.Engine.(interface{ Generations() bool }); ok {
		gens = g.Generations()
	}
	if c.Generations != gens {
		t.Errorf("Capture.Generations = %v, want %v", c.Generations, gens)
	}
	if gens {
		want := []engine.Displaced{{Scope: e1, Key: own(e1), Previous: "tok-e1"}, {Scope: e2, Key: own(e2)}}
		if !slices.Equal(c.Exact, want) {
			t.Errorf("Capture.Exact = %+v, want %+v", c.Exact, want)
		}
		now, err := s.Client.Get(ctx, guard.Key(scope)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if want := []engine.Displaced{{Scope: scope, Key: guard.Key(scope), Previous: "tok-scope", Token: now}}; !slices.Equal(c.Scopes, want) {
			t.Errorf("Capture.Scopes = %+v, want %+v", c.Scopes, want)
		}
		if n, _ := s.Client.Exists(ctx, own(e1), own(e2)).Result(); n != 0 {
			t.Errorf("%d own generations of the exact keys are left", n)
		}
	} else if len(c.Exact)+len(c.Scopes) > 0 {
		t.Errorf("without generations the capture holds tokens: %+v", c)
	}
	got := c.Removed[pattern]
	if len(got) != engine.MaxCapturedKeys {
		t.Errorf("%d keys captured for %s, want %d", len(got), pattern, engine.MaxCapturedKeys)
	}
	seen := map[string]bool{}
	for _, k := range got {
		if !slices.Contains(matched, k) || seen[k] {
			t.Errorf("captured key %q: not one the pattern removed, or twice", k)
		}
		seen[k] = true
	}
	requireKeys(t, s.Client, p+"*", nil)
}
