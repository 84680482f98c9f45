package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

// Cluster is the engine for a Redis Cluster. It takes a
// *redis.ClusterClient only: a plain client to one node would serve a part
// of the keyspace, silently.
//
// Exact keys are grouped by hash slot, so no command spans slots: one
// UNLINK per job, slot and chunk, all jobs' commands in one pipeline that
// go-redis splits by node (following MOVED and ASK during a resharding).
// With Config.Generations each slot's group is one script that UNLINKs the
// keys' generations (in their slot, see ClusterGenerationKey) and then the
// keys.
//
// Patterns are swept on every master in parallel: one shared sweep.Walker
// per master, on a plain client of its own, serving every pattern in hand.
// A job's pattern is complete when it is complete on every master, and the
// topology has not moved under it: the engine reads each master's own view
// (CLUSTER NODES: id, config epoch, slots, migrations) before and after
// each round, and sweeps again, on the masters that changed, gained slots,
// or had a slot migrating, until a round saw none. So a key that exists
// throughout a job is removed even when its slot moves between nodes
// during the sweep (see Cluster.sweep for the argument).
type Cluster struct {
	rdb *redis.ClusterClient
	cfg Config

	mu     sync.Mutex
	nodes  map[string]*clusterNode // by address
	closed bool

	restarts atomic.Int64
	gensOn   atomic.Bool // EnableGenerations was called
}

// EnableGenerations turns Config.Generations on for the jobs applied from
// now on, as [Redis.EnableGenerations].
func (e *Cluster) EnableGenerations() { e.gensOn.Store(true) }

// Generations reports whether jobs advance the generation guard.
func (e *Cluster) Generations() bool { return e.cfg.Generations || e.gensOn.Load() }

// clusterNode is one master: a client of its own and its walker.
type clusterNode struct {
	client *redis.Client
	walker *sweep.Walker
}

// ErrClosed is returned by the calls of an engine that is closed.
var ErrClosed = errors.New("engine closed")

// NewCluster returns an engine on rdb, or an error wrapping
// ErrInvalidConfig.
func NewCluster(rdb *redis.ClusterClient, cfg Config) (*Cluster, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: NewCluster needs a cluster client", ErrInvalidConfig)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Cluster{rdb: rdb, cfg: cfg, nodes: map[string]*clusterNode{}}, nil
}

// Close stops every master's walk and closes the engine's node clients
// (not rdb); Apply calls waiting for a walk fail. It is safe to call more
// than once.
func (e *Cluster) Close() error {
	e.mu.Lock()
	e.closed = true
	nodes := e.nodes
	e.nodes = map[string]*clusterNode{}
	e.mu.Unlock()
	for _, n := range nodes {
		_ = n.walker.Close()
		_ = n.client.Close()
	}
	return nil
}

// Sweeps reports the walk of each master the engine has swept, ordered
// by address.
func (e *Cluster) Sweeps() []sweep.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []sweep.Status
	for _, addr := range slices.Sorted(maps.Keys(e.nodes)) {
		out = append(out, e.nodes[addr].walker.Status())
	}
	return out
}

// Restarts is how many times a master's sweep was run again because the
// topology moved during a round.
func (e *Cluster) Restarts() int64 { return e.restarts.Load() }

// node returns the master at addr, making its client and walker on first
// use. The walker's CursorSlotBits comes from the server's version (14 on
// Redis 7.4+ and Valkey 8+, whose cluster SCAN cursor carries the slot)
// unless Config.Sweep sets it.
func (e *Cluster) node(ctx context.Context, addr string) (*clusterNode, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if n := e.nodes[addr]; n != nil {
		return n, nil
	}
	client := redis.NewClient(nodeOptions(e.rdb.Options(), addr))
	cfg := e.cfg.Sweep
	// The walker UNLINKs a page's matches in multi-key commands, which
	// must not span slots on a cluster node: one UNLINK per slot of the
	// page (all still in the round trip that carries the next SCAN).
	cfg.SlotOf = cachekeys.Slot
	if e.cfg.NodeObserver != nil {
		cfg.Observer = e.cfg.NodeObserver(addr)
	}
	if cfg.CursorSlotBits == 0 {
		info, err := client.InfoMap(ctx, "server").Result()
		if err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("INFO server on %s: %w", addr, err)
		}
		cfg.CursorSlotBits = cursorSlotBits(info["Server"])
	}
	n := &clusterNode{client: client, walker: sweep.New(client, cfg)}
	e.nodes[addr] = n
	return n, nil
}

// cursorSlotBits is 14 for servers whose cluster SCAN cursor holds the
// slot in its low bits (Redis 7.4+, Valkey 8+), else 0.
func cursorSlotBits(server map[string]string) int {
	if v, ok := server["valkey_version"]; ok {
		return slotBitsIf(atLeastVersion(v, 8, 0))
	}
	return slotBitsIf(atLeastVersion(server["redis_version"], 7, 4))
}

func slotBitsIf(ok bool) int {
	if ok {
		return 14
	}
	return 0
}

func atLeastVersion(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// Apply implements Engine: the exact keys of every job (and with
// Config.Generations the generations of every job) go first, in slot
// groups; the exact-only jobs are then done; the pattern jobs all join the
// sweeps of every master at once.
func (e *Cluster) Apply(ctx context.Context, jobs []Job, done func(int, Result, error)) {
	apply(ctx, jobs, done, e.exactMany, e.sweep)
}

// exactMany removes the exact keys of every job and returns each job's
// count and error. With Config.Generations a first round trip (only for
// batches with patterns) drains the fill registries of the pattern scopes;
// the second removes, per job and slot, the generations and then the keys
// in one script, and the drained fills' generations. The sweeps start
// after both returned.
//
// A job with Capture gets its scope generations SET with GET in the first
// round trip (before the other jobs' SETs), and its own generations
// removed with GETDEL in the second, queued before any job's script: each
// in its key's slot, so on the node and connection of the script that
// follows it. See Capture.
func (e *Cluster) exactMany(ctx context.Context, jobs []Job) ([]int64, []error, captures) {
	removed, errs := make([]int64, len(jobs)), make([]error, len(jobs))
	gensOn := e.Generations()
	caps := newCaptures(jobs, gensOn)
	var fills [][]string // per job, the keys whose fills a scope drained
	if gensOn {
		fills = e.drain(ctx, jobs, errs, caps)
	}
	pipe := e.rdb.Pipeline()
	cmds := make([][]redis.Cmder, len(jobs))
	counts := make([][]*redis.IntCmd, len(jobs))
	var fill []func()
	if gensOn {
		var c capturer
		for i, job := range jobs {
			if job.Capture && errs[i] == nil {
				cmds[i], fill = captureOwn(ctx, pipe, &c, job, caps.of(i), fill)
			}
		}
	}
	for i, job := range jobs {
		if errs[i] != nil {
			// The job failed before its keys; the fills its scopes drained
			// (a registry is gone once drained) still lose their
			// generations, or one of them could write after the retry's sweep.
			if fills != nil {
				unlinkGenerations(ctx, pipe, fills[i])
			}
			continue
		}
		for _, group := range bySlot(job.Exact) {
			for c := range slices.Chunk(group, unlinkChunk) {
				counts[i] = append(counts[i], e.unlinkGroup(ctx, pipe, c))
			}
		}
		if gensOn {
			gens := literalPatterns(job.Patterns)
			if fills != nil {
				gens = append(gens, fills[i]...)
			}
			cmds[i] = append(cmds[i], unlinkGenerations(ctx, pipe, gens)...)
		}
	}
	if pipe.Len() == 0 {
		return removed, errs, caps
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for _, f := range fill {
		f()
	}
	for i := range jobs {
		if errs[i] != nil {
			continue
		}
		removed[i], errs[i] = readJob(jobs[i], cmds[i], counts[i])
	}
	return removed, errs, caps
}

// captureOwn queues, for a Capture job, GETDEL of the own generation
// (guard.ClusterKey, in the key's slot) of each exact key and each pattern
// without glob characters, and returns the commands and fill extended with
// the functions that record their replies in cp.
func captureOwn(ctx context.Context, pipe redis.Pipeliner, c *capturer, job Job, cp *Capture, fill []func()) ([]redis.Cmder, []func()) {
	var cmds []redis.Cmder
	keys := append(slices.Clone(job.Exact), literalPatterns(job.Patterns)...)
	for _, k := range slices.Compact(slices.Sorted(slices.Values(keys))) {
		gen := guard.ClusterKey(k)
		cmd := c.remove(ctx, pipe, gen)
		cmds = append(cmds, cmd)
		fill = append(fill, func() { cp.Exact = append(cp.Exact, Displaced{Scope: k, Key: gen, Previous: previous(cmd)}) })
	}
	return cmds, fill
}

// unlinkGenerations queues on pipe the UNLINK of the own generations of
// keys, one command per slot and chunk, and returns the commands.
func unlinkGenerations(ctx context.Context, pipe redis.Pipeliner, keys []string) []redis.Cmder {
	var cmds []redis.Cmder
	for _, group := range bySlot(keys) {
		for c := range slices.Chunk(group, unlinkChunk) {
			cmds = append(cmds, pipe.Unlink(ctx, generationKeys(c)...))
		}
	}
	return cmds
}

// unlinkGroup queues the removal of keys, all of one slot: a plain UNLINK,
// or with generations one script that UNLINKs their generations and then
// them. Its reply counts the keys removed.
func (e *Cluster) unlinkGroup(ctx context.Context, pipe redis.Pipeliner, keys []string) *redis.IntCmd {
	if !e.Generations() {
		return pipe.Unlink(ctx, keys...)
	}
	all := append(generationKeys(keys), keys...)
	cmd := redis.NewIntCmd(ctx, append([]any{"eval", unlinkWithGenerations, len(all)}, append(anys(all), len(keys))...)...)
	cmd.SetFirstKeyPos(3)
	_ = pipe.Process(ctx, cmd)
	return cmd
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func generationKeys(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = guard.ClusterKey(k)
	}
	return out
}

// literalPatterns are the patterns without glob characters: each names one
// key, whose generation is an exact key's.
func literalPatterns(patterns []string) []string {
	var out []string
	for _, p := range patterns {
		if cachekeys.LiteralPrefix(p) == p {
			out = append(out, p)
		}
	}
	return out
}

// bySlot groups keys (deduplicated) by hash slot, in slot order.
func bySlot(keys []string) [][]string {
	if len(keys) == 0 {
		return nil
	}
	m := map[int][]string{}
	for _, k := range keys {
		s := cachekeys.Slot(k)
		if !slices.Contains(m[s], k) {
			m[s] = append(m[s], k)
		}
	}
	out := make([][]string, 0, len(m))
	for _, s := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[s])
	}
	return out
}

// drain takes and deletes the fill registry of each pattern scope of each
// job and advances each scope's generation (a SET to a token fresh for the
// batch, as on one node: readers of stamped values, package cache, miss at
// once), in one round trip, and returns per job the keys of the fills it
// found. A job whose drain or advance fails gets the error in errs. The
// scopes of a job with a Capture (caps[i]) are SET with GET, queued before
// every other SET, and recorded in its Capture.
func (e *Cluster) drain(ctx context.Context, jobs []Job, errs []error, caps captures) [][]string {
	pipe := e.rdb.Pipeline()
	cmds := make([][]*redis.Cmd, len(jobs))
	sets := make([][]*redis.StatusCmd, len(jobs))
	token := guard.NewToken()
	var c capturer
	for i, job := range jobs {
		if caps.of(i) != nil {
			for _, scope := range scopes(job.Patterns) {
				sets[i] = append(sets[i], c.set(ctx, pipe, guard.Key(scope), token))
			}
		}
	}
	for i, job := range jobs {
		for _, scope := range scopes(job.Patterns) {
			key := guard.RegistryKey(scope)
			cmds[i] = append(cmds[i], pipe.Eval(ctx, drainRegistry, []string{key}))
			if caps.of(i) == nil {
				sets[i] = append(sets[i], pipe.Set(ctx, guard.Key(scope), token, guard.TTL))
			}
		}
	}
	if pipe.Len() == 0 {
		return nil
	}
	_, _ = pipe.Exec(ctx)
	for i, job := range jobs {
		if caps.of(i) == nil {
			continue
		}
		for k, scope := range scopes(job.Patterns) {
			caps[i].Scopes = append(caps[i].Scopes, Displaced{Scope: scope, Key: guard.Key(scope), Previous: previous(sets[i][k]), Token: token})
		}
	}
	fills := make([][]string, len(jobs))
	for i, ss := range sets {
		for _, s := range ss {
			if err := s.Err(); !capturedOK(err) {
				errs[i] = fmt.Errorf("advance scope generation: %w", err)
				break
			}
		}
	}
	for i, cs := range cmds {
		for _, c := range cs {
			members, err := c.StringSlice()
			if err != nil {
				if errs[i] == nil {
					errs[i] = fmt.Errorf("drain fill registry: %w", err)
				}
				continue // the fills other scopes drained still lose their generations
			}
			for _, m := range members {
				fills[i] = append(fills[i], guard.MemberKey(m))
			}
		}
	}
	return fills
}

// scopes returns the distinct scopes of the patterns that have glob
// characters.
func scopes(patterns []string) []string {
	var out []string
	for _, p := range patterns {
		if cachekeys.LiteralPrefix(p) != p {
			out = append(out, cachekeys.PatternScope(p))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// sweep removes every key matching one of patterns on every master and
// returns once the keys that existed throughout are gone.
//
// Round r sweeps a set of masters between two topology snapshots s(r) and
// s(r+1) (each master's own CLUSTER NODES line). Round 0 sweeps every
// master of s(0); round r+1 sweeps changed(s(r), s(r+1)): the masters that
// are new, whose id, config epoch or slots differ, or that had a slot
// migrating or importing in either snapshot. The job is complete after a
// round whose next set is empty.
//
// Why no key K that exists throughout is missed: a key reaches a node only
// by MIGRATE into a slot the node is importing, or by a failover (a new
// master). Let N be the node holding K at the end, and r the last round
// that swept N. After r, N never entered a next set: in every later
// snapshot N had the same id, epoch and slots and no migration. An
// import into N that started and ended between two snapshots would have
// changed N's slots, or bumped its epoch (a node that finishes importing a
// slot takes a new config epoch). So K was on N before s(r) was taken, and
// stayed there through round r (a key that left N and came back came back
// by an import); the walker's Sweep on N in round r removed every key
// that existed on N during the whole call, K among them. (Keys left in a
// slot whose migration was aborted with SETSLOT STABLE are outside this
// argument; no client reaches them either.)
//
// With sample > 0 the result's Capture holds up to sample of the keys
// removed per pattern, gathered over every master and round.
func (e *Cluster) sweep(ctx context.Context, patterns []string, sample int) (Result, error) {
	var total Result
	if sample > 0 {
		total.Capture = &Capture{}
	}
	prev, err := e.topology(ctx)
	if err != nil {
		return total, fmt.Errorf("sweep: %w", err)
	}
	todo := prev.sweepable()
	for len(todo) > 0 {
		res, moved, err := e.sweepNodes(ctx, todo, patterns, sample)
		total.Add(res)
		total.Capture.addRemoved(res.Capture, sample)
		if err != nil {
			return total, err
		}
		next, err := e.topology(ctx)
		if err != nil {
			return total, fmt.Errorf("sweep: %w", err)
		}
		todo = changed(prev, next)
		for _, addr := range moved {
			if !slices.Contains(todo, addr) && next[addr].master {
				todo = append(todo, addr)
			}
		}
		if len(todo) > 0 {
			e.restarts.Add(int64(len(todo)))
			e.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "🔍 cluster topology moved during a sweep; sweeping again",
				slog.Any("masters", todo))
			if next.anyMoving() {
				if err := sleep(ctx, 20*time.Millisecond); err != nil {
					return total, fmt.Errorf("sweep: %w", err)
				}
			}
		}
		prev = next
	}
	return total, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// sweepNodes sweeps patterns on each master of addrs in parallel and
// returns the sum and the first error. A master whose walk met a
// redirection (MOVED, ASK or TRYAGAIN: a key of the page moved away before
// its UNLINK) is listed in moved instead of failing: its walk restarts.
func (e *Cluster) sweepNodes(ctx context.Context, addrs []string, patterns []string, sample int) (total Result, moved []string, first error) {
	if sample > 0 {
		total.Capture = &Capture{}
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, addr := range addrs {
		wg.Go(func() {
			res, err := e.sweepNode(ctx, addr, patterns, sample)
			mu.Lock()
			defer mu.Unlock()
			total.Add(res)
			total.Capture.addRemoved(res.Capture, sample)
			switch {
			case err == nil:
			case redirected(err) && ctx.Err() == nil:
				moved = append(moved, addr)
			case first == nil:
				first = err
			}
		})
	}
	wg.Wait()
	return total, moved, first
}

// redirected reports whether err is a cluster redirection: the node no
// longer holds a key's slot, or holds it in a migration.
func redirected(err error) bool {
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask || redis.IsTryAgainError(err)
}

func (e *Cluster) sweepNode(ctx context.Context, addr string, patterns []string, sample int) (Result, error) {
	n, err := e.node(ctx, addr)
	if err != nil {
		return Result{}, fmt.Errorf("sweep %s: %w", addr, err)
	}
	res, err := walk(ctx, n.walker, patterns, sample)
	if err != nil {
		err = fmt.Errorf("%s: %w", addr, err)
	}
	return res, err
}

// Preview reports what Invalidate would remove without removing anything
// (and without touching generations): fn is called with each existing
// exact key and each key a pattern matches on any master (a key may be
// reported once per pattern that matches it). fn is never called
// concurrently.
func (e *Cluster) Preview(ctx context.Context, job Job, fn func(key string)) (Result, error) {
	start := time.Now()
	report := serialized(fn)
	job.Exact = slices.Compact(slices.Sorted(slices.Values(job.Exact)))
	var res Result
	if len(job.Exact) > 0 {
		pipe := e.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(job.Exact))
		for i, k := range job.Exact {
			cmds[i] = pipe.Exists(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return Result{Duration: time.Since(start)}, fmt.Errorf("exists %d keys: %w", len(job.Exact), err)
		}
		for i, c := range cmds {
			if c.Val() > 0 {
				res.Removed++
				report(job.Exact[i])
			}
		}
	}
	var mu sync.Mutex // res, from one goroutine per master
	if len(job.Patterns) == 0 {
		res.Duration = time.Since(start)
		return res, nil
	}
	err := e.rdb.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		r, err := dryWalk(ctx, node, e.cfg.Sweep, job.Patterns, report)
		mu.Lock()
		res.Add(r)
		mu.Unlock()
		return err
	})
	res.Duration = time.Since(start)
	return res, err
}
