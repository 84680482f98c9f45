package worker_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go/jetstream"
)

// passCounter counts the finished passes of the shared walk.
type passCounter struct {
	sweep.Observer
	passes atomic.Int64
}

func (p *passCounter) PassFinished(sweep.Pass) { p.passes.Add(1) }

type nopSweepObserver struct{}

func (nopSweepObserver) PassFinished(sweep.Pass)   {}
func (nopSweepObserver) KeysExamined(int)          {}
func (nopSweepObserver) KeysRemoved(int)           {}
func (nopSweepObserver) ActivePatterns(int)        {}
func (nopSweepObserver) PatternWait(time.Duration) {}
func (nopSweepObserver) Progress(float64)          {}

// TestPatternBacklogSharesOnePass drains a backlog of pattern events with
// distinct ids through the worker: one shared walk serves them all, so
// Redis serves at most two passes' worth of SCAN calls (one pass when every
// event is in hand before the walk starts), where one walk per event used
// to cost a pass each. Every course's keys go; the neighbours stay.
func TestPatternBacklogSharesOnePass(t *testing.T) {
	for _, adaptive := range []bool{false, true} {
		t.Run("adaptive-count="+strconv.FormatBool(adaptive), func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			const courses, filler = 100, 50000
			keys := numbered("filler:", filler)
			for c := range courses {
				id := strconv.Itoa(c)
				keys = append(keys, "cache:course_analytics:"+id+":a", "cache:course_analytics:"+id+":b", "cache:course_analytics:"+id+"00:x") // course 4 vs 400: never an event's
			}
			h.set(keys...)
			// A plain SCAN COUNT 1000 pass, the yardstick.
			passCalls := 0
			for cursor := uint64(0); ; {
				_, next, err := h.rdb.Scan(ctx, cursor, "", 1000).Result()
				if err != nil {
					t.Fatal(err)
				}
				passCalls++
				if cursor = next; cursor == 0 {
					break
				}
			}
			if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: worker.DefaultStream, Subjects: []string{"events.>"}}); err != nil {
				t.Fatal(err)
			}
			for c := range courses {
				h.publish("events.course.updated", course(c))
			}
			var cfg sweep.Config
			if !adaptive {
				cfg.MaxCallTime = time.Hour // COUNT stays 1000: calls compare with the yardstick
			}
			obs := &passCounter{Observer: nopSweepObserver{}}
			cfg.Observer = obs
			if err := h.rdb.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			eng := newEngine(t, h.rdb, engine.Config{Sweep: cfg})
			t.Cleanup(func() { _ = eng.Close() })
			cf := testConfig()
			cf.Concurrency = 16
			r := h.start(cf, worker.Deps{Engine: eng})
			h.eventually("every event applied", 60*time.Second, func() bool { return r.w.Stats().Applied == courses })
			calls := scanCalls(t, h)
			t.Logf("%d events: %d SCAN calls, %d finished passes; one plain pass: %d calls", courses, calls, obs.passes.Load(), passCalls)
			if !adaptive && calls > 2*passCalls+2 {
				t.Errorf("%d SCAN calls for %d events, want at most two passes' worth (2×%d)", calls, courses, passCalls)
			}
			if p := obs.passes.Load(); p > 2 {
				t.Errorf("%d passes for the backlog, want at most 2", p)
			}
			for c := range courses {
				id := strconv.Itoa(c)
				if h.exists("cache:course_analytics:"+id+":a") || h.exists("cache:course_analytics:"+id+":b") {
					t.Fatalf("course %s: a key survived", id)
				}
				if !h.exists("cache:course_analytics:" + id + "00:x") {
					t.Fatalf("course %s00's key was removed", id)
				}
			}
			if n := h.dbsize(); n != filler+courses {
				t.Errorf("DBSIZE = %d, want %d (filler and neighbours)", n, filler+courses)
			}
		})
	}
}

// scanCalls reads the SCAN calls Redis served since CONFIG RESETSTAT.
func scanCalls(t *testing.T, h *harness) int {
	t.Helper()
	info, err := h.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_scan:calls="); ok {
			v, _, _ := strings.Cut(rest, ",")
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// TestPatternEventsDoNotHoldHandlers drains a backlog of pattern events with
// one handler taking one event at a time. Each event leaves the handler
// while it waits for the sweep, so all of them join the one running walk:
// at most two passes for the backlog, where a handler waiting for each
// event's sweep made one pass per event.
func TestPatternEventsDoNotHoldHandlers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	const courses, filler = 30, 20000
	keys := numbered("filler:", filler)
	for c := range courses {
		id := strconv.Itoa(c)
		keys = append(keys, "cache:course_analytics:"+id+":a", "cache:course_analytics:"+id+"00:x")
	}
	h.set(keys...)
	if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: worker.DefaultStream, Subjects: []string{"events.>"}}); err != nil {
		t.Fatal(err)
	}
	for c := range courses {
		h.publish("events.course.updated", course(c))
	}
	// A pass of 20,000 keys at COUNT 100 is 200 round trips: long enough for
	// every event to arrive while the first pass runs.
	obs := &passCounter{Observer: nopSweepObserver{}}
	eng := newEngine(t, h.rdb, engine.Config{Sweep: sweep.Config{ScanCount: 100, MinScanCount: 100, MaxScanCount: 100, Observer: obs}})
	t.Cleanup(func() { _ = eng.Close() })
	cf := testConfig()
	cf.Concurrency, cf.BatchSize = 1, 1
	r := h.start(cf, worker.Deps{Engine: eng})
	h.eventually("every event applied", 60*time.Second, func() bool { return r.w.Stats().Applied == courses })
	if p := obs.passes.Load(); p > 2 {
		t.Errorf("%d passes for %d events with one handler, want at most 2", p, courses)
	}
	for c := range courses {
		id := strconv.Itoa(c)
		if h.exists("cache:course_analytics:" + id + ":a") {
			t.Errorf("course %s: its key survived", id)
		}
		if !h.exists("cache:course_analytics:" + id + "00:x") {
			t.Errorf("course %s00's key was removed", id)
		}
	}
	if n := h.dbsize(); n != filler+courses {
		t.Errorf("DBSIZE = %d, want %d", n, filler+courses)
	}
}
