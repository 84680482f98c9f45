package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/invalidator/invalidator/cache"
	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/servers"
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
// before the read began.

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
}

var stalenessCases = []stalenessCase{
	{"steady exact, publish", "publish", false, "on"},
	{"steady pattern, generations on, publish", "publish", true, "on"},
	{"steady pattern, generations off (sweep only), publish", "publish", true, "off"},
	{"steady exact, cdc", "cdc", false, "on"},
	{"steady pattern, generations on, cdc", "cdc", true, "on"},
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
	pg, err := servers.StartPostgres(ctx, servers.PostgresOptions{})
	if err != nil {
		return err
	}
	defer pg.Close()
	bin, err := buildBinary(ctx, e)
	if err != nil {
		return err
	}
	rulesPath := filepath.Join(e.dir, "staleness-rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(stalenessRules), 0o644); err != nil {
		return err
	}
	natsURL := e.ns.ClientURL()
	if o.stalenessNATSBinary {
		nb, err := servers.StartNATSBinary(ctx, filepath.Join(e.dir, "nats-bin"))
		if err != nil {
			return err
		}
		defer nb.Stop()
		natsURL = nb.URL()
	}
	for i, c := range stalenessCases {
		if o.stalenessCase != "" && !strings.Contains(c.name, o.stalenessCase) {
			continue
		}
		log.Printf("staleness: %s", c.name)
		if err := stalenessRun(ctx, e, o, rep, pg, bin, rulesPath, natsURL, c, i); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

func stalenessRun(ctx context.Context, e *env, o options, rep *report, pg *servers.Postgres, bin, rulesPath, natsURL string, c stalenessCase, n int) error {
	db := fmt.Sprintf("staleness%d", n)
	pool, err := itemsDatabase(ctx, pg, db, o.stalenessItems)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		return err
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for _, s := range []string{"EVENTS", "EVENTS_DLQ"} {
		_ = js.DeleteStream(ctx, s)
	}
	// 200k unrelated keys, so a sweep has a keyspace to walk.
	if err := e.rdb.Do(ctx, "DEBUG", "POPULATE", 200000, "other").Err(); err != nil {
		return err
	}
	env := append(os.Environ(), "REDIS_URL=redis://"+e.redis.Addr()+"/0", "NATS_URL="+natsURL, "INVALIDATOR_RULES="+rulesPath,
		"HTTP_ADDR=", "LOG_LEVEL=warn", "LOG_FORMAT=json", "GENERATIONS="+c.generations)
	worker := exec.CommandContext(ctx, bin, "run")
	worker.Env, worker.Stdout, worker.Stderr = env, os.Stderr, os.Stderr
	if err := worker.Start(); err != nil {
		return err
	}
	defer func() { _ = worker.Process.Kill(); _ = worker.Wait() }()
	if c.mode == "cdc" {
		cdcProc := exec.CommandContext(ctx, bin, "cdc")
		cdcProc.Env = append(env, "CDC_DATABASE_URL="+pg.URL(db), "CDC_SLOT="+db)
		cdcProc.Stdout, cdcProc.Stderr = os.Stderr, os.Stderr
		if err := cdcProc.Start(); err != nil {
			return err
		}
		defer func() { _ = cdcProc.Process.Kill(); _ = cdcProc.Wait() }()
	}
	if err := waitConsumer(ctx, js, c.mode == "cdc", pool, db); err != nil {
		return err
	}
	cc, err := newStalenessCache(e.rdb)
	if err != nil {
		return err
	}
	defer cc.Close()
	res := &stalenessResult{commits: map[int][]commit{}}
	acks := observeAcks(ctx, js, res, c.mode == "cdc")
	defer acks()
	rctx, stop := context.WithTimeout(ctx, o.stalenessFor)
	defer stop()
	var wg sync.WaitGroup
	for r := range o.stalenessReaders {
		wg.Add(1)
		go func() { defer wg.Done(); readLoop(rctx, cc, pool, res, c, o.stalenessItems, uint64(r)) }()
	}
	var pub *events.Publisher
	if c.mode == "publish" {
		if pub, err = events.NewPublisher(js); err != nil {
			return err
		}
	}
	const writers = 4
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeLoop(rctx, pool, pub, res, o.stalenessItems, o.stalenessRate/writers, uint64(100+w))
		}()
	}
	wg.Wait()
	time.Sleep(time.Second) // the last acks
	res.report(rep, c, o)
	return nil
}

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
		v, err := cache.Fetch(ctx, c, key, 10*time.Minute, func(ctx context.Context) (int64, error) {
			var v int64
			err := pool.QueryRow(ctx, "SELECT version FROM items WHERE id = $1", id).Scan(&v)
			return v, err
		})
		if err != nil {
			continue
		}
		res.read(read{id: id, version: v, at: start})
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
		if err := pool.QueryRow(ctx, "UPDATE items SET version = version + 1 WHERE id = $1 RETURNING version", id).Scan(&v); err != nil {
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
	mu      sync.Mutex
	reads   []read
	commits map[int][]commit
	lags    []time.Duration
}

func (r *stalenessResult) read(x read) { r.mu.Lock(); r.reads = append(r.reads, x); r.mu.Unlock() }

func (r *stalenessResult) commit(id int, v int64, at time.Time) {
	r.mu.Lock()
	r.commits[id] = append(r.commits[id], commit{version: v, at: at})
	r.mu.Unlock()
}

// acked records commit → ack lag; in cdc mode committed is the event's
// time (the commit time on PostgreSQL's clock, the same machine).
func (r *stalenessResult) acked(_ int, committed, at time.Time) {
	r.mu.Lock()
	r.lags = append(r.lags, at.Sub(committed))
	r.mu.Unlock()
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

func (r *stalenessResult) report(rep *report, c stalenessCase, o options) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.commits {
		slices.SortFunc(r.commits[id], func(a, b commit) int { return int(a.version - b.version) })
	}
	st := make([]time.Duration, len(r.reads))
	for i, x := range r.reads {
		st[i] = r.staleness(x)
	}
	slices.Sort(st)
	n := len(st)
	if n == 0 {
		log.Printf("staleness: %s: no reads", c.name)
		return
	}
	row := stalenessRow{name: c.name, reads: n, p50: q(st, 0.5), p99: q(st, 0.99), p999: q(st, 0.999), max: st[n-1],
		tv999: q(st, 0.999), tv9999: q(st, 0.9999)}
	for _, d := range deltas {
		stale := n - sortSearch(st, d)
		row.stale = append(row.stale, stale)
	}
	slices.Sort(r.lags)
	if len(r.lags) > 0 {
		row.lag50, row.lag99 = q(r.lags, 0.5), q(r.lags, 0.99)
	}
	rep.staleness = append(rep.staleness, row)
	log.Printf("staleness: %s: %d reads; stale at 100ms %d; p99.99 %v; max %v", c.name, n, row.stale[2], row.tv9999, row.max)
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
		"Lag is commit → PubAck (publish) or commit → delivery of cdc's event to an observer (cdc).\n\n")
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
	return b.String()
}
