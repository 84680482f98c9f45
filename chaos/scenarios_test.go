package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go/jetstream"
)

// TestFaults runs every scenario in its own subtest with its own servers,
// prints a row for each and writes the table to docs/chaos/results.md.
func TestFaults(t *testing.T) {
	began := time.Now()
	testproc.Binary(t)
	t.Cleanup(func() { writeResults(t, time.Since(began)) })
	scenarios := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"worker-sigkill-mid-batch", testKillMidBatch},
		{"worker-sigkill-mid-sweep", testKillMidSweep},
		{"redis-sigstop", testRedisStall},
		{"redis-restart-aof", testRedisRestart},
		{"nats-restart", testNATSRestart},
		{"redis-maxmemory-noeviction", testRedisFull},
		{"handler-slower-than-ack-wait", testSlowHandler},
		{"max-ack-pending-full", testMaxAckPending},
		{"publisher-retry-msg-id", testPublisherRetry},
		{"glob-injection-corpus", testGlobCorpus},
		{"start-stop-stress", testStartStop},
	}
	for _, s := range scenarios {
		t.Run(s.name, s.run)
	}
}

// batch is a set of item events: event i removes item:<prefix><i>.
type batch struct{ ids, keys []string }

func newBatch(prefix string, n int) batch {
	var b batch
	for i := range n {
		id := prefix + strconv.Itoa(i)
		b.ids = append(b.ids, id)
		b.keys = append(b.keys, "item:"+id)
	}
	return b
}

// canaries are neighbours of every 10th key that no event names.
func (b batch) canaries() []string {
	var c []string
	for i := 0; i < len(b.ids); i += 10 {
		c = append(c, "item:"+b.ids[i]+"x", "item:"+b.ids[i]+":child", "item:x"+b.ids[i])
	}
	return c
}

func (b batch) perEvent() [][]string {
	out := make([][]string, len(b.keys))
	for i, k := range b.keys {
		out[i] = []string{k}
	}
	return out
}

// prepare writes the batch's keys and canaries.
func (r *rig) prepare(b batch) {
	r.setKeys(b.keys)
	r.setKeys(b.canaries())
}

// publishItems publishes the batch's events at about rate per second (0:
// as fast as possible) and returns how many the stream acknowledged.
func (r *rig) publishItems(ids []string, rate float64) (int, error) {
	began := time.Now()
	for i, id := range ids {
		if _, err := r.publish("events.item.updated", "ev-"+id, map[string]any{"item_id": id}, 60*time.Second); err != nil {
			return i, err
		}
		if rate > 0 {
			if ahead := time.Until(began.Add(time.Duration(float64(i+1) / rate * float64(time.Second)))); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
	return len(ids), nil
}

// publishAsync runs publishItems in a goroutine; the channel yields its
// result once.
func (r *rig) publishAsync(ids []string, rate float64) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := r.publishItems(ids, rate)
		done <- err
	}()
	return done
}

// finish waits (at most within) until every event's keys are gone and
// the consumer is drained, then fills in the row's figures.
func (r *rig) finish(row *row, perEvent [][]string, canaries []string, faultEnd time.Time, lag *lagSampler, within time.Duration) {
	r.t.Helper()
	var all []string
	for _, ks := range perEvent {
		all = append(all, ks...)
	}
	at := r.waitApplied(all, within)
	switch {
	case at.IsZero():
		row.recover = -1
		row.note = strings.TrimPrefix(row.note+"; not recovered within "+within.String(), "; ")
	case !faultEnd.IsZero():
		row.recover = max(0, at.Sub(faultEnd))
	default:
		row.recover = -1
	}
	for _, ks := range perEvent {
		if n, err := r.existing(ks); err != nil || n > 0 {
			row.lost++
		}
	}
	row.applied = row.published - row.lost
	if n, err := r.existing(canaries); err == nil {
		row.overDeleted = len(canaries) - n
	} else {
		r.t.Errorf("count canaries: %v", err)
	}
	row.duplicates = r.duplicates()
	row.dead, _ = r.deadLetters()
	lag.close()
	row.peakLag, _, _ = lag.peaks()
}

// duplicates counts deliveries after the first: the larger of what the
// workers logged and what the consumer counted (its sequence grows with
// every delivery, the stream sequence once per message).
func (r *rig) duplicates() int {
	n := r.redeliveries()
	if info := r.consumerInfo(); info != nil && info.Delivered.Consumer > info.Delivered.Stream {
		n = max(n, int(info.Delivered.Consumer-info.Delivered.Stream))
	}
	return n
}

// waitFor polls cond every 20ms, failing the test after within.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// 1. SIGKILL of the worker while events flow, repeated; each time a new
// worker starts at once, and the server redelivers what the dead one held
// after ACK_WAIT (2s).
func testKillMidBatch(t *testing.T) {
	n, kills := pick(2000, 10000), pick(2, 5)
	r := newRig(t, false, nil, "ACK_WAIT=2s")
	b := newBatch("k", n)
	r.prepare(b)
	w := r.startWorker()
	lag := r.sampleLag()
	published := r.publishAsync(b.ids, float64(n)/float64(kills))
	var held []string
	for range kills {
		waitFor(t, "the worker to apply events", 30*time.Second, func() bool { return applied(w) > 0 })
		time.Sleep(time.Duration(50+rand.IntN(250)) * time.Millisecond)
		if info := r.consumerInfo(); info != nil {
			held = append(held, strconv.Itoa(info.NumAckPending))
		}
		w.Kill(t)
		w = r.startWorker()
	}
	faultEnd := time.Now()
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	row := row{name: fmt.Sprintf("1. worker SIGKILL mid-batch ×%d", kills), published: n,
		note: fmt.Sprintf("ACK_WAIT 2s; ack pending at each kill: %s", strings.Join(held, ", "))}
	r.finish(&row, b.perEvent(), b.canaries(), faultEnd, lag, 60*time.Second)
	row.check(t)
}

// 2. SIGKILL in the middle of a paced sweep of a large pattern; the next
// worker gets the event after ACK_WAIT and sweeps again.
func testKillMidSweep(t *testing.T) {
	n := pick(20_000, 100_000)
	budget := n / 3 // a pass takes about 3 s
	r := newRig(t, false, nil, "ACK_WAIT=2s", "SCAN_BUDGET="+strconv.Itoa(budget))
	testserver.LoadKeys(r.t, r.rdb, "bulk:b1:", n, 1)
	testserver.LoadKeys(r.t, r.rdb, "other:", n/10, 1)
	canaries := []string{"bulk:b1", "bulk:b1x:0", "bulk:b10:0", "bulk:b2:0", "bulk:b:1", "bulk:B1:0"}
	r.setKeys(canaries)
	ctx := context.Background()
	base := r.rdb.DBSize(ctx).Val()
	w := r.startWorker()
	lag := r.sampleLag()
	if _, err := r.publish("events.bulk.updated", "sweep-b1", map[string]any{"bulk_id": "b1"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sweep to be under way", 30*time.Second, func() bool {
		return r.rdb.DBSize(ctx).Val() <= base-int64(n/10)
	})
	w.Kill(t)
	left := r.rdb.DBSize(ctx).Val() - (base - int64(n))
	r.startWorker()
	faultEnd := time.Now()
	row := row{name: fmt.Sprintf("2. worker SIGKILL mid-sweep (%dk keys)", n/1000), published: 1,
		note: fmt.Sprintf("killed with %d of %d keys left; SCAN_BUDGET %d/s, ACK_WAIT 2s", left, n, budget)}
	if left <= 0 {
		t.Errorf("the sweep finished before the kill; the scenario did not happen")
	}
	// The whole keyspace stands for the event: lost if any bulk:b1:* key survives.
	r.finish(&row, nil, canaries, faultEnd, lag, 120*time.Second)
	if testserver.CountKeys(r.t, r.rdb, "bulk:b1:*") > 0 {
		row.lost = 1
	}
	row.applied = row.published - row.lost
	row.check(t)
}

// 3. Redis SIGSTOPped (a stall, not a refusal) while events flow, then
// SIGCONT.
func testRedisStall(t *testing.T) {
	n, stall := pick(1000, 5000), pick(5*time.Second, 10*time.Second)
	r := newRig(t, false, nil, "ACK_WAIT=3s")
	b := newBatch("s", n)
	r.prepare(b)
	r.startWorker()
	lag := r.sampleLag()
	if _, err := r.publishItems(b.ids[:n/2], 0); err != nil {
		t.Fatal(err)
	}
	pid := r.redis.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	_, err := r.publishItems(b.ids[n/2:], float64(n)/stall.Seconds())
	time.Sleep(time.Until(stopped.Add(stall)))
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	faultEnd := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	row := row{name: fmt.Sprintf("3. Redis SIGSTOP %s, SIGCONT", stall), published: n,
		note: fmt.Sprintf("half the events published during the stall; ACK_WAIT 3s, REDIS_SOCKET_TIMEOUT 1s; worker paused: %v", r.logged("Redis unreachable"))}
	r.finish(&row, b.perEvent(), b.canaries(), faultEnd, lag, 60*time.Second)
	row.check(t)
}

// logged reports whether any worker logged a line containing s.
func (r *rig) logged(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.workers {
		if strings.Contains(p.Stderr.String(), s) {
			return true
		}
	}
	return false
}

// 4. redis-server (AOF, fsync always) stopped and started again while
// events flow.
func testRedisRestart(t *testing.T) {
	n := pick(1000, 5000)
	r := newRig(t, true, nil)
	b := newBatch("a", n)
	r.prepare(b)
	r.startWorker()
	lag := r.sampleLag()
	if _, err := r.publishItems(b.ids[:n/2], 0); err != nil {
		t.Fatal(err)
	}
	if err := r.redis.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	if _, err := r.publishItems(b.ids[n/2:], 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(down.Add(2 * time.Second)))
	if err := r.redis.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	faultEnd := time.Now()
	row := row{name: "4. Redis restart (AOF)", published: n, note: "down 2s; half the events published while it was down"}
	r.finish(&row, b.perEvent(), b.canaries(), faultEnd, lag, 60*time.Second)
	row.check(t)
}

// 5. The embedded NATS server shut down and started again on the same
// port and store while events flow.
func testNATSRestart(t *testing.T) {
	n := pick(1000, 5000)
	r := newRig(t, false, nil, "ACK_WAIT=5s")
	b := newBatch("n", n)
	r.prepare(b)
	r.startWorker()
	lag := r.sampleLag()
	published := r.publishAsync(b.ids, float64(n)/2)
	time.Sleep(time.Second)
	r.stopNATS()
	time.Sleep(time.Second)
	r.startNATS()
	faultEnd := time.Now()
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	row := row{name: "5. NATS restart", published: n, note: "down 1s mid-publish; the publisher retries with the same Nats-Msg-Id; acks sent while NATS was down are lost, so recovery waits for ACK_WAIT (5s here, 30s by default)"}
	r.finish(&row, b.perEvent(), b.canaries(), faultEnd, lag, 60*time.Second)
	row.check(t)
}

// 6. Redis full (maxmemory 2mb, noeviction, after filling): writes are
// refused, UNLINK still works.
func testRedisFull(t *testing.T) {
	n := pick(1000, 5000)
	r := newRig(t, false, nil)
	b := newBatch("m", n)
	r.prepare(b)
	testserver.LoadKeys(r.t, r.rdb, "fill:", 40_000, 100)
	ctx := context.Background()
	for _, kv := range [][2]string{{"maxmemory-policy", "noeviction"}, {"maxmemory", "2mb"}} {
		if err := r.rdb.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	setErr := r.rdb.Set(ctx, "warm:probe", "v", 0).Err()
	if setErr == nil || !strings.HasPrefix(setErr.Error(), "OOM") {
		t.Fatalf("SET on a full Redis: %v, want an OOM error", setErr)
	}
	r.startWorker()
	lag := r.sampleLag()
	began := time.Now()
	if _, err := r.publishItems(b.ids, 0); err != nil {
		t.Fatal(err)
	}
	row := row{name: "6. Redis maxmemory 2mb, noeviction", published: n}
	r.finish(&row, b.perEvent(), b.canaries(), time.Time{}, lag, 60*time.Second)
	row.note = fmt.Sprintf("SET refused (%s); every event applied %s after the first publish", strings.Fields(setErr.Error())[0], time.Since(began).Round(10*time.Millisecond))
	row.check(t)
}

// 7. A sweep paced by SCAN_BUDGET so it outlasts ACK_WAIT (2s) several
// times: the progress signals must keep the server from redelivering it.
func testSlowHandler(t *testing.T) {
	n, secs := pick(6000, 20_000), pick(6, 10)
	budget := n / secs
	r := newRig(t, false, nil, "ACK_WAIT=2s", "SCAN_BUDGET="+strconv.Itoa(budget))
	testserver.LoadKeys(r.t, r.rdb, "bulk:slow:", n, 1)
	canaries := []string{"bulk:slow", "bulk:slowx:0", "bulk:slo:0"}
	r.setKeys(canaries)
	r.startWorker()
	lag := r.sampleLag()
	began := time.Now()
	if _, err := r.publish("events.bulk.updated", "slow-1", map[string]any{"bulk_id": "slow"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slow sweep to finish", 120*time.Second, func() bool { return testserver.CountKeys(r.t, r.rdb, "bulk:slow:*") == 0 && r.drained() })
	took := time.Since(began)
	row := row{name: "7. handler slower than ACK_WAIT", published: 1}
	r.finish(&row, nil, canaries, time.Time{}, lag, 10*time.Second)
	_, _, redelivered := lag.peaks()
	row.note = fmt.Sprintf("one sweep of %d keys took %s with ACK_WAIT 2s (SCAN_BUDGET %d/s); peak NumRedelivered %d", n, took.Round(10*time.Millisecond), budget, redelivered)
	row.check(t)
	if took < 2*time.Second*2 {
		t.Errorf("the sweep took %s, not longer than 2 × ACK_WAIT: the scenario did not happen", took)
	}
	if row.duplicates != 0 || redelivered != 0 {
		t.Errorf("the slow event was redelivered: %d duplicates, peak NumRedelivered %d", row.duplicates, redelivered)
	}
}

// 8. A backlog several times MaxAckPending (1000, there is no setting for
// it), of events that each need a sweep, so that unacked events pile up to
// the limit while passes run.
func testMaxAckPending(t *testing.T) {
	n := pick(3000, 10_000)
	r := newRig(t, false, nil, "SCAN_BUDGET=20000")
	var perEvent [][]string
	var canaries []string
	for i := range n {
		k := "cache:course_analytics:c" + strconv.Itoa(i)
		perEvent = append(perEvent, []string{k, k + ":a"})
		if i%10 == 0 {
			canaries = append(canaries, k+"x", k+"0x")
		}
	}
	for _, ks := range perEvent {
		r.setKeys(ks)
	}
	r.setKeys(canaries)
	testserver.LoadKeys(r.t, r.rdb, "fill:", pick(5000, 20_000), 1)
	// A worker starts and stops, so the stream and the consumer exist; the
	// backlog is published while no worker runs.
	if code := r.startWorker().Stop(t, 20*time.Second); code != 0 {
		t.Fatalf("first worker: exit code %d", code)
	}
	for i := range n {
		if _, err := r.publish("events.course.updated", fmt.Sprintf("map-%d", i), map[string]any{"course_id": "c" + strconv.Itoa(i)}, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	lag := r.sampleLag()
	r.startWorker()
	faultEnd := time.Now()
	row := row{name: fmt.Sprintf("8. MaxAckPending full (%d backlog, limit 1000)", n), published: n}
	r.finish(&row, perEvent, canaries, faultEnd, lag, 120*time.Second)
	_, ackPending, _ := lag.peaks()
	row.note = fmt.Sprintf("pattern events, SCAN_BUDGET 20000/s; peak NumAckPending %d; recovery measured from worker start", ackPending)
	row.check(t)
}

// 9. A publisher retrying with the same Nats-Msg-Id inside the stream's
// duplicate window (2s) and after it.
func testPublisherRetry(t *testing.T) {
	n := pick(50, 500)
	const window = 2 * time.Second
	r := newRig(t, false, nil)
	ctx := context.Background()
	if _, err := r.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{"events.>"}, Storage: jetstream.FileStorage, Replicas: 1, Duplicates: window,
	}); err != nil {
		t.Fatal(err)
	}
	b := newBatch("d", n)
	r.prepare(b)
	r.startWorker()
	lag := r.sampleLag()
	send := func(id string) *jetstream.PubAck {
		ack, err := r.publish("events.item.updated", "ev-"+id, map[string]any{"item_id": id}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	var dropped, stored int
	for _, id := range b.ids {
		send(id)
		if send(id).Duplicate {
			dropped++
		}
	}
	lastFirst := time.Now()
	if r.waitApplied(b.keys, 30*time.Second).IsZero() {
		t.Fatal("the first copies were not applied")
	}
	r.setKeys(b.keys) // the cache is filled again before the late retry
	time.Sleep(time.Until(lastFirst.Add(window + 500*time.Millisecond)))
	for _, id := range b.ids {
		if !send(id).Duplicate {
			stored++
		}
	}
	faultEnd := time.Now()
	row := row{name: "9. publisher retry, same Nats-Msg-Id", published: n}
	r.finish(&row, b.perEvent(), b.canaries(), faultEnd, lag, 30*time.Second)
	row.note = fmt.Sprintf("duplicate window 2s; retries inside it dropped by the stream: %d/%d; retries after it stored and applied again: %d/%d (counted as duplicates)", dropped, n, stored, n)
	row.duplicates += stored
	row.check(t)
	if dropped != n {
		t.Errorf("%d of %d retries inside the window were stored again", n-dropped, n)
	}
}

// 10. Hostile ids against canary keys: nothing outside an accepted value's
// own keys may go, and rejected values are dead-lettered as rejected.
func testGlobCorpus(t *testing.T) {
	corpus := []string{"*", "?", "[a-z]", "[4]2", `\`, `4\2`, "1*", "42*", "4?", "42:*", "", ":", "::",
		strings.Repeat("x", 10*1024), "４２", "42\u200b", "4\u00002", "42 ", " 42", "\u0034\u0332\u0032", "ⅳ2", "*:*", "]", "[", "^", "42\n"}
	r := newRig(t, false, nil)
	canaries := []string{"cache:course_analytics:420", "cache:course_analytics:4", "cache:course_analytics:42x",
		"cache:course_analytics:42", "cache:course_analytics:42:sub", "cache:course_analytics:1", "cache:course_analytics:10",
		"cache:course_analytics:a", "cache:course_analytics:z", "cache:course_analytics:x", "cache:course_analytics:41",
		"cache:course_analytics:4:2", "cache:other:42", "cache:course_analytics", "cache:course_analytic:42"}
	var literal []string
	for _, v := range corpus {
		literal = append(literal, "cache:course_analytics:"+v)
	}
	r.setKeys(canaries)
	r.setKeys(literal)
	r.startWorker()
	lag := r.sampleLag()
	for i, v := range corpus {
		if _, err := r.publish("events.course.updated", fmt.Sprintf("glob-%d", i), map[string]any{"course_id": v}, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every corpus event settled", 30*time.Second, r.drained)
	kinds, letters := r.deadLetters()
	row := row{name: "10. glob-injection corpus", published: len(corpus), dead: kinds}
	var accepted [][]string
	var rejectedKept []string
	for i := range corpus {
		id := fmt.Sprintf("glob-%d", i)
		switch kind, ok := letters[id]; {
		case !ok:
			accepted = append(accepted, []string{literal[i]})
		case kind == "rejected":
			row.expectedDead++
			rejectedKept = append(rejectedKept, literal[i])
		}
	}
	r.finish(&row, accepted, append(canaries, rejectedKept...), time.Time{}, lag, 10*time.Second)
	row.published = len(corpus)
	row.applied = len(accepted) - row.lost
	row.note = fmt.Sprintf("%d hostile ids (incl. empty, 10 KB, confusables); %d accepted as literal ids and applied, %d rejected; %d canaries", len(corpus), len(accepted), row.expectedDead, len(canaries))
	row.check(t)
}

// 11. Start, wait for ready, one event, SIGTERM: exit 0 each time and no
// process left behind.
func testStartStop(t *testing.T) {
	rounds, runs := pick(2, 10), pick(5, 50)
	r := newRig(t, false, nil)
	lag := r.sampleLag()
	var slowestReady, slowestStop time.Duration
	var keys [][]string
	for round := range rounds {
		for run := range runs {
			id := fmt.Sprintf("ss%d-%d", round, run)
			r.setKeys([]string{"item:" + id})
			keys = append(keys, []string{"item:" + id})
			began := time.Now()
			w := r.startWorker()
			slowestReady = max(slowestReady, time.Since(began))
			if _, err := r.publish("events.item.updated", "ev-"+id, map[string]any{"item_id": id}, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the event applied", 10*time.Second, func() bool { n, err := r.existing([]string{"item:" + id}); return err == nil && n == 0 })
			stopping := time.Now()
			if code := w.Stop(t, 20*time.Second); code != 0 {
				t.Fatalf("run %s: exit code %d, want 0", id, code)
			}
			slowestStop = max(slowestStop, time.Since(stopping))
		}
		if left := running(testproc.Binary(t)); len(left) > 0 {
			t.Fatalf("round %d: invalidator processes left running: %v", round, left)
		}
	}
	row := row{name: fmt.Sprintf("11. start/stop stress %d × %d", rounds, runs), published: rounds * runs}
	r.finish(&row, keys, nil, time.Time{}, lag, 10*time.Second)
	row.note = fmt.Sprintf("every run exit 0, no process left; slowest start→ready %s, slowest SIGTERM→exit %s; goleak on the test process",
		slowestReady.Round(time.Millisecond), slowestStop.Round(time.Millisecond))
	row.check(t)
}

// running lists the pids of processes whose executable is bin.
func running(bin string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == bin {
			pids = append(pids, pid)
		}
	}
	return pids
}
