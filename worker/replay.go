package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// This file is the failover replay window (Config.FailoverReplayWindow).
//
// Redis replicates asynchronously: the master acknowledges an UNLINK before
// its replica has it. When the master dies and a Sentinel promotes the
// replica, the UNLINKs of the last moments can be lost, and the keys they
// removed are back, stale, on the new master. The worker acked those events;
// nothing would ever remove the keys again.
//
// So the worker remembers when it acked each event (its stream sequence and
// the time: a few bytes each), and watches the master's identity (INFO
// server's run_id, every HealthInterval). When it changes, the events acked
// from one window before the old master was last seen are read again from
// the stream (an ordered consumer from the oldest of them) and their plans
// run through the engine again, without acking anything. Removing a key
// twice is harmless; a key the application wrote again after the failover is
// removed once more, which costs it one cache miss.
//
// The events are chosen by when they were acked, not by when they were
// published (DeliverByStartTime): an event published long ago may have been
// applied just before the crash (a backlog, a retry). Every event whose
// UNLINK reached the old master was acked long before the new master
// answers, since a failover takes at least the sentinels'
// down-after-milliseconds. Each worker replays only what it acked itself,
// so replicas of the worker do not repeat each other's work.
//
// The window has to cover the replication lag at the moment of the crash;
// its limits are documented in the README ("Redis Sentinel").

// maxAckLog bounds the acks remembered (16 bytes each); older ones are
// forgotten first, and the replay says so.
const maxAckLog = 1 << 20

// ack is when one applied event was acked.
type ack struct {
	at  int64 // unix nanos
	seq uint64
}

// ackLog holds the acks a replay may need, in ack order.
type ackLog struct {
	mu        sync.Mutex
	acks      []ack
	truncated bool // acks were forgotten because of maxAckLog
}

// add records an ack and forgets those acked before keepFrom.
func (l *ackLog) add(a ack, keepFrom int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := 0
	for i < len(l.acks) && l.acks[i].at < keepFrom {
		i++
	}
	if len(l.acks)-i >= maxAckLog {
		i, l.truncated = len(l.acks)-maxAckLog+1, true
	}
	l.acks = append(l.acks[i:], a)
}

// since returns the sorted, distinct sequences of the events acked at or
// after from, and whether older acks than maxAckLog allows were forgotten.
func (l *ackLog) since(from int64) ([]uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var seqs []uint64
	for _, a := range l.acks {
		if a.at >= from {
			seqs = append(seqs, a.seq)
		}
	}
	slices.Sort(seqs)
	truncated := l.truncated
	l.truncated = false
	return slices.Compact(seqs), truncated
}

// replayer watches the master's identity and replays on a change.
type replayer struct {
	w    *Worker
	id   func(context.Context) (string, error)
	acks ackLog
	seen atomic.Int64 // unix nanos: when the current master last answered
	// shards, on a Redis Cluster, watches each shard's master instead of
	// id (replay_cluster.go).
	shards *shardWatch
}

// newReplayer returns the replayer of w, or nil when w's client is neither
// a *redis.Client (a standalone server or a Sentinel-managed master) nor a
// *redis.ClusterClient.
func newReplayer(w *Worker) *replayer {
	var r *replayer
	switch c := w.rdb.(type) {
	case *redis.Client:
		r = &replayer{w: w, id: func(ctx context.Context) (string, error) { return runID(ctx, c) }}
	case *redis.ClusterClient:
		r = &replayer{w: w, shards: newShardWatch(c)}
	default:
		return nil
	}
	return r
}

// runID is the server's run_id: it differs on another server, and on the
// same one after a restart.
func runID(ctx context.Context, c *redis.Client) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v, nil
		}
	}
	return "", errors.New("INFO server has no run_id")
}

// acked records the ack of an applied event at now (finish calls it),
// when the window is on.
func (r *replayer) acked(rep *Report, now time.Time) {
	window := r.w.cfg.FailoverReplayWindow
	if rep.Outcome != Applied || rep.StreamSeq == 0 || window <= 0 {
		return
	}
	keepFrom := r.seen.Load()
	if keepFrom == 0 {
		keepFrom = now.UnixNano()
	}
	r.acks.add(ack{at: now.UnixNano(), seq: rep.StreamSeq}, keepFrom-int64(window))
}

// run asks the master's run_id every HealthInterval until ctx ends, and
// replays when it changes.
func (r *replayer) run(ctx context.Context) {
	if r.shards != nil {
		r.runCluster(ctx)
		return
	}
	interval := r.w.cfg.HealthInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	var current string
	for {
		sent := time.Now()
		pctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		id, err := r.id(pctx)
		cancel()
		if err == nil {
			if current != "" && id != current {
				r.changed(ctx, current, id)
			}
			current = id
			r.seen.Store(sent.UnixNano())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// changed replays the events acked from one window before the old master
// last answered.
func (r *replayer) changed(ctx context.Context, oldID, newID string) {
	log := r.w.log.With(slog.String("old_run_id", oldID), slog.String("new_run_id", newID))
	r.replaySince(ctx, log, time.Unix(0, r.seen.Load()))
}

// replaySince replays the events acked from one window before lastSeen,
// when the old master last answered.
func (r *replayer) replaySince(ctx context.Context, log *slog.Logger, lastSeen time.Time) {
	window := r.w.cfg.FailoverReplayWindow
	if window <= 0 {
		log.Warn("⚠️ Redis master changed; the failover replay is off")
		return
	}
	seqs, truncated := r.acks.since(lastSeen.Add(-window).UnixNano())
	log.Warn("🔁 Redis master changed, replaying the events acked before", slog.Int("events", len(seqs)),
		slog.Duration("window", window), slog.Time("old_master_last_seen", lastSeen))
	if truncated {
		log.Warn("⚠️ more events were acked in the replay window than the worker remembers; the oldest are not replayed",
			slog.Int("remembered", maxAckLog))
	}
	if len(seqs) == 0 {
		return
	}
	start := time.Now()
	st, err := r.w.replay(ctx, seqs)
	attrs := []any{slog.Int("events", st.events), slog.Int64("removed", st.removed), slog.Int("missing", st.missing),
		slog.Int("failed", st.failed), slog.Duration("took", time.Since(start))}
	switch {
	case err != nil && ctx.Err() == nil:
		log.Error("❌ failover replay stopped", append(attrs, slog.Any("error", err))...)
	case st.missing > 0 || st.failed > 0:
		log.Warn("⚠️ failover replay done, with events it could not replay", attrs...)
	case err == nil:
		log.Info("✅ failover replay done", attrs...)
	}
}

// replayStats count what a replay did.
type replayStats struct {
	events  int   // events whose plans ran again
	removed int64 // keys removed
	missing int   // sequences no longer in the stream
	failed  int   // events whose jobs failed
}

// replay reads the events seqs (sorted) from the stream with an ordered
// consumer and runs their plans through the engine again, BatchSize events
// at a time. It acks nothing: the events were acked already.
func (w *Worker) replay(ctx context.Context, seqs []uint64) (replayStats, error) {
	var st replayStats
	want := make(map[uint64]bool, len(seqs))
	for _, s := range seqs {
		want[s] = true
	}
	last := seqs[len(seqs)-1]
	cons, err := w.js.OrderedConsumer(ctx, w.cfg.Stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seqs[0],
	})
	if err != nil {
		return st, fmt.Errorf("replay: ordered consumer on %q: %w", w.cfg.Stream, err)
	}
	for done := false; !done && ctx.Err() == nil; {
		// At most the events still wanted: a fetch returns when it is full,
		// instead of waiting FetchMaxWait for messages the replay does not need.
		batch, err := cons.Fetch(min(w.cfg.BatchSize, len(want)), jetstream.FetchMaxWait(w.cfg.FetchMaxWait))
		if err != nil {
			return st, fmt.Errorf("replay: fetch: %w", err)
		}
		var jobs []engine.Job
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil || !want[meta.Sequence.Stream] {
				continue
			}
			delete(want, meta.Sequence.Stream)
			done = done || meta.Sequence.Stream >= last
			var d delivery
			w.prepare(&d, msg)
			if d.rep.Err == nil && !d.plan.Empty() {
				jobs = append(jobs, engine.Job{Exact: d.plan.Exact, Patterns: d.plan.Patterns})
			}
		}
		removed, failed := w.reapply(ctx, jobs)
		st.events, st.removed, st.failed = st.events+len(jobs), st.removed+removed, st.failed+failed
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return st, fmt.Errorf("replay: fetch: %w", err)
		}
		done = done || n == 0 // the stream has nothing more
	}
	st.missing = len(want)
	return st, ctx.Err()
}

// reapply runs jobs through the engine, waiting out Redis outages and
// refused permissions as the handlers do (retryApply); it returns the keys
// removed and how many jobs failed.
func (w *Worker) reapply(ctx context.Context, jobs []engine.Job) (removed int64, failed int) {
	var mu sync.Mutex
	w.retryApply(ctx, jobs, func(_ int, res engine.Result) {
		mu.Lock()
		removed += res.Removed
		mu.Unlock()
	}, func(_ int, err error) {
		if err == nil {
			return
		}
		mu.Lock()
		failed++
		mu.Unlock()
		w.log.Warn("⚠️ failover replay of an event failed", slog.Any("error", err))
	})
	return removed, failed
}
