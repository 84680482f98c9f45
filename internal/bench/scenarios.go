package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

const perCourse = 20

// benchRules is the rule of the measurement: 20 keys per course.
const benchRules = `rules:
  - on: events.course.*
    invalidate: ["cache:course_analytics:{course_id}:*"]
  - on: events.user.*
    invalidate: ["user:{user_id}"]
`

func rules() *cachekeys.Rules {
	r, err := cachekeys.Parse("bench.yaml", []byte(benchRules))
	if err != nil {
		panic(err)
	}
	return r
}

// lags collects the lag (stream publication → outcome) of applied events.
type lags struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *lags) EventDone(r worker.Report) {
	if r.Outcome == worker.Applied {
		l.mu.Lock()
		l.d = append(l.d, r.Lag)
		l.mu.Unlock()
	}
}
func (l *lags) RedisUp(bool) {}

func (l *lags) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return quantile(l.d, q)
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

// startWorker runs a worker with the default configuration until stop is called.
func startWorker(e *env, eng engine.Engine, obs worker.Observer) (w *worker.Worker, stop func(), err error) {
	return startWorkerConfig(e, worker.Config{}, eng, obs)
}

// startWorkerConfig is startWorker with cfg.
func startWorkerConfig(e *env, cfg worker.Config, eng engine.Engine, obs worker.Observer) (w *worker.Worker, stop func(), err error) {
	w, err = worker.New(cfg, worker.Deps{JetStream: e.js, Redis: e.rdb, Rules: rules(), Engine: eng, Observer: obs})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-w.Started():
	case err := <-done:
		cancel()
		return nil, nil, fmt.Errorf("worker: %v", err)
	}
	return w, func() { cancel(); <-done }, nil
}

// waitApplied waits until w has applied n events, at most limit.
func waitApplied(w *worker.Worker, n int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for w.Stats().Applied < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d events applied after %s", w.Stats().Applied, n, limit)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// drain runs a fresh worker over the backlog of n events and times it.
func drain(e *env, eng engine.Engine, n int) (time.Duration, error) {
	w, stop, err := startWorker(e, eng, nil)
	if err != nil {
		return 0, err
	}
	defer stop()
	start := time.Now() // from the consumer's first fetch: set-up is not throughput
	if err := waitApplied(w, int64(n), 2*time.Hour); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// checkCourses verifies that the keys of courses [0, n) are gone and that
// every neighbour key is still there.
func (e *env) checkCourses(ctx context.Context, n, total int) error {
	for c := range n {
		if k, err := e.rdb.Exists(ctx, courseKey(c, 0), courseKey(c, perCourse-1)).Result(); err != nil || k != 0 {
			return fmt.Errorf("course %d: keys left (%d, %v)", c, k, err)
		}
	}
	for c := range total {
		if k, err := e.rdb.Exists(ctx, neighbourKey(c)).Result(); err != nil || k != 1 {
			return fmt.Errorf("neighbour %s was removed", neighbourKey(c))
		}
	}
	return nil
}

func patternScenario(ctx context.Context, e *env, o options, rep *report) error {
	courses := o.patternEvts
	if err := e.populate(ctx, o.keys, courses, perCourse); err != nil {
		return err
	}
	pass, passCalls, err := e.scanPass(ctx)
	if err != nil {
		return err
	}
	rep.pass = pass
	log.Printf("one SCAN COUNT 1000 pass: %v, %d calls", pass, passCalls)
	rep.add(row{group: "patterns", name: "one SCAN COUNT 1000 pass (the baseline, fastest of 3)", value: pass, calls: passCalls, ratio: 1})

	// The worker with shared sweeps, over a backlog.
	e.resetNATS(ctx)
	if err := e.publishCourses(ctx, 0, courses); err != nil {
		return err
	}
	_ = e.resetStats(ctx)
	examined := &examinedCounter{}
	shared, closeShared, err := sharedEngineObserved(e.rdb, 0, examined)
	if err != nil {
		return err
	}
	d, err := drain(e, shared, courses)
	closeShared()
	if err != nil {
		return err
	}
	calls, _ := e.scanCalls(ctx)
	if err := e.checkCourses(ctx, courses, courses); err != nil {
		return err
	}
	size, err := e.rdb.DBSize(ctx).Result()
	if err != nil {
		return err
	}
	// The walk adapts COUNT to its round trips (aiming at 1.5 ms), so on a
	// loaded machine a pass takes more, smaller SCAN calls: the keys
	// examined are the Redis work in passes. The issue sets its targets per
	// row: the 200-event backlog on 1M keys is judged on time and SCAN
	// calls; the 1,000-event backlog on 10M keys on time (≤ 2 passes), and
	// here also on keys examined (≤ 2 × DBSIZE). Its calls are reported, not
	// judged: at 10M keys one SCAN COUNT 1000 takes about as long as the
	// 2 ms a call may hold Redis, so the walk must use a smaller COUNT.
	examinedX := float64(examined.n.Load()) / float64(max(size, 1))
	log.Printf("worker, shared sweeps: %d events in %v, %d SCAN calls, %d keys examined", courses, d, calls, examined.n.Load())
	r := row{group: "patterns", name: fmt.Sprintf("worker (shared sweeps): backlog of %d pattern events (keys examined: %.2f × DBSIZE)", courses, examinedX),
		value: d, calls: calls, ratio: ratio(d, pass), callsRatio: float64(calls) / float64(passCalls), target: "≤ 2 passes, ≤ 2 passes' calls",
		ok: d <= 2*pass && calls <= 2*passCalls}
	if o.keys > 1_000_000 {
		r.target, r.ok = "≤ 2 passes, keys examined ≤ 2 × DBSIZE", d <= 2*pass && examinedX <= 2
	}
	rep.add(r)

	// One pass per event: measured on fewer events, reported per event.
	m := min(o.perEventEvts, courses)
	if err := e.addCourses(ctx, 0, m, perCourse); err != nil {
		return err
	}
	e.resetNATS(ctx)
	if err := e.publishCourses(ctx, 0, m); err != nil {
		return err
	}
	_ = e.resetStats(ctx)
	d, err = drain(e, perEventEngine(e.rdb), m)
	if err != nil {
		return err
	}
	calls, _ = e.scanCalls(ctx)
	per := d / time.Duration(m)
	log.Printf("one pass per event: %d events in %v (%v each), %d SCAN calls", m, d, per, calls)
	rep.add(row{group: "patterns", name: fmt.Sprintf("one pass per event (measured on %d events), for %d events", m, courses),
		value: per * time.Duration(courses), calls: calls * courses / m, ratio: ratio(per*time.Duration(courses), pass),
		callsRatio: float64(calls*courses/m) / float64(passCalls), note: "extrapolated"})

	// redis-cli one-liner and the blocking Lua loop, per pattern.
	const tries = 3
	if err := e.addCourses(ctx, 0, tries, perCourse); err != nil {
		return err
	}
	var cli time.Duration
	for c := range tries {
		pat := "cache:course_analytics:" + strconv.Itoa(c) + ":*"
		start := time.Now()
		sh := fmt.Sprintf("redis-cli -h 127.0.0.1 -p %s --scan --pattern %q | xargs -r redis-cli -h 127.0.0.1 -p %s unlink >/dev/null",
			port(e), pat, port(e))
		if out, err := exec.CommandContext(ctx, "sh", "-c", sh).CombinedOutput(); err != nil {
			return fmt.Errorf("redis-cli: %v: %s", err, out)
		}
		cli += time.Since(start)
	}
	if err := e.checkCourses(ctx, tries, courses); err != nil {
		return fmt.Errorf("redis-cli one-liner: %w", err)
	}
	cli /= tries
	rep.add(row{group: "patterns", name: fmt.Sprintf("redis-cli --scan | xargs unlink, for %d events", courses),
		value: cli * time.Duration(courses), ratio: ratio(cli*time.Duration(courses), pass), note: fmt.Sprintf("%v per pattern", cli.Round(time.Millisecond))})

	if err := e.addCourses(ctx, 0, tries, perCourse); err != nil {
		return err
	}
	var lua time.Duration
	for c := range tries {
		start := time.Now()
		if err := luaPurge.Run(ctx, e.rdb, nil, "cache:course_analytics:"+strconv.Itoa(c)+":*").Err(); err != nil {
			return fmt.Errorf("lua: %w", err)
		}
		lua += time.Since(start)
	}
	if err := e.checkCourses(ctx, tries, courses); err != nil {
		return fmt.Errorf("lua loop: %w", err)
	}
	lua /= tries
	rep.add(row{group: "patterns", name: fmt.Sprintf("server-side Lua SCAN+UNLINK loop (blocks Redis), for %d events", courses),
		value: lua * time.Duration(courses), ratio: ratio(lua*time.Duration(courses), pass), note: fmt.Sprintf("%v per pattern, Redis blocked throughout", lua.Round(time.Millisecond))})
	return nil
}

// luaPurge is the blocking floor: one script walks the keyspace and
// unlinks every match, holding Redis for the whole walk.
var luaPurge = redis.NewScript(`
local cursor = "0"
repeat
  local r = redis.call("SCAN", cursor, "MATCH", ARGV[1], "COUNT", 1000)
  cursor = r[1]
  if #r[2] > 0 then redis.call("UNLINK", unpack(r[2])) end
until cursor == "0"
return 0`)

func port(e *env) string {
	_, p, _ := strings.Cut(e.redis.Addr(), ":")
	return p
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// exactScenario compares exact-key events through the worker with the bare
// fetch → UNLINK → ack loop, from a backlog and while publishing.
func exactScenario(ctx context.Context, e *env, o options, rep *report) error {
	n := o.exactEvts
	// consume is called once the stream is ready; it calls started (once
	// its consumer is set up) and returns when n events are applied.
	var end time.Time
	measure := func(live bool, consume func(n int, started func()) error) (float64, error) {
		if err := e.freshUsers(ctx, n); err != nil {
			return 0, err
		}
		var start time.Time
		end = time.Time{}
		if live {
			errc := make(chan error, 1)
			if err := consume(n, func() {
				start = time.Now()
				go func() { errc <- publishUsers(e, n) }()
			}); err != nil {
				return 0, err
			}
			if err := <-errc; err != nil {
				return 0, err
			}
		} else {
			if err := publishUsers(e, n); err != nil {
				return 0, err
			}
			if err := consume(n, func() { start = time.Now() }); err != nil {
				return 0, err
			}
		}
		if end.IsZero() {
			end = time.Now()
		}
		rate := float64(n) / end.Sub(start).Seconds()
		if left, _ := e.countKeys(ctx, "user:*"); left != 0 {
			return 0, fmt.Errorf("%d user keys left", left)
		}
		return rate, nil
	}
	for _, live := range []bool{false, true} {
		mode := "backlog"
		target := 0.8
		if live {
			mode, target = "while publishing", 0.9
		}
		// Rounds of floor then worker: the ratio judged is the median of
		// each round's worker/floor, two runs a second or two apart, so
		// that a moment of load on a shared machine weighs on one round
		// only and a slow minute weighs on both sides of a round alike.
		var floors, gots, ratios []float64
		for range o.exactRounds {
			floor, err := measure(live, func(n int, started func()) error { return bare(ctx, e, n, started) })
			if err != nil {
				return fmt.Errorf("bare floor: %w", err)
			}
			shared, closeShared, err := sharedEngine(e.rdb, 0)
			if err != nil {
				return err
			}
			got, err := measure(live, func(n int, started func()) error {
				w, stop, err := startWorker(e, shared, nil)
				if err != nil {
					return err
				}
				defer stop()
				started()
				err = waitApplied(w, int64(n), 10*time.Minute)
				end = time.Now() // before stop: shutdown is not throughput
				return err
			})
			closeShared()
			if err != nil {
				return fmt.Errorf("worker: %w", err)
			}
			floors, gots, ratios = append(floors, floor), append(gots, got), append(ratios, got/floor)
		}
		log.Printf("exact keys, %s: worker %.0f/s, bare floor %.0f/s, ratios %.2f", mode, gots, floors, ratios)
		slices.Sort(floors)
		slices.Sort(gots)
		slices.Sort(ratios)
		mid := len(floors) / 2
		floor, got, r := floors[mid], gots[mid], ratios[mid]
		rounds := fmt.Sprintf("%d rounds", len(floors))
		rep.add(row{group: "exact", name: "bare fetch → UNLINK → ack loop, " + mode + " (median of " + rounds + ")", rate: floor, ratio: 1})
		rep.add(row{group: "exact", name: fmt.Sprintf("worker, %s (median of %s; ratio: the median of the rounds' ratios, %.2f–%.2f)", mode, rounds, ratios[0], ratios[len(ratios)-1]), rate: got, ratio: r,
			target: fmt.Sprintf("≥ %.1f× the floor", target), ok: r >= target})
	}
	return nil
}

// freshUsers empties Redis and the event stream, then writes the keys
// user:0 … user:n-1 that n exact-key events (publishUsers) name.
func (e *env) freshUsers(ctx context.Context, n int) error {
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		return err
	}
	if err := e.rdb.Do(ctx, "DEBUG", "POPULATE", n, "user").Err(); err != nil {
		return err
	}
	e.resetNATS(ctx)
	return e.ensureStream(ctx)
}

// publishUsers publishes n exact-key events, user 0 … n-1, asynchronously.
func publishUsers(e *env, n int) error {
	for i := range n {
		id := strconv.Itoa(i)
		m := nats.NewMsg("events.user.updated")
		m.Data = []byte(`{"user_id": "` + id + `"}`)
		m.Header.Set("Bench-Id", id)
		if _, err := e.js.PublishMsgAsync(m); err != nil {
			return err
		}
		if i%5000 == 4999 {
			<-e.js.PublishAsyncComplete()
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
		return nil
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("publishing %d events took over 5 minutes", n)
	}
}

// bare is the floor: fetch, one pipelined UNLINK per batch, ack.
func bare(ctx context.Context, e *env, n int, started func()) error {
	c, err := e.js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 10000})
	if err != nil {
		return err
	}
	started()
	for got := 0; got < n; {
		batch, err := c.Fetch(min(n-got, 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		pipe := e.rdb.Pipeline()
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
			pipe.Unlink(ctx, "user:"+m.Headers().Get("Bench-Id"))
		}
		if len(msgs) == 0 {
			return fmt.Errorf("bare consumer fetched nothing after %d of %d", got, n)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		for _, m := range msgs {
			_ = m.Ack()
		}
		got += len(msgs)
	}
	return nil
}

// steadyScenario publishes pattern events at a steady rate and reports the
// lag from publication to keys gone.
func steadyScenario(ctx context.Context, e *env, o options, rep *report) error {
	total := o.steadyRate * int(o.steadyFor/time.Second)
	if err := e.populate(ctx, o.keys, total, perCourse); err != nil {
		return err
	}
	if rep.pass == 0 {
		if rep.pass, _, _ = e.scanPass(ctx); rep.pass == 0 {
			return fmt.Errorf("no pass time")
		}
	}
	e.resetNATS(ctx)
	if err := e.ensureStream(ctx); err != nil {
		return err
	}
	shared, closeShared, err := sharedEngine(e.rdb, 0)
	if err != nil {
		return err
	}
	defer closeShared()
	obs := &lags{}
	w, stop, err := startWorker(e, shared, obs)
	if err != nil {
		return err
	}
	defer stop()
	t := time.NewTicker(time.Second / time.Duration(o.steadyRate))
	for c := range total {
		<-t.C
		m := nats.NewMsg("events.course.updated")
		m.Data = []byte(`{"course_id": "` + strconv.Itoa(c) + `"}`)
		if _, err := e.js.PublishMsgAsync(m); err != nil {
			return err
		}
	}
	t.Stop()
	<-e.js.PublishAsyncComplete()
	if err := waitApplied(w, int64(total), 10*time.Minute); err != nil {
		return err
	}
	if err := e.checkCourses(ctx, total, total); err != nil {
		return err
	}
	p50, p99 := obs.quantile(0.5), obs.quantile(0.99)
	log.Printf("steady %d/s: lag p50 %v, p99 %v (pass %v)", o.steadyRate, p50, p99, rep.pass)
	rep.add(row{group: "steady", name: fmt.Sprintf("%d pattern events/s for %s: publish → keys gone, p50", o.steadyRate, o.steadyFor), value: p50, ratio: ratio(p50, rep.pass)})
	rep.add(row{group: "steady", name: fmt.Sprintf("%d pattern events/s for %s: publish → keys gone, p99", o.steadyRate, o.steadyFor), value: p99, ratio: ratio(p99, rep.pass),
		target: "≤ 2 passes", ok: p99 <= 2*rep.pass})
	return nil
}

// latencyScenario measures a concurrent GET client's latency with no sweep,
// during an unpaced sweep and during a sweep paced by a budget.
func latencyScenario(ctx context.Context, e *env, o options, rep *report) error {
	if err := e.populate(ctx, o.keys, 0, 0); err != nil {
		return err
	}
	if err := e.rdb.Set(ctx, "hot", "value", 0).Err(); err != nil {
		return err
	}
	// The sweeps run in the real binary, a process of its own (as the
	// worker runs beside the application), not in this one: sharing this
	// process's Go scheduler with the GET loop would time the scheduler too.
	bin, err := buildBinary(ctx, e)
	if err != nil {
		return err
	}
	getter := redis.NewClient(&redis.Options{Addr: e.redis.Addr(), PoolSize: 1})
	defer getter.Close()
	sample := func(during func() error) (p50, p99 time.Duration, err error) {
		var (
			d    []time.Duration
			stop = make(chan struct{})
			wg   sync.WaitGroup
		)
		wg.Go(func() {
			getLoop(stop, func() { d = append(d, timeGet(ctx, getter)) })
		})
		err = during()
		close(stop)
		wg.Wait()
		return quantile(d, 0.5), quantile(d, 0.99), err
	}
	b50, b99, _ := sample(func() error { time.Sleep(3 * time.Second); return nil })
	var unpaced time.Duration
	u50, u99, err := sample(func() error {
		start := time.Now()
		err := purgeOnce(ctx, e, bin, 0, "nomatch:*")
		unpaced = time.Since(start)
		return err
	})
	if err != nil {
		return err
	}
	budget := o.budget
	if budget == 0 {
		budget = max(int(float64(o.keys)/unpaced.Seconds()/10), 1000)
	}
	il, err := interleaved(ctx, e, bin, budget, getter)
	if err != nil {
		return err
	}
	log.Printf("GET p50/p99: none %v/%v, unpaced %v/%v (%v); budget %d/s: stopped %v/%v, running %v/%v (sweep %v)",
		b50, b99, u50, u99, unpaced, budget, il.off50, il.off99, il.on50, il.on99, il.took)
	rep.add(row{group: "latency", name: fmt.Sprintf("GET p99, no sweep, 3 s before the sweeps (p50 %v)", b50.Round(time.Microsecond)), value: b99, ratio: 1})
	rep.add(row{group: "latency", name: fmt.Sprintf("GET p99 during a sweep, no budget (p50 %v; sweep %v)", u50.Round(time.Microsecond), unpaced.Round(time.Millisecond)), value: u99, ratio: ratio(u99, b99)})
	rep.add(row{group: "latency", name: fmt.Sprintf("GET p99, no sweep: the budgeted sweep's process stopped (SIGSTOP) in every other %v window, %d windows (p50 %v)", latencyWindow, il.windows, il.off50.Round(time.Microsecond)), value: il.off99, ratio: 1})
	rep.add(row{group: "latency", name: fmt.Sprintf("GET p99 during a sweep, SCAN_BUDGET=%d, in the windows between (p50 %v; sweep %v, %v of it stopped)", budget, il.on50.Round(time.Microsecond), il.took.Round(time.Millisecond), il.stopped.Round(time.Millisecond)), value: il.on99, ratio: ratio(il.on99, il.off99),
		target: "≤ 2× no sweep", ok: il.on99 <= 2*il.off99})
	return nil
}

// getLoop calls get every 200 µs until stop is closed, at most 10M times.
func getLoop(stop <-chan struct{}, get func()) {
	for range 10_000_000 {
		select {
		case <-stop:
			return
		default:
		}
		get()
		time.Sleep(200 * time.Microsecond)
	}
}

// timeGet returns how long one GET of the key "hot" took.
func timeGet(ctx context.Context, getter *redis.Client) time.Duration {
	start := time.Now()
	_ = getter.Get(ctx, "hot").Err()
	return time.Since(start)
}

// latencyWindow is the length of each window of interleaved: the machine's
// noise changes more slowly than this, so both sides see the same noise.
const latencyWindow = 500 * time.Millisecond

// interleavedResult is what interleaved measured.
type interleavedResult struct {
	off50, off99, on50, on99 time.Duration
	windows                  int
	took, stopped            time.Duration
}

// interleaved runs a budgeted purge and measures a GET client's latency in
// alternate windows: the purge running, then its process stopped with
// SIGSTOP (the first 10 ms after the stop are not counted: a call sent
// before it may still be running on the server). Measured in turn over the
// same minute, both sides see the same machine; measured one after the
// other, a noisy 2-core machine gave ratios anywhere from 1.2× to 2.7× for
// the same code. It measures for at most 20 windows of each, then lets the
// purge finish.
func interleaved(ctx context.Context, e *env, bin string, budget int, getter *redis.Client) (interleavedResult, error) {
	var res interleavedResult
	cmd := exec.CommandContext(ctx, bin, "purge", "--json", "nomatch:*")
	cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+e.redis.Addr()+"/0", "SCAN_BUDGET="+strconv.Itoa(budget), "LOG_LEVEL=warn")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	const (
		skip = iota // not counted
		running
		stopped
	)
	var (
		phase   atomic.Int32
		on, off []time.Duration
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		getLoop(stop, func() {
			p := phase.Load()
			d := timeGet(ctx, getter)
			if p == phase.Load() { // a sample that straddles a switch is not counted
				switch p {
				case running:
					on = append(on, d)
				case stopped:
					off = append(off, d)
				}
			}
		})
	})
	var err error
	finished := false
	wait := func(d time.Duration) bool {
		select {
		case err = <-exited:
			finished = true
			return false
		case <-time.After(d):
			return true
		}
	}
	if wait(time.Second) { // the purge connects and starts its walk
	loop:
		for res.windows < 20 {
			phase.Store(running)
			if !wait(latencyWindow) {
				break loop
			}
			phase.Store(skip)
			if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				break loop
			}
			at := time.Now()
			time.Sleep(10 * time.Millisecond)
			phase.Store(stopped)
			time.Sleep(latencyWindow)
			phase.Store(skip)
			_ = cmd.Process.Signal(syscall.SIGCONT)
			res.stopped += time.Since(at)
			res.windows++
		}
	}
	phase.Store(skip)
	_ = cmd.Process.Signal(syscall.SIGCONT)
	close(stop)
	wg.Wait()
	if !finished {
		err = <-exited
	}
	res.took = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("purge: %v: %s", err, out.String())
	}
	if len(on) == 0 || len(off) == 0 {
		return res, fmt.Errorf("the budgeted purge ended before a window was measured (%d windows); lower -budget", res.windows)
	}
	res.on50, res.on99 = quantile(on, 0.5), quantile(on, 0.99)
	res.off50, res.off99 = quantile(off, 0.5), quantile(off, 0.99)
	return res, nil
}

// buildBinary builds ./cmd/invalidator into the run's directory.
func buildBinary(ctx context.Context, e *env) (string, error) {
	bin := filepath.Join(e.dir, "invalidator")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/invalidator").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build: %v: %s", err, out)
	}
	return bin, nil
}

// purgeOnce sweeps the keyspace once for pattern with the real binary
// (`invalidator purge`), in a process of its own as a worker runs beside
// the application, paced by budget (0: unlimited).
func purgeOnce(ctx context.Context, e *env, bin string, budget int, pattern string) error {
	cmd := exec.CommandContext(ctx, bin, "purge", "--json", pattern)
	cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+e.redis.Addr()+"/0", "SCAN_BUDGET="+strconv.Itoa(budget), "LOG_LEVEL=warn")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("purge: %v: %s", err, out)
	}
	return nil
}

// rssScenario runs the real binary over active patterns and reports its peak RSS.
func rssScenario(ctx context.Context, e *env, o options, rep *report) error {
	n := o.patterns10k
	if err := e.populate(ctx, o.keys, n, perCourse); err != nil {
		return err
	}
	e.resetNATS(ctx)
	if err := e.publishCourses(ctx, 0, n); err != nil {
		return err
	}
	bin, err := buildBinary(ctx, e)
	if err != nil {
		return err
	}
	rulesPath := filepath.Join(e.dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(benchRules), 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "run")
	cmd.Env = append(os.Environ(), "REDIS_URL=redis://"+e.redis.Addr()+"/0", "NATS_URL="+e.ns.ClientURL(),
		"INVALIDATOR_RULES="+rulesPath, "HTTP_ADDR=", "LOG_LEVEL=warn", "LOG_FORMAT=json")
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	start := time.Now()
	deadline := start.Add(2 * time.Hour)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		if left, err := e.rdb.Exists(ctx, courseKey(n-1, 0), courseKey(0, 0)).Result(); err == nil && left == 0 {
			if k, _ := e.countKeys(ctx, "cache:course_analytics:*:1"); k == 0 {
				break
			}
		}
	}
	hwm := vmHWM(cmd.Process.Pid)
	took := time.Since(start)
	log.Printf("binary: %d pattern events on %d keys in %v, peak RSS %d KiB", n, o.keys, took, hwm)
	rep.add(row{group: "rss", name: fmt.Sprintf("worker binary: peak RSS with %d active patterns on %d keys", n, o.keys),
		kib: hwm, value: took, ratio: ratio(took, max(rep.pass, 1)), target: "≤ 64 MiB", ok: hwm <= 64*1024,
		note: "value is the drain time"})
	return nil
}

func vmHWM(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return 0
}
