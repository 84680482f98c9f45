package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// purgeKeyspace is a keyspace for purging course 42: fillers, the keys of
// three patterns with no common literal prefix (so the walk sends no MATCH
// and every key is examined on the client), and their neighbours.
type purgeKeyspace struct {
	patterns   []string
	doomed     []string // keys the patterns match
	neighbours []string // keys they must not touch
}

func newPurgeKeyspace() purgeKeyspace {
	ks := purgeKeyspace{patterns: []string{"cache:course_analytics:42:*", "user:42:*", "session:42:*"}}
	for _, p := range []string{"cache:course_analytics:", "user:", "session:"} {
		for i := range 20 {
			ks.doomed = append(ks.doomed, fmt.Sprintf("%s42:%d", p, i))
			ks.neighbours = append(ks.neighbours, fmt.Sprintf("%s420:%d", p, i), fmt.Sprintf("%s4:%d", p, i))
		}
		ks.neighbours = append(ks.neighbours, p+"42", p+"421:0", "x"+p+"42:0")
	}
	return ks
}

// load writes the keyspace and fillers filler:<i>.
func (ks purgeKeyspace) load(t *testing.T, rdb *redis.Client, fillers int) {
	t.Helper()
	loadKeys(t, rdb, "filler:", fillers)
	pairs := []any{}
	for _, k := range append(append([]string{}, ks.doomed...), ks.neighbours...) {
		pairs = append(pairs, k, "v")
	}
	if err := rdb.MSet(context.Background(), pairs...).Err(); err != nil {
		t.Fatal(err)
	}
}

// check fails t unless exactly the doomed keys are gone (removed true) or
// all keys are still there.
func (ks purgeKeyspace) check(t *testing.T, rdb *redis.Client, removed bool) {
	t.Helper()
	ctx := context.Background()
	n, err := rdb.Exists(ctx, ks.neighbours...).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(ks.neighbours)) {
		t.Errorf("%d of %d neighbours left", n, len(ks.neighbours))
	}
	n, err = rdb.Exists(ctx, ks.doomed...).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := int64(len(ks.doomed))
	if removed {
		want = 0
	}
	if n != want {
		t.Errorf("%d of %d matching keys left, want %d", n, len(ks.doomed), want)
	}
}

func dbSize(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	n, err := rdb.DBSize(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// scanCalls is the number of SCAN commands Redis has served
// (INFO commandstats, cmdstat_scan calls).
func scanCalls(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), "cmdstat_scan:calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			t.Fatalf("cmdstat_scan: %v", err)
		}
		return n
	}
	return 0 // no SCAN served yet
}

// cliTo is cli with the command's stdout and stderr given.
func cliTo(t *testing.T, args []string, redisURL string, stdout, stderr io.Writer) int {
	t.Helper()
	e := env{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr,
		getenv: func(k string) string { return map[string]string{"REDIS_URL": redisURL}[k] }}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return run(ctx, e, args)
}

const (
	onePassKeys  = 50_000
	onePassCount = 16 // SCAN_COUNT; below the walk's smallest COUNT, so COUNT stays fixed
)

// maxOnePassCalls bounds the SCAN calls of one pass over n keys: each call
// examines at least COUNT keys (Redis scans buckets until it has COUNT
// keys), so a pass makes at most n/COUNT calls and the last one; a few more
// allow for a table that grows while it is scanned. A pass per pattern
// would take about three times as many.
func maxOnePassCalls(n int64) int64 { return n/onePassCount + 5 }

// Three patterns over 50k keys are served by one SCAN pass: the walk sends
// no more SCAN calls than one pass needs, and removes exactly their keys.
func TestPurgeSeveralPatternsInOnePass(t *testing.T) {
	t.Parallel()
	r := testserver.Redis(t)
	rdb := testserver.RedisClient(t, r)
	ks := newPurgeKeyspace()
	ks.load(t, rdb, onePassKeys)
	size, before := dbSize(t, rdb), scanCalls(t, rdb)

	got := cli(t, given{args: append([]string{"purge"}, ks.patterns...),
		env: map[string]string{"REDIS_URL": r.URL(), "SCAN_COUNT": strconv.Itoa(onePassCount)}})
	if got.code != exitOK {
		t.Fatalf("exit code %d\nstdout: %s\nstderr: %s", got.code, got.stdout, got.stderr)
	}
	if want := fmt.Sprintf("removed %d ", len(ks.doomed)); !strings.Contains(got.stdout, want) {
		t.Errorf("stdout %q does not hold %q", got.stdout, want)
	}
	ks.check(t, rdb, true)
	calls := scanCalls(t, rdb) - before
	t.Logf("%d SCAN calls over %d keys at COUNT %d", calls, size, onePassCount)
	if limit := maxOnePassCalls(size); calls > limit {
		t.Errorf("%d SCAN calls for 3 patterns over %d keys, want at most %d (one pass)", calls, size, limit)
	}
	if got.stderr != "" {
		t.Errorf("stderr not empty (a bar without a terminal?): %q", got.stderr)
	}
}

// purgeJSON is what --json prints.
type purgeJSON struct {
	Patterns    []string `json:"patterns"`
	Exact       []string `json:"exact"`
	Removed     *int64   `json:"removed"`
	Examined    *int64   `json:"examined"`
	ScanCalls   *int64   `json:"scan_calls"`
	DurationMS  *int64   `json:"duration_ms"`
	DryRun      *bool    `json:"dry_run"`
	WouldRemove *int64   `json:"would_remove"`
	Keys        []string `json:"keys"`
}

// decodeOne decodes stdout as exactly one JSON object, refusing unknown
// fields and anything after it.
func decodeOne(t *testing.T, stdout string) purgeJSON {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	var v purgeJSON
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("stdout is not a JSON summary: %v\n%s", err, stdout)
	}
	if rest, _ := io.ReadAll(dec.Buffered()); strings.TrimSpace(string(rest)) != "" || dec.More() {
		t.Fatalf("stdout holds more than one object:\n%s", stdout)
	}
	if v.Removed == nil || v.Examined == nil || v.ScanCalls == nil || v.DurationMS == nil || v.DryRun == nil ||
		v.Patterns == nil || v.Exact == nil {
		t.Fatalf("summary lacks a field:\n%s", stdout)
	}
	return v
}

// The --json summary parses and its counts are what Redis shows: removed
// is the drop in DBSIZE, scan_calls the SCAN calls Redis served, examined
// one pass over the keyspace.
func TestPurgeJSON(t *testing.T) {
	t.Parallel()
	r := testserver.Redis(t)
	rdb := testserver.RedisClient(t, r)
	ks := newPurgeKeyspace()
	ks.load(t, rdb, onePassKeys)
	size, calls := dbSize(t, rdb), scanCalls(t, rdb)

	args := append([]string{"purge", "--json", "user:42", "gone:1"}, ks.patterns...)
	got := cli(t, given{args: args, env: map[string]string{"REDIS_URL": r.URL(), "SCAN_COUNT": strconv.Itoa(onePassCount)}})
	if got.code != exitOK {
		t.Fatalf("exit code %d\nstdout: %s\nstderr: %s", got.code, got.stdout, got.stderr)
	}
	if got.stderr != "" {
		t.Errorf("stderr not empty with --json: %q", got.stderr)
	}
	v := decodeOne(t, got.stdout)
	removed, served := size-dbSize(t, rdb), scanCalls(t, rdb)-calls
	if *v.Removed != removed || removed != int64(len(ks.doomed))+1 {
		t.Errorf("removed %d, DBSIZE dropped by %d, want %d", *v.Removed, removed, len(ks.doomed)+1)
	}
	if *v.ScanCalls != served || served > maxOnePassCalls(size) {
		t.Errorf("scan_calls %d, Redis served %d SCAN calls, want at most %d", *v.ScanCalls, served, maxOnePassCalls(size))
	}
	if *v.Examined < size-removed || *v.Examined > size+size/10 {
		t.Errorf("examined %d keys, want one pass over %d", *v.Examined, size)
	}
	if *v.DryRun || v.WouldRemove != nil || v.Keys != nil {
		t.Errorf("dry-run fields in a purge: %s", got.stdout)
	}
	if strings.Join(v.Patterns, " ") != strings.Join(ks.patterns, " ") || strings.Join(v.Exact, " ") != "user:42 gone:1" {
		t.Errorf("patterns %q, exact %q", v.Patterns, v.Exact)
	}
	// user:42 was named as an exact key: no longer a neighbour.
	ks.neighbours = slices.DeleteFunc(ks.neighbours, func(k string) bool { return k == "user:42" })
	ks.doomed = append(ks.doomed, "user:42")
	ks.check(t, rdb, true)
}

// --json --dry-run removes nothing and lists what would go.
func TestPurgeJSONDryRun(t *testing.T) {
	t.Parallel()
	r := testserver.Redis(t)
	rdb := testserver.RedisClient(t, r)
	ks := newPurgeKeyspace()
	ks.load(t, rdb, 2000)
	size := dbSize(t, rdb)

	got := cli(t, given{args: append([]string{"purge", "--dry-run", "--json"}, ks.patterns...),
		env: map[string]string{"REDIS_URL": r.URL()}})
	if got.code != exitOK {
		t.Fatalf("exit code %d\nstdout: %s\nstderr: %s", got.code, got.stdout, got.stderr)
	}
	v := decodeOne(t, got.stdout)
	if after := dbSize(t, rdb); after != size {
		t.Errorf("DBSIZE %d after a dry run, was %d", after, size)
	}
	ks.check(t, rdb, false)
	if !*v.DryRun || *v.Removed != 0 || v.WouldRemove == nil || *v.WouldRemove != int64(len(ks.doomed)) {
		t.Errorf("dry_run %v, removed %d, would_remove %v, want true, 0, %d", *v.DryRun, *v.Removed, v.WouldRemove, len(ks.doomed))
	}
	listed := map[string]bool{}
	for _, k := range v.Keys {
		listed[k] = true
	}
	for _, k := range ks.doomed {
		if !listed[k] {
			t.Errorf("keys does not list %q", k)
		}
	}
	if len(v.Keys) != len(ks.doomed) {
		t.Errorf("keys lists %d, want %d", len(v.Keys), len(ks.doomed))
	}
}

// --json with a Redis that is down: nothing on stdout, one line on stderr,
// exit 1.
func TestPurgeJSONError(t *testing.T) {
	t.Parallel()
	got := cli(t, given{args: []string{"purge", "--json", "--timeout=500ms", "user:*"},
		env: map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}})
	if got.code != exitFailure || got.stdout != "" || len(lines(got.stderr)) != 1 {
		t.Errorf("exit code %d, stdout %q, stderr %q; want 1, nothing, one line", got.code, got.stdout, got.stderr)
	}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func running(p float64, n int64) sweep.Status {
	return sweep.Status{Running: true, Progress: p, Examined: n}
}

// The renderer draws keys examined / DBSIZE, the rate and the ETA, skips
// frames closer than barMinGap, and clears its line at the end.
func TestPurgeProgressBarFrames(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clock := &fakeClock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	b := newBar(&out, 50_000, clock.now)

	clock.advance(2 * time.Second)
	b.draw(running(0.37, 18_500))
	want := "\r[#######.............]  37% 18,500/50,000 keys  9,250 keys/s  ETA 3s"
	if out.String() != want {
		t.Fatalf("first frame\n got %q\nwant %q", out.String(), want)
	}

	clock.advance(100 * time.Millisecond)
	b.draw(running(0.4, 20_000))
	if out.String() != want {
		t.Fatalf("frame drawn 100ms after the last: %q", strings.TrimPrefix(out.String(), want))
	}

	clock.advance(100 * time.Millisecond) // 2.2s in
	b.draw(running(0.5, 25_000))
	second := "\r[##########..........]  50% 25,000/50,000 keys  11,363 keys/s  ETA 2s"
	if got := strings.TrimPrefix(out.String(), want); got != second {
		t.Fatalf("second frame\n got %q\nwant %q", got, second)
	}

	before := out.Len()
	b.clear()
	if got := out.String()[before:]; got != "\r"+strings.Repeat(" ", len(second)-1)+"\r" {
		t.Errorf("clear wrote %q", got)
	}
}

// The first frame, before the walk reports, has no rate and no ETA; a
// shorter frame pads over a longer one.
func TestPurgeProgressBarEdges(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	clock := &fakeClock{t: time.Unix(0, 0)}
	b := newBar(&out, 1_234_567, clock.now)
	b.draw(sweep.Status{})
	first := "\r[....................]   0% 0/1,234,567 keys  - keys/s  ETA -"
	if out.String() != first {
		t.Fatalf("got %q, want %q", out.String(), first)
	}
	clock.advance(time.Minute)
	b.draw(running(0.999, 1_200_000))
	if !strings.Contains(out.String(), " 99% 1,200,000/1,234,567 keys  20,000 keys/s  ETA 0s") {
		t.Errorf("late frame: %q", out.String())
	}
}

// run draws a frame at once and one per tick while the walk runs, and
// clears the bar when stopped.
func TestPurgeProgressBarRun(t *testing.T) {
	t.Parallel()
	var out testproc.Buffer
	clock := &fakeClock{t: time.Unix(0, 0)}
	b := newBar(&out, 1000, clock.now)
	statuses := make(chan sweep.Status, 1)
	status := func() (sweep.Status, bool) { return <-statuses, true }
	tick, stop, done := make(chan time.Time), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		b.run(status, stop, tick)
	}()
	eventually(t, "the first frame", time.Second, func() bool { return out.String() != "" })
	for _, s := range []sweep.Status{running(0.25, 250), {Running: false, Progress: 0.9}, running(0.5, 500)} {
		clock.advance(barInterval)
		statuses <- s
		tick <- clock.now()
	}
	close(stop)
	<-done
	frames := strings.Split(out.String(), "\r")
	var drawn []string
	for _, f := range frames {
		if strings.TrimSpace(f) != "" {
			drawn = append(drawn, f[:strings.Index(f, "%")+1])
		}
	}
	if want := []string{"[....................]   0%", "[#####...............]  25%", "[##########..........]  50%"}; strings.Join(drawn, "|") != strings.Join(want, "|") {
		t.Errorf("frames %q, want %q", drawn, want)
	}
	if !strings.HasSuffix(out.String(), strings.Repeat(" ", 10)+"\r") {
		t.Errorf("bar not cleared at the end: %q", out.String())
	}
}

// devNull opens /dev/null, a character device but not a terminal.
func devNull(t *testing.T) *os.File {
	t.Helper()
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// pipe returns the write end of a pipe and a function that closes it and
// returns what was written.
func pipe(t *testing.T) (*os.File, func() string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		_ = r.Close()
		got <- string(b)
	}()
	return w, func() string {
		_ = w.Close()
		return <-got
	}
}

func TestPurgeProgressBarOutput(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	tests := []struct {
		name           string
		stdout, stderr func(t *testing.T) io.Writer
		json           bool
		wantBar        bool
	}{
		{"stdout a terminal", func(t *testing.T) io.Writer { return pty(t) }, func(*testing.T) io.Writer { return &buf }, false, true},
		{"both terminals", func(t *testing.T) io.Writer { return pty(t) }, func(t *testing.T) io.Writer { return pty(t) }, false, true},
		{"stdout /dev/null, as under cron", func(t *testing.T) io.Writer { return devNull(t) }, func(*testing.T) io.Writer { return &buf }, false, false},
		{"stderr /dev/null", func(t *testing.T) io.Writer { return pty(t) }, func(t *testing.T) io.Writer { return devNull(t) }, false, false},
		{"with --json", func(t *testing.T) io.Writer { return pty(t) }, func(*testing.T) io.Writer { return &buf }, true, false},
		{"stdout a pipe", func(t *testing.T) io.Writer { w, _ := pipe(t); return w }, func(*testing.T) io.Writer { return &buf }, false, false},
		{"stdout a buffer", func(*testing.T) io.Writer { return &buf }, func(*testing.T) io.Writer { return &buf }, false, false},
		{"stderr a pipe", func(t *testing.T) io.Writer { return pty(t) }, func(t *testing.T) io.Writer { w, _ := pipe(t); return w }, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr := tt.stdout(t), tt.stderr(t)
			defer func() {
				for _, w := range []io.Writer{stdout, stderr} {
					if f, ok := w.(*os.File); ok {
						_ = f.Close() // ends a pipe's reader
					}
				}
			}()
			got := barOutput(env{stdout: stdout, stderr: stderr}, tt.json)
			if (got != nil) != tt.wantBar {
				t.Errorf("bar output %v, want a bar: %v", got, tt.wantBar)
			}
			if got != nil && got != stderr {
				t.Errorf("bar drawn on %v, not stderr", got)
			}
		})
	}
}

// A real purge draws its bar on stderr when stdout is a terminal, and none
// when stdout is a pipe or with --json.
func TestPurgeProgressBarOnlyOnATerminal(t *testing.T) {
	t.Parallel()
	r := testserver.Redis(t)
	rdb := testserver.RedisClient(t, r)
	ks := newPurgeKeyspace()
	ks.load(t, rdb, 1000)
	args := append([]string{"purge"}, ks.patterns...)

	var stderr bytes.Buffer
	if code := cliTo(t, args, r.URL(), pty(t), &stderr); code != exitOK {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	bar := stderr.String()
	if !strings.HasPrefix(bar, "\r[") || !strings.Contains(bar, "/1,"+strconv.Itoa(len(ks.doomed)+len(ks.neighbours))+" keys") ||
		!strings.HasSuffix(bar, " \r") {
		t.Errorf("on a terminal, stderr is not a drawn and cleared bar: %q", bar)
	}
	ks.check(t, rdb, true)

	ks.load(t, rdb, 0)
	stderr.Reset()
	stdout, output := pipe(t)
	code := cliTo(t, args, r.URL(), stdout, &stderr)
	out := output()
	if code != exitOK || !strings.Contains(out, "removed 60 ") {
		t.Fatalf("exit code %d, stdout %q, stderr %q", code, out, stderr.String())
	}
	if stderr.Len() != 0 || strings.Contains(out, "\r") {
		t.Errorf("bar bytes with stdout a pipe: stderr %q, stdout %q", stderr.String(), out)
	}
	ks.check(t, rdb, true)

	ks.load(t, rdb, 0)
	stderr.Reset()
	if code := cliTo(t, append([]string{"purge", "--json"}, ks.patterns...), r.URL(), pty(t), &stderr); code != exitOK || stderr.Len() != 0 {
		t.Errorf("--json on a terminal: exit code %d, stderr %q", code, stderr.String())
	}
	ks.check(t, rdb, true)
}
