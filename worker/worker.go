// Package worker consumes domain events from a JetStream durable consumer and
// has the Redis keys their rules name removed by an engine.Engine: the fetch
// loop and the pool of handlers, acks, naks with backoff and
// dead-lettering (through package deadletter), the Redis health gate that
// pauses consumption during an outage or a refused permission, the
// failover replay window, and the hand-off of warm requests to a
// warm.Warmer after each ack.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/warm"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/sourcegraph/conc"
	"github.com/sourcegraph/conc/pool"
)

// Worker is the event consumer. Create it with New, then call Run.
type Worker struct {
	cfg    Config
	js     jetstream.JetStream
	rdb    redis.UniversalClient
	rules  *cachekeys.Rules
	engine engine.Engine
	log    *slog.Logger
	obs    Observer
	gate   *gate
	warmer *warm.Warmer
	sched  *warm.Scheduler
	// checker re-reads the keys of a sample of the applied events; nil
	// when Config.Consistency is off.
	checker *consistency.Checker
	// replayer notes acks (finish) and replays them after a failover; nil
	// on a client with many masters.
	replayer *replayer
	// waits runs the deliveries with patterns while they wait for a shared
	// sweep, which can take a whole pass of the keyspace: they hold no
	// handler meanwhile, so every pattern event in hand (MaxAckPending at
	// most, which bounds these goroutines) joins the running walk at once
	// instead of queueing behind Concurrency handlers for a pass. Set by
	// Run.
	waits *pool.Pool

	stats struct {
		applied, deadLettered, retried, unrouted, keysRemoved atomic.Int64
		busy, busyHandlers                                    atomic.Int64
		lastEvent                                             atomic.Int64 // unix nanos
	}
	consumer atomic.Pointer[jetstream.Consumer]
	started  chan struct{} // closed once Run has set up the stream and consumer
	// termReason: the server honours TermWithReason (2.10.4 and later).
	termReason atomic.Bool
	running    atomic.Bool // Run has been called
}

// Deps are what a Worker works with; the caller owns the connections and
// closes them after Run returns.
type Deps struct {
	// JetStream is the NATS JetStream context. Required.
	JetStream jetstream.JetStream
	// Redis is the client of the cache. Required.
	Redis redis.UniversalClient
	// Rules map subjects to keys. Required.
	Rules *cachekeys.Rules
	// Engine removes keys. Defaults to engine.NewRedis(Redis, engine.Config{})
	// when Redis is a *redis.Client; required for other client types.
	Engine engine.Engine
	// Observer is told of every outcome. Optional.
	Observer Observer
	// Warmer, when set, gets the warm requests of every applied event, and
	// runs while the worker runs: Run drains it after the last event is
	// settled, within ShutdownTimeout. Its engine must advance generations
	// (engine.Config.Generations). Optional.
	Warmer *warm.Warmer
	// Scheduler, when set, runs while the worker runs. Optional.
	Scheduler *warm.Scheduler
}

// New validates cfg (after WithDefaults) and returns a Worker.
func New(cfg Config, d Deps) (*Worker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JetStream == nil || d.Redis == nil || d.Rules == nil {
		return nil, fmt.Errorf("%w: JetStream, Redis and Rules are required", ErrInvalidConfig)
	}
	if d.Engine == nil {
		c, ok := d.Redis.(*redis.Client)
		if !ok {
			return nil, fmt.Errorf("%w: Engine is required with a %T", ErrInvalidConfig, d.Redis)
		}
		e, err := engine.NewRedis(c, engine.Config{Logger: cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		d.Engine = e
	}
	if d.Observer == nil {
		d.Observer = nopObserver{}
	}
	w := &Worker{cfg: cfg, js: d.JetStream, rdb: d.Redis, rules: d.Rules, engine: d.Engine, log: cfg.Logger, obs: d.Observer,
		warmer: d.Warmer, sched: d.Scheduler, started: make(chan struct{})}
	w.gate = newGate(d.Redis, cfg.Logger, d.Observer, cfg.HealthInterval)
	w.replayer = newReplayer(w)
	if cfg.Consistency.Enabled() {
		c, err := consistency.New(d.Redis, cfg.Consistency)
		if err != nil {
			return nil, fmt.Errorf("%w: consistency checker: %w", ErrInvalidConfig, err)
		}
		w.checker = c
	}
	return w, nil
}

// Consistency returns the consistency checker, nil when it is off.
func (w *Worker) Consistency() *consistency.Checker { return w.checker }

// Config returns the worker's configuration, defaults filled in.
func (w *Worker) Config() Config { return w.cfg }

// Stats are running totals since the worker started.
type Stats struct {
	// Concurrency is the number of handlers.
	Concurrency int
	// BusyHandlers is how many handlers are working now.
	BusyHandlers int64
	// Busy is the number of events being handled now.
	Busy         int64
	Applied      int64
	DeadLettered int64
	Retried      int64
	Unrouted     int64
	KeysRemoved  int64
	// LastEventAt is when the last event was settled; zero if none yet.
	LastEventAt time.Time
	RedisUp     bool
	// Paused says why consumption is paused ("" while it runs): Redis
	// unreachable, or a permission it refuses.
	Paused string
}

// Stats returns a snapshot of the running totals.
func (w *Worker) Stats() Stats {
	s := Stats{
		Concurrency:  w.cfg.Concurrency,
		Busy:         w.stats.busy.Load(),
		BusyHandlers: w.stats.busyHandlers.Load(),
		Applied:      w.stats.applied.Load(),
		DeadLettered: w.stats.deadLettered.Load(),
		Retried:      w.stats.retried.Load(),
		Unrouted:     w.stats.unrouted.Load(),
		KeysRemoved:  w.stats.keysRemoved.Load(),
		RedisUp:      w.gate.isUp(),
		Paused:       w.gate.Reason(),
	}
	if n := w.stats.lastEvent.Load(); n != 0 {
		s.LastEventAt = time.Unix(0, n)
	}
	return s
}

// Consumer returns the durable consumer once Run has set it up, else nil.
func (w *Worker) Consumer() jetstream.Consumer {
	if c := w.consumer.Load(); c != nil {
		return *c
	}
	return nil
}

// Started returns a channel that is closed once Run has set up the streams
// and the consumer and begins to fetch. It is never closed if Run fails or
// its context ends before that.
func (w *Worker) Started() <-chan struct{} { return w.started }

// ErrAlreadyRunning is returned by a second call of Run on one Worker.
var ErrAlreadyRunning = errors.New("worker: Run called twice")

// Setup creates the stream and the dead-letter stream if they are missing
// (existing ones are used as they are) and creates or updates the durable
// consumer. Run calls it, retrying while NATS is unreachable.
func (w *Worker) Setup(ctx context.Context) (jetstream.Consumer, error) {
	if _, err := w.js.AccountInfo(ctx); jetStreamDisabled(err) != nil {
		return nil, ErrJetStreamDisabled
	}
	for _, sc := range []jetstream.StreamConfig{w.cfg.streamConfig(), w.cfg.deadLetterConfig()} {
		if err := w.ensureStream(ctx, sc); err != nil {
			return nil, err
		}
	}
	w.termReason.Store(atLeast(w.js.Conn().ConnectedServerVersion(), termWithReasonSince))
	c, err := w.js.CreateOrUpdateConsumer(ctx, w.cfg.Stream, w.cfg.consumerConfig())
	if err != nil {
		return nil, fmt.Errorf("create consumer %q on stream %q: %w", w.cfg.Consumer, w.cfg.Stream, err)
	}
	w.consumer.Store(&c)
	return c, nil
}

func (w *Worker) ensureStream(ctx context.Context, sc jetstream.StreamConfig) error {
	st, err := w.js.Stream(ctx, sc.Name)
	if err == nil {
		if have := st.CachedInfo().Config.Replicas; have != sc.Replicas {
			w.log.Warn("⚠️ stream exists with other replicas than NATS_STREAM_REPLICAS; it is used as it is",
				slog.String("stream", sc.Name), slog.Int("replicas", have), slog.Int("setting", sc.Replicas))
		}
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up stream %q: %w", sc.Name, err)
	}
	if _, err := w.js.CreateStream(ctx, sc); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %q: %w", sc.Name, err)
	}
	w.log.Info("🔧 created stream", slog.String("stream", sc.Name), slog.Any("subjects", sc.Subjects))
	return nil
}

// Run consumes events until ctx ends, then stops fetching, lets the events in
// flight finish, acks them, lets the warmer make the warm requests queued,
// and returns: at most ShutdownTimeout after ctx ended. Events not finished
// by then are nak'ed and will be redelivered; warm requests not made are
// counted warm.Dropped. Run waits for NATS
// while it is unreachable at start; it returns nil after a clean shutdown and
// an error only if the server refuses the streams or the consumer (subjects
// that overlap another stream's, say).
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	cons, err := w.setupWithRetry(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// Handlers outlive ctx by at most ShutdownTimeout.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopTimer := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(w.cfg.ShutdownTimeout, cancelWork)
		go func() { <-workCtx.Done(); t.Stop() }()
	})
	defer stopTimer()

	var bg sync.WaitGroup
	gateCtx, stopGate := context.WithCancel(workCtx)
	bg.Go(func() { w.gate.run(gateCtx) })
	if w.replayer != nil { // the failover replay window (replay.go)
		bg.Go(func() { w.replayer.run(gateCtx) })
	}
	defer func() { stopGate(); bg.Wait() }()
	if w.warmer != nil { // on workCtx: it makes the warm requests of the drain
		bg.Go(func() {
			if err := w.warmer.Run(workCtx); err != nil {
				w.log.Error("❌ warmer not run", slog.Any("error", err))
			}
		})
	}
	if w.sched != nil {
		bg.Go(func() { w.sched.Run(ctx) })
	}
	if w.checker != nil { // its checks are a sample: it stops with the worker, dropping those not made
		bg.Go(func() { _ = w.checker.Run(gateCtx) })
		w.log.Info("🔧 consistency checker on", slog.String("checker", w.checker.String()))
	}

	w.log.Info("✅ worker started", slog.String("stream", w.cfg.Stream), slog.String("consumer", w.cfg.Consumer),
		slog.Int("concurrency", w.cfg.Concurrency))
	close(w.started)
	p := pool.New().WithMaxGoroutines(w.cfg.Concurrency)
	w.waits = pool.New()
	slots := make(chan struct{}, w.cfg.Concurrency)
	ferr := w.fetchLoop(ctx, workCtx, cons, p, slots)
	w.log.Info("🔧 stopping: fetching stopped, finishing events in flight", slog.Int64("in_flight", w.stats.busy.Load()))
	p.Wait()
	w.waits.Wait()
	if w.warmer != nil {
		// Every event is settled: the warmer makes the requests left, until
		// ShutdownTimeout after ctx ended (then it counts the rest dropped).
		w.log.Info("🔧 stopping: events settled, making the warm requests left")
		w.warmer.Drain()
	}
	if ferr != nil {
		w.log.Error("❌ worker stopped", slog.Any("error", ferr))
		return ferr
	}
	w.log.Info("✅ worker stopped")
	return nil
}

func (w *Worker) setupWithRetry(ctx context.Context) (jetstream.Consumer, error) {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, err := w.Setup(ctx)
		if err == nil {
			return c, nil
		}
		if fatalSetup(err) {
			return nil, err // the server refuses the configuration, or has no JetStream
		}
		if attempt == 1 || attempt%10 == 0 {
			w.log.Warn("⚠️ JetStream setup failed, retrying", slog.Any("error", err), slog.Int("attempt", attempt))
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("setup: %w", err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// fetchLoop fetches events while Redis is up, until ctx ends or the NATS
// connection is closed for good (nats.go gives up after repeated
// authorization failures, say), which it returns. Each fetch
// asks for BatchSize events per free handler; the events that arrive
// together are handed to one handler as a group, so a burst of events shares
// one Redis round trip while a lone event is handled as soon as it arrives.
//
// A fetch is renewed before the server expires it (renewAfter), not when it
// ends: the events the old one still brings are dispatched in the background
// (drains) while the new one is already waiting on the server, so there is
// always a pull request there. Waiting for the end cost up to a tenth of
// FetchMaxWait on nats-server 2.9: an event that arrives just after the
// request's expiry makes that server drop the request without the 408 that
// ends the fetch (consumer.go, nextWaiting), so the fetch ran on to its
// client-side deadline (nats.go sets the server's expiry at 90% of it) while
// no request was waiting and events queued: the ~100 ms staleness tail.
func (w *Worker) fetchLoop(ctx, workCtx context.Context, cons jetstream.Consumer, p *pool.Pool, slots chan struct{}) error {
	var drains conc.WaitGroup
	defer drains.Wait()
	errWait := 100 * time.Millisecond
	for ctx.Err() == nil {
		if w.gate.Wait(ctx) != nil {
			return nil
		}
		held := acquire(ctx, slots)
		if held == 0 {
			return nil
		}
		// The fetch outlives ctx (by at most FetchMaxWait): cancelling it would
		// drop messages the server has already delivered to it, leaving them
		// unacked until AckWait. What it brings is handled like any event in flight.
		fctx, cancel := context.WithTimeout(workCtx, w.cfg.FetchMaxWait)
		renew := time.NewTimer(renewAfter(w.cfg.FetchMaxWait))
		batch, err := cons.Fetch(min(held*w.cfg.BatchSize, w.cfg.MaxAckPending), jetstream.FetchContext(fctx))
		if err == nil {
			var ended bool
			held, ended = w.dispatch(workCtx, batch.Messages(), held, p, slots, renew.C)
			if !ended {
				for range held {
					<-slots
				}
				drains.Go(func() {
					defer cancel()
					w.dispatch(workCtx, batch.Messages(), 0, p, slots, nil)
					if err := batch.Error(); !fetchEnded(err) {
						w.log.Debug("renewed fetch ended with an error", slog.Any("error", err))
					}
				})
				renew.Stop()
				errWait = 100 * time.Millisecond
				continue
			}
			err = batch.Error()
		}
		renew.Stop()
		cancel()
		for range held {
			<-slots
		}
		if fetchEnded(err) || ctx.Err() != nil {
			errWait = 100 * time.Millisecond
			continue
		}
		if errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("fetch: the NATS connection is closed: %w", err)
		}
		w.log.Warn("⚠️ fetch failed, retrying", slog.Any("error", err), slog.Duration("wait", errWait))
		sleep(ctx, errWait)
		errWait = min(errWait*2, 5*time.Second)
	}
	return nil
}

// fetchEnded reports whether err is how a fetch normally ends: no error,
// or its wait ran out (the server's 408, or the client's deadline).
func fetchEnded(err error) bool {
	return err == nil || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}

// renewAfter is when the fetch loop asks for the next fetch while the current
// one may still bring events: shortly before the server expires the current
// request, which nats.go's FetchContext sets at 90% of the time it is given,
// so that the two overlap (the server serves the older request first) and no
// event waits for a request to arrive.
func renewAfter(maxWait time.Duration) time.Duration {
	return maxWait * 8 / 10
}

// dispatch hands the fetched messages to handlers in groups of what has
// arrived, at most BatchSize each. It uses the slots it holds first, then
// waits for more. It returns how many held slots it did not use, and whether
// msgs ended (false: stop fired while it waited for a group's first message).
func (w *Worker) dispatch(workCtx context.Context, msgs <-chan jetstream.Msg, held int, p *pool.Pool, slots chan struct{}, stop <-chan time.Time) (int, bool) {
	for {
		group, ended := nextGroup(msgs, w.cfg.BatchSize, stop)
		if len(group) == 0 {
			return held, ended
		}
		if held > 0 {
			held--
		} else {
			slots <- struct{}{} // messages in hand are processed even during shutdown
		}
		w.stats.busy.Add(int64(len(group)))
		w.stats.busyHandlers.Add(1)
		p.Go(func() {
			defer func() { <-slots; w.stats.busy.Add(-int64(len(group))); w.stats.busyHandlers.Add(-1) }()
			w.handleGroup(workCtx, group)
		})
		if ended {
			return held, true
		}
	}
}

// groupLinger is how long a group waits for the next message of a fetch
// that is still arriving: long enough for a backlog's messages to fill a
// group (one Redis round trip for many events), far shorter than a round
// trip to Redis, so a lone event is not held back.
const groupLinger = 50 * time.Microsecond

// nextGroup waits for one message, then takes those that arrive without a
// pause longer than groupLinger, up to n. It returns an empty group when stop
// fires before the first message (ended false) or msgs is closed (ended
// true); a group cut short by the close of msgs comes with ended true.
func nextGroup(msgs <-chan jetstream.Msg, n int, stop <-chan time.Time) (group []jetstream.Msg, ended bool) {
	var first jetstream.Msg
	select {
	case m, ok := <-msgs:
		if !ok {
			return nil, true
		}
		first = m
	case <-stop:
		return nil, false
	}
	group = []jetstream.Msg{first}
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for len(group) < n {
		select {
		case m, ok := <-msgs:
			if !ok {
				return group, true
			}
			group = append(group, m)
			continue
		default:
		}
		if linger == nil {
			linger = time.NewTimer(groupLinger)
		} else {
			linger.Reset(groupLinger)
		}
		select {
		case m, ok := <-msgs:
			if !ok {
				return group, true
			}
			group = append(group, m)
		case <-linger.C:
			return group, false
		}
	}
	return group, false
}

// acquire takes one slot (waiting for it) and then every free slot; it
// returns how many it took, 0 if ctx ended first.
func acquire(ctx context.Context, slots chan struct{}) int {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	n := 1
	for n < cap(slots) {
		select {
		case slots <- struct{}{}:
			n++
		default:
			return n
		}
	}
	return n
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
