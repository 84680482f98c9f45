package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/invalidator/invalidator/cache"
	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/worker"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// The staleness benchmark measures what readers see, against a source of
// truth it owns: a PostgreSQL table of versioned items. Writers bump a
// row's version and commit, then cause the invalidation (publish: the
// service publishes an event; cdc: `invalidator cdc` does); readers read
// through cache.Fetch, whose loader reads the table. A read is stale at Δ
// if it returned a version older than the newest one committed more than Δ
// before the read began. Some scenarios warm the keys read, or break
// something mid-run (staleness_fault.go); after every run, each key read
// is checked against the source (staleness_check.go).

// stalenessRules maps item events to an exact key and the item's pattern
// scope; bulk and truncated have rules of their own for cdc.
const stalenessRules = `rules:
  - on: events.item.created
    invalidate: &item ["cache:item:{item_id}", "cache:item:{item_id}:*"]
  - on: events.item.updated
    invalidate: *item
  - on: events.item.deleted
    invalidate: *item
  - on: events.item.bulk
    invalidate: &items ["cache:item:*"]
  - on: events.item.truncated
    invalidate: *items
cdc:
  tables:
    public.items: {entity: item, columns: {id: item_id}}
`

// stalenessCase is one row of the table.
type stalenessCase struct {
	name        string
	mode        string // publish or cdc
	pattern     bool   // readers read cache:item:<id>:w<k> (invalidated by the pattern), else cache:item:<id>
	generations string // GENERATIONS of the worker
	warm        bool   // the rules warm cache:item:<id> from the benchmark's source endpoint
	fault       string // "", faultKill (the worker) or faultStall (Redis)
	faultFor    time.Duration
	// natsBinary runs the case on the nats-server binary on PATH (Debian's
	// 2.9, which users run) instead of the embedded server; its version is
	// added to the row's name.
	natsBinary bool
}

var stalenessCases = []stalenessCase{
	{name: "steady exact, publish", mode: "publish", generations: "on"},
	{name: "steady pattern, generations on, publish", mode: "publish", pattern: true, generations: "on"},
	{name: "steady pattern, generations off (sweep only), publish", mode: "publish", pattern: true, generations: "off"},
	{name: "steady exact, publish, nats-server on PATH", mode: "publish", generations: "on", natsBinary: true},
	{name: "steady pattern, generations on, publish, nats-server on PATH", mode: "publish", pattern: true, generations: "on", natsBinary: true},
	{name: "steady exact, cdc", mode: "cdc", generations: "on"},
	{name: "steady pattern, generations on, cdc", mode: "cdc", pattern: true, generations: "on"},
	{name: "warming on, publish", mode: "publish", generations: "on", warm: true},
	{name: "warming on, cdc", mode: "cdc", generations: "on", warm: true},
	{name: "worker SIGKILLed 1 s, publish", mode: "publish", generations: "on", fault: faultKill, faultFor: time.Second},
	{name: "worker SIGKILLed 1 s, cdc", mode: "cdc", generations: "on", fault: faultKill, faultFor: time.Second},
	{name: "Redis SIGSTOPped 2 s, publish", mode: "publish", generations: "on", fault: faultStall, faultFor: 2 * time.Second},
	{name: "Redis SIGSTOPped 2 s, cdc", mode: "cdc", generations: "on", fault: faultStall, faultFor: 2 * time.Second},
}

// selectCases returns the cases whose name holds sub (all when sub is
// empty), or an error naming every case when none does.
func selectCases(sub string) ([]stalenessCase, error) {
	var out []stalenessCase
	names := make([]string, len(stalenessCases))
	for i, c := range stalenessCases {
		names[i] = strconv.Quote(c.name)
		if strings.Contains(c.name, sub) {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no staleness case holds %q; the cases: %s", sub, strings.Join(names, ", "))
	}
	return out, nil
}

// read is one read's record.
type read struct {
	id      int
	version int64
	at      time.Time
}

// commit is one write's record.
type commit struct {
	version int64
	at      time.Time
}

func stalenessScenario(ctx context.Context, e *env, o options, rep *report) error {
	cases, err := selectCases(o.stalenessCase)
	if err != nil {
		return err
	}
	pg, err := servers.StartPostgres(ctx, servers.PostgresOptions{})
	if err != nil {
		return err
	}
	defer pg.Close()
	bin, err := buildBinary(ctx, e)
	if err != nil {
		return err
	}
	var nb *servers.NATSBinary
	for _, c := range cases {
		if (c.natsBinary || o.stalenessNATSBinary) && nb == nil {
			if nb, err = servers.StartNATSBinary(ctx, filepath.Join(e.dir, "nats-bin")); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			defer nb.Stop()
		}
	}
	rep.stalenessAckWait = o.stalenessAckWait
	for i, c := range cases {
		natsURL := e.ns.ClientURL()
		if c.natsBinary || o.stalenessNATSBinary {
			natsURL = nb.URL()
		}
		if c.natsBinary {
			c.name += " " + nb.Version()
		}
		log.Printf("staleness: %s", c.name)
		r := stalenessRig{e: e, o: o, pg: pg, bin: bin, natsURL: natsURL, c: c, db: fmt.Sprintf("staleness%d", i)}
		if err := r.run(ctx, rep); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

// stalenessRig is one scenario's servers, processes and clients.
type stalenessRig struct {
	e       *env
	o       options
	pg      *servers.Postgres
	bin     string
	natsURL string
	c       stalenessCase
	db      string

	pool   *pgxpool.Pool
	js     jetstream.JetStream
	worker *process
}

func (r *stalenessRig) run(ctx context.Context, rep *report) error {
	var err error
	if r.pool, err = itemsDatabase(ctx, r.pg, r.db, r.o.stalenessItems); err != nil {
		return err
	}
	defer r.pool.Close()
	nc, err := r.prepare(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	stop, err := r.startProcesses(ctx)
	defer stop()
	if err != nil {
		return err
	}
	if err := waitConsumer(ctx, r.js, r.c.mode == "cdc", r.pool, r.db); err != nil {
		return err
	}
	rdb := readerClient(r.e.redis.Addr())
	defer rdb.Close()
	cc, err := newStalenessCache(rdb)
	if err != nil {
		return err
	}
	defer cc.Close()
	res := &stalenessResult{commits: map[int][]commit{}}
	acks := observeAcks(ctx, r.js, res, r.c.mode == "cdc")
	defer acks()
	fault, err := r.load(ctx, cc, res)
	if err != nil {
		return err
	}
	fin, err := r.finalCheck(ctx, cc, res)
	if err != nil {
		return err
	}
	res.report(rep, r.c, fault, fin)
	return nil
}

// prepare empties Redis and the streams, and fills Redis with 200k
// unrelated keys, so that a sweep has a keyspace to walk.
func (r *stalenessRig) prepare(ctx context.Context) (*nats.Conn, error) {
	if err := r.e.rdb.FlushAll(ctx).Err(); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(r.natsURL)
	if err != nil {
		return nil, err
	}
	if r.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, err
	}
	for _, s := range []string{"EVENTS", "EVENTS_DLQ"} {
		_ = r.js.DeleteStream(ctx, s)
	}
	if err := r.e.rdb.Do(ctx, "DEBUG", "POPULATE", 200000, "other").Err(); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

// startProcesses writes the rules (with a warm target served by the
// benchmark when the case warms) and starts the worker, and cdc in cdc
// mode. stop ends what was started, also on error.
func (r *stalenessRig) startProcesses(ctx context.Context) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range slices.Backward(stops) {
			s()
		}
	}
	rules := stalenessRules
	if r.c.warm {
		src, err := startWarmSource(r.pool)
		if err != nil {
			return stop, err
		}
		stops = append(stops, src.stop)
		rules = warmRules(src.url)
	}
	rulesPath := filepath.Join(r.e.dir, r.db+"-rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rules), 0o644); err != nil {
		return stop, err
	}
	env := append(os.Environ(), "REDIS_URL=redis://"+r.e.redis.Addr()+"/0", "NATS_URL="+r.natsURL, "INVALIDATOR_RULES="+rulesPath,
		"HTTP_ADDR=", "LOG_LEVEL="+r.o.stalenessWorkerLog, "LOG_FORMAT=json", "GENERATIONS="+r.c.generations, "ACK_WAIT="+r.o.stalenessAckWait.String())
	r.worker = &process{bin: r.bin, args: []string{"run"}, env: env}
	if err := r.worker.start(ctx); err != nil {
		return stop, err
	}
	stops = append(stops, r.worker.kill)
	if r.c.mode == "cdc" {
		cdc := &process{bin: r.bin, args: []string{"cdc"}, env: append(env, "CDC_DATABASE_URL="+r.pg.URL(r.db), "CDC_SLOT="+r.db)}
		if err := cdc.start(ctx); err != nil {
			return stop, err
		}
		stops = append(stops, cdc.kill)
	}
	return stop, nil
}

// load runs the readers and writers for the case's length, and the fault
// meanwhile: a fault case runs on until ACK_WAIT has passed after the
// fault's end, so that a read as stale as the target allows can be seen.
func (r *stalenessRig) load(ctx context.Context, cc *cache.Cache, res *stalenessResult) (faultResult, error) {
	runFor, faultAt := r.o.stalenessFor, r.o.stalenessFor/3
	if r.c.fault != "" {
		runFor = max(runFor, faultAt+r.c.faultFor+r.o.stalenessAckWait+3*time.Second)
	}
	rctx, stop := context.WithTimeout(ctx, runFor)
	defer stop()
	var pub *events.Publisher
	if r.c.mode == "publish" {
		var err error
		if pub, err = events.NewPublisher(r.js); err != nil {
			return faultResult{}, err
		}
	}
	var wg sync.WaitGroup
	for i := range r.o.stalenessReaders {
		wg.Go(func() { readLoop(rctx, cc, r.pool, res, r.c, r.o.stalenessItems, uint64(i)) })
	}
	const writers = 4
	for w := range writers {
		wg.Go(func() {
			writeLoop(rctx, r.pool, pub, res, r.o.stalenessItems, r.o.stalenessRate/writers, uint64(100+w))
		})
	}
	var fault faultResult
	var ferr error
	if r.c.fault != "" {
		wg.Go(func() { fault, ferr = r.inject(ctx, rctx, faultAt) })
	}
	wg.Wait()
	return fault, ferr
}

// readerClient is the readers' Redis client, with the timeouts of a
// service that would rather read the source than wait: 1 s, no retry.
// A read during a Redis stall then fails over to the source, and counts
// as failed, neither stale nor fresh.
func readerClient(addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64, DialTimeout: readerTimeout,
		ReadTimeout: readerTimeout, WriteTimeout: readerTimeout, MaxRetries: -1})
	rdb.AddHook(failHook{})
	return rdb
}

// readerTimeout bounds each Redis command of a reader.
const readerTimeout = time.Second

func newStalenessCache(rdb *redis.Client) (*cache.Cache, error) {
	return cache.New(rdb, cache.WithLogger(slog.New(slog.DiscardHandler)))
}

// itemsDatabase makes a database with rows versioned items.
func itemsDatabase(ctx context.Context, pg *servers.Postgres, name string, rows int) (*pgxpool.Pool, error) {
	admin, err := pgxpool.New(ctx, pg.URL("postgres"))
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, pg.URL(name)+"&pool_max_conns=32")
	if err != nil {
		return nil, err
	}
	for _, sql := range []string{"CREATE TABLE items (id int PRIMARY KEY, version bigint NOT NULL DEFAULT 1)",
		fmt.Sprintf("INSERT INTO items (id) SELECT g FROM generate_series(0, %d) g", rows-1)} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return pool, nil
}

// waitConsumer waits until the worker's consumer exists, and in cdc mode
// until the slot streams.
func waitConsumer(ctx context.Context, js jetstream.JetStream, cdc bool, pool *pgxpool.Pool, slot string) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		_, err := js.Consumer(ctx, "EVENTS", "invalidator")
		ready := err == nil
		if ready && cdc {
			var active bool
			ready = pool.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active) == nil && active
		}
		if ready {
			return nil
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("the worker (or cdc) did not start within a minute")
}

// observeAcks times, in cdc mode, each event's delivery to an ordered
// consumer: the writer cannot see cdc's PubAck, and delivery follows it
// within a millisecond or so.
func observeAcks(ctx context.Context, js jetstream.JetStream, res *stalenessResult, cdc bool) func() {
	if !cdc {
		return func() {}
	}
	cons, err := js.OrderedConsumer(ctx, "EVENTS", jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return func() {}
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		at := time.Now()
		ev, err := events.Decode(m.Subject(), m.Headers().Get(events.HeaderMsgID), m.Data())
		if err != nil {
			return
		}
		id, _ := strconv.Atoi(fmt.Sprint(ev.Data["item_id"]))
		res.acked(id, ev.Time, at)
		res.eventID(id, ev.ID)
	})
	if err != nil {
		return func() {}
	}
	return cc.Stop
}

// zipf picks ids with a Zipf distribution (s=1.1) over n items.
func zipf(seed uint64, n int) func() int {
	z := rand.NewZipf(rand.New(rand.NewPCG(seed, seed*7+1)), 1.1, 1, uint64(n-1))
	return func() int { return int(z.Uint64()) }
}

func readLoop(ctx context.Context, c *cache.Cache, pool *pgxpool.Pool, res *stalenessResult, sc stalenessCase, items int, seed uint64) {
	next := zipf(seed, items)
	for i := 0; ctx.Err() == nil; i++ {
		id := next()
		key := "cache:item:" + strconv.Itoa(id)
		if sc.pattern {
			key += ":w" + strconv.Itoa(i%4)
		}
		start := time.Now()
		rctx, failed := withFailFlag(ctx)
		v, err := cache.Fetch(rctx, c, key, 10*time.Minute, func(ctx context.Context) (int64, error) {
			var v int64
			err := pool.QueryRow(ctx, "SELECT version FROM items WHERE id = $1", id).Scan(&v)
			return v, err
		})
		switch {
		case ctx.Err() != nil && (err != nil || failed.Load()): // cut off by the run's end
		case err != nil || failed.Load():
			res.failed() // an error, or Redis failed and the value came from the source
		default:
			res.read(read{id: id, version: v, at: start})
		}
	}
}

func writeLoop(ctx context.Context, pool *pgxpool.Pool, pub *events.Publisher, res *stalenessResult, items, rate int, seed uint64) {
	next := zipf(seed, items)
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		id := next()
		var v int64
		// Not cancelled with the run: a commit must not go unrecorded.
		if err := pool.QueryRow(context.WithoutCancel(ctx), "UPDATE items SET version = version + 1 WHERE id = $1 RETURNING version", id).Scan(&v); err != nil {
			continue
		}
		committed := time.Now()
		res.commit(id, v, committed)
		if pub != nil {
			ev := events.NewEvent("events.item.updated", map[string]any{"item_id": strconv.Itoa(id)})
			if _, err := pub.PublishEvent(context.WithoutCancel(ctx), ev); err == nil {
				res.acked(id, committed, time.Now())
			}
		}
	}
}

// stalenessResult collects reads and commits.
type stalenessResult struct {
	mu       sync.Mutex
	reads    []read
	failures int // reads that failed, or that Redis failed and the source served
	commits  map[int][]commit
	lags     []time.Duration
	events   map[int][]time.Time // PubAck (publish) or delivery to the observer (cdc), by item
	eventIDs map[int][]string    // the events' ids, by item (cdc)
}

func (r *stalenessResult) eventID(id int, evID string) {
	r.mu.Lock()
	if r.eventIDs == nil {
		r.eventIDs = map[int][]string{}
	}
	r.eventIDs[id] = append(r.eventIDs[id], evID)
	r.mu.Unlock()
}

func (r *stalenessResult) read(x read) { r.mu.Lock(); r.reads = append(r.reads, x); r.mu.Unlock() }

func (r *stalenessResult) failed() { r.mu.Lock(); r.failures++; r.mu.Unlock() }

func (r *stalenessResult) commit(id int, v int64, at time.Time) {
	r.mu.Lock()
	r.commits[id] = append(r.commits[id], commit{version: v, at: at})
	r.mu.Unlock()
}

// acked records commit → ack lag; in cdc mode committed is the event's
// time (the commit time on PostgreSQL's clock, the same machine).
func (r *stalenessResult) acked(id int, committed, at time.Time) {
	r.mu.Lock()
	r.lags = append(r.lags, at.Sub(committed))
	if r.events == nil {
		r.events = map[int][]time.Time{}
	}
	r.events[id] = append(r.events[id], at)
	r.mu.Unlock()
}

// impossible counts the reads that returned a version newer than any
// committed for their item: none should, and one would mean that a value
// was read under another item's key.
func (r *stalenessResult) impossible() int {
	n := 0
	for _, x := range r.reads {
		cs := r.commits[x.id]
		newest := int64(1) // the version rows start with
		if len(cs) > 0 {
			newest = cs[len(cs)-1].version
		}
		if x.version > newest {
			n++
		}
	}
	return n
}

// lockedHistory is history over the whole run, for a caller that does
// not hold the lock.
func (r *stalenessResult) lockedHistory(id int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.history(id, time.Time{}, time.Now())
}

// history is an item's last 8 commits and events between from and to, for
// a log line.
func (r *stalenessResult) history(id int, from, to time.Time) string {
	const last = 8
	in := func(t time.Time) bool { return !t.Before(from) && !t.After(to) }
	var cs, es []string
	for _, c := range r.commits[id] {
		if in(c.at) {
			cs = append(cs, fmt.Sprintf(" v%d committed %s;", c.version, c.at.Format("15:04:05.000")))
		}
	}
	for i, at := range r.events[id] {
		if in(at) {
			e := " event " + at.Format("15:04:05.000")
			if i < len(r.eventIDs[id]) {
				e += " " + r.eventIDs[id][i]
			}
			es = append(es, e+";")
		}
	}
	return strings.Join(cs[max(len(cs)-last, 0):], "") + strings.Join(es[max(len(es)-last, 0):], "")
}

// staleness is how long a read's value had been outdated when the read
// began: from the commit of the first newer version to the read's start;
// 0 when the read returned the newest committed version.
func (r *stalenessResult) staleness(x read) time.Duration {
	cs := r.commits[x.id]
	for _, c := range cs { // in commit order for one id: versions rise
		if c.version > x.version && !c.at.After(x.at) {
			return x.at.Sub(c.at)
		}
	}
	return 0
}

var deltas = []time.Duration{0, 10 * time.Millisecond, 100 * time.Millisecond, time.Second}

func (r *stalenessResult) report(rep *report, c stalenessCase, fault faultResult, fin finalCheck) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.commits {
		slices.SortFunc(r.commits[id], func(a, b commit) int { return int(a.version - b.version) })
	}
	st := make([]time.Duration, len(r.reads))
	worst := 0
	for i, x := range r.reads {
		st[i] = r.staleness(x)
		if st[i] > st[worst] {
			worst = i
		}
	}
	if n := r.impossible(); n > 0 {
		log.Printf("⚠️ staleness: %s: %d reads returned a version that was never committed for their item", c.name, n)
	}
	if len(r.reads) > 0 && st[worst] > 0 {
		w := r.reads[worst]
		log.Printf("staleness: %s: the stalest read: item %d, version %d, read at %s, %v after a newer commit;%s", c.name, w.id, w.version,
			w.at.Format("15:04:05.000"), roundDur(st[worst]), r.history(w.id, w.at.Add(-st[worst]-time.Second), w.at.Add(time.Second)))
	}
	slices.Sort(st)
	n := len(st)
	if n == 0 {
		log.Printf("staleness: %s: no reads", c.name)
		return
	}
	row := stalenessRow{name: c.name, reads: n, p50: q(st, 0.5), p99: q(st, 0.99), p999: q(st, 0.999), max: st[n-1],
		tv999: q(st, 0.999), tv9999: q(st, 0.9999), failures: r.failures, fault: fault, final: fin}
	for _, d := range deltas {
		stale := n - sortSearch(st, d)
		row.stale = append(row.stale, stale)
	}
	slices.Sort(r.lags)
	if len(r.lags) > 0 {
		row.lag50, row.lag99 = q(r.lags, 0.5), q(r.lags, 0.99)
	}
	rep.staleness = append(rep.staleness, row)
	log.Printf("staleness: %s: %d reads, %d failed; stale at 100ms %d; p99.99 %v; max %v; %d of %d keys inconsistent after the run",
		c.name, n, r.failures, row.stale[2], row.tv9999, row.max, fin.inconsistent, fin.present)
	if fault.kind != "" {
		log.Printf("staleness: %s: fault %v (out of service %v), max staleness %v, bound %v", c.name,
			roundDur(fault.length), roundDur(fault.down), roundDur(row.max), roundDur(fault.down+fault.ackWait))
	}
}

// sortSearch is the number of values ≤ d.
func sortSearch(sorted []time.Duration, d time.Duration) int {
	i, _ := slices.BinarySearchFunc(sorted, d, func(a, b time.Duration) int {
		if a <= b {
			return -1
		}
		return 1
	})
	return i
}

func q(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// stalenessRow is one scenario's figures.
type stalenessRow struct {
	name                string
	reads               int
	stale               []int // stale reads at each of deltas
	p50, p99, p999, max time.Duration
	tv999, tv9999       time.Duration
	lag50, lag99        time.Duration
	failures            int // reads that failed, counted neither stale nor fresh
	fault               faultResult
	final               finalCheck
}

// nines is −log10(stale/reads), or the bound the reads support when none
// was stale: at most log10(n/3).
func nines(stale, n int) string {
	if stale == 0 {
		return fmt.Sprintf("≥ %.1f", math.Log10(float64(n)/3))
	}
	return fmt.Sprintf("%.1f", -math.Log10(float64(stale)/float64(n)))
}

func (r *report) stalenessMarkdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Staleness: what readers saw\n\n")
	fmt.Fprintf(&b, "A read is stale at Δ if it returned a version older than the newest one committed more than Δ before the read began. "+
		"Staleness is how long the value read had been outdated; t-visibility(p) is the Δ at which a fraction p of reads is consistent. "+
		"Lag is commit → PubAck (publish) or commit → delivery of cdc's event to an observer (cdc). "+
		"Warming: the worker warms cache:item:<id> after each update from an endpoint of the benchmark that reads the source when asked; readers read those keys. "+
		"The fault scenarios read exact keys; a third of the way in, the worker is SIGKILLed and started again after 1 s, "+
		"or redis-server is SIGSTOPped for 2 s; readers and writers keep going, and the run goes on until ACK_WAIT has passed after the fault. "+
		"The worker's ACK_WAIT is %v%s. Readers' Redis commands time out after %v, with no retry: "+
		"a read whose Redis command failed (its value then came from the source) counts as failed, neither stale nor fresh.\n\n",
		r.stalenessAckWait, ackWaitNote(r.stalenessAckWait), readerTimeout)
	fmt.Fprintf(&b, "| scenario | reads | stale (nines) at Δ=0 | 10 ms | 100 ms | 1 s | staleness p50 / p99 / p99.9 / max | t-vis 99.9%% / 99.99%% | lag p50 / p99 |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.staleness {
		cells := make([]string, len(x.stale))
		for i, s := range x.stale {
			cells[i] = fmt.Sprintf("%.4f%% (%s)", 100*float64(s)/float64(x.reads), nines(s, x.reads))
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %v / %v / %v / %v | %v / %v | %v / %v |\n", x.name, x.reads, strings.Join(cells, " | "),
			roundDur(x.p50), roundDur(x.p99), roundDur(x.p999), roundDur(x.max), roundDur(x.tv999), roundDur(x.tv9999),
			roundDur(x.lag50), roundDur(x.lag99))
	}
	b.WriteString(r.faultMarkdown())
	return b.String()
}

// faultMarkdown is the second table: each fault, its bound, the failed
// reads and the sweep after the run.
func (r *report) faultMarkdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Faults, and every key after the run\n\n")
	fmt.Fprintf(&b, "Fault length: SIGKILL → the worker started again, or SIGSTOP → SIGCONT; out of service: SIGKILL → the restarted worker's first delivery "+
		"(for a stall, its length). Target: max staleness ≤ out of service + ACK_WAIT. "+
		"After the run (writers stopped, then every event acked: settle), every key readers read is read through the protocol (cache.Get) "+
		"and compared with the source; inconsistent: present with another version (target 0).\n\n")
	fmt.Fprintf(&b, "| scenario | fault length / out of service | max staleness | ≤ fault + ACK_WAIT | failed reads | settle | keys present / read | inconsistent |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.staleness {
		fault, bound := "—", "—"
		if x.fault.kind != "" {
			fault = fmt.Sprintf("%v / %v", roundDur(x.fault.length), roundDur(x.fault.down))
			limit := x.fault.down + x.fault.ackWait
			bound = fmt.Sprintf("❌ over %v", roundDur(limit))
			if x.max <= limit {
				bound = fmt.Sprintf("✅ ≤ %v", roundDur(limit))
			}
		}
		settle := roundDur(x.final.settle).String()
		if !x.final.settled {
			settle = "not settled in " + settle
		}
		fmt.Fprintf(&b, "| %s | %s | %v | %s | %d | %s | %d / %d | %d |\n", x.name, fault, roundDur(x.max), bound, x.failures,
			settle, x.final.present, x.final.keys, x.final.inconsistent)
	}
	return b.String()
}

// ackWaitNote says whether ACK_WAIT is the worker's default.
func ackWaitNote(d time.Duration) string {
	if d == worker.DefaultAckWait {
		return " (the worker's default)"
	}
	return fmt.Sprintf(" (set with -staleness-ack-wait; the worker's default is %v)", worker.DefaultAckWait)
}
