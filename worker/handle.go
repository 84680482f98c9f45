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
	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/events"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a dead letter (see package deadletter, which writes and reads them).
const (
	HeaderError      = deadletter.HeaderError
	HeaderDeliveries = deadletter.HeaderDeliveries
	HeaderStreamSeq  = deadletter.HeaderStreamSeq
	// HeaderOriginalMsgID keeps the event's Nats-Msg-Id.
	HeaderOriginalMsgID = deadletter.HeaderOriginalMsgID
)

// maxTransientRetries bounds how often one delivery waits out a Redis outage
// and tries again before it is nak'ed for redelivery.
const maxTransientRetries = 1000

// delivery is one message on its way through the handler.
type delivery struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	ev   events.Event
	plan cachekeys.Plan
	rep  Report
	done atomic.Bool
	// capture is the engine's capture of a sampled event's attempts (merged),
	// for the consistency checker; nil when not sampled.
	capture *engine.Capture
}

// handleGroup settles a group of deliveries: malformed and rejected ones at
// once, the others after one pass of the engine over all their jobs. The
// deliveries with patterns are handed to a goroutine of their own (see
// sweepWaits) and the handler returns without waiting for their sweep.
func (w *Worker) handleGroup(ctx context.Context, msgs []jetstream.Msg) {
	start := time.Now()
	all := make([]delivery, len(msgs)) // one allocation for the group's deliveries
	work := make([]*delivery, 0, len(msgs))
	var swept []*delivery
	for i, msg := range msgs {
		d := &all[i]
		w.prepare(d, msg)
		switch {
		case d.rep.Err != nil || d.plan.Empty():
			w.finish(ctx, d, start)
		case len(d.plan.Patterns) > 0:
			swept = append(swept, d)
		default:
			work = append(work, d)
		}
	}
	if len(swept) > 0 {
		n := int64(len(swept))
		w.stats.busy.Add(n) // still in flight after the handler returns
		w.waits.Go(func() {
			defer w.stats.busy.Add(-n)
			w.apply(ctx, swept, start)
		})
	}
	w.apply(ctx, work, start)
}

// prepare fills the zero delivery d with msg, its decoded event and the plan
// of its keys; a failure is permanent.
func (w *Worker) prepare(d *delivery, msg jetstream.Msg) {
	subject := msg.Subject()
	d.msg, d.rep.Subject = msg, subject
	if meta, err := msg.Metadata(); err == nil {
		d.meta, d.rep.Deliveries, d.rep.StreamSeq = meta, meta.NumDelivered, meta.Sequence.Stream
	}
	ev, err := events.Decode(subject, msg.Headers().Get(events.HeaderMsgID), msg.Data())
	if err != nil {
		d.rep.Err = permanent{err}
		return
	}
	d.ev, d.rep.ID = ev, ev.ID
	if d.plan, err = w.rules.Plan(ev.Subject, ev.Data); err != nil {
		d.rep.Err = permanent{err}
	}
	d.rep.Rules = d.plan.Rules
	if err == nil && d.plan.Empty() {
		d.rep.Outcome = Unrouted
	}
}

// apply runs the deliveries' jobs through the engine and settles each as soon
// as its keys are gone. While Redis is unreachable it holds the deliveries
// that failed (telling the server they are still in progress) and tries them
// again when Redis is back, so an outage burns no delivery attempts.
func (w *Worker) apply(ctx context.Context, work []*delivery, start time.Time) {
	if len(work) == 0 {
		return
	}
	stop := w.keepAlive(ctx, work)
	defer stop()
	jobs := make([]engine.Job, len(work))
	for i, d := range work {
		jobs[i] = engine.Job{Exact: d.plan.Exact, Patterns: d.plan.Patterns}
		if w.checker != nil {
			jobs[i].Capture = w.checker.Sampled()
		}
	}
	w.retryApply(ctx, jobs, func(i int, res engine.Result) {
		work[i].rep.Result.Add(res)
		work[i].rep.Duration += res.Duration
		if res.Capture != nil { // an earlier failed attempt's displaced tokens are kept
			work[i].capture = work[i].capture.Merge(res.Capture)
		}
	}, func(i int, err error) {
		work[i].rep.Err = err
		w.finish(ctx, work[i], start)
	})
}

// retryApply runs jobs through the engine until each has its outcome; the
// handlers and the failover replay share it. A job that failed because
// Redis is unreachable, or refuses a permission the worker needs, is
// waited out: the gate pauses fetching (and says why) until Redis answers
// or grants it, then the job runs again, at most maxTransientRetries
// times. Our own EventTimeout is not an outage. each gets every attempt's
// result of job i, done its final error (nil when applied; the gate's when
// ctx ended during a wait) once. Both are called concurrently for
// different jobs.
func (w *Worker) retryApply(ctx context.Context, jobs []engine.Job, each func(i int, res engine.Result), done func(i int, err error)) {
	idx := make([]int, len(jobs)) // the original index of each job still to run
	for i := range idx {
		idx[i] = i
	}
	for try := 0; len(jobs) > 0; try++ {
		var (
			mu     sync.Mutex
			again  []int
			denied error
			anyOK  bool
		)
		actx, cancel := context.WithTimeout(ctx, w.cfg.EventTimeout)
		w.engine.Apply(actx, jobs, func(i int, res engine.Result, err error) {
			each(idx[i], res)
			perm := permissionDenied(err)
			if (transient(err) || perm) && actx.Err() == nil && ctx.Err() == nil && try < maxTransientRetries {
				mu.Lock()
				again = append(again, i)
				if perm {
					denied = err
				}
				mu.Unlock()
				return
			}
			if err == nil {
				mu.Lock()
				anyOK = true
				mu.Unlock()
			}
			done(idx[i], err)
		})
		cancel()
		if anyOK && denied == nil {
			w.gate.Granted()
		}
		if len(again) == 0 {
			return
		}
		if denied != nil {
			w.gate.Deny(denied)
		} else {
			w.gate.Fail()
		}
		next, nextIdx := make([]engine.Job, len(again)), make([]int, len(again))
		for k, i := range again {
			next[k], nextIdx[k] = jobs[i], idx[i]
		}
		if err := w.gate.Wait(ctx); err != nil {
			for _, i := range nextIdx {
				done(i, err)
			}
			return
		}
		jobs, idx = next, nextIdx
	}
}

// keepAlive sends progress signals so the server does not redeliver events
// whose invalidation takes long or waits out an outage.
func (w *Worker) keepAlive(ctx context.Context, work []*delivery) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(w.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for _, d := range work {
					if !d.done.Load() {
						_ = d.msg.InProgress()
					}
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// finish settles a delivery, records and logs it.
func (w *Worker) finish(ctx context.Context, d *delivery, start time.Time) {
	d.done.Store(true)
	w.settle(ctx, d.msg, d.meta, &d.rep)
	now := time.Now() // one clock read for the lag, the ack log, the stats and the log
	if w.replayer != nil {
		w.replayer.acked(&d.rep, now)
	}
	d.rep.Lag = lag(now, d.ev.Time, d.meta)
	if d.rep.Outcome == Applied && w.warmer != nil && len(d.plan.WarmSkipped) > 0 {
		w.warmer.Skip(ctx, d.plan.WarmSkipped, slog.String("subject", d.msg.Subject()), slog.String("id", d.ev.ID))
	}
	if d.rep.Outcome == Applied && w.warmer != nil && len(d.plan.Warm) > 0 {
		w.warmer.Enqueue(d.plan.Warm) // never blocks the handler
	}
	if d.rep.Outcome == Applied && d.capture != nil {
		w.checker.Submit(consistency.Sample{EventID: d.ev.ID, Subject: d.rep.Subject, Applied: now,
			Exact: d.plan.Exact, Capture: d.capture}) // never blocks: a full queue drops the sample
	}
	w.record(d.rep, now)
	w.logReport(d.rep, now.Sub(start))
}

// lag is the time from t (or, when t is zero, the message's publication)
// to now; zero if neither is known.
func lag(now, t time.Time, meta *jetstream.MsgMetadata) time.Duration {
	if t.IsZero() && meta != nil {
		t = meta.Timestamp
	}
	if t.IsZero() {
		return 0
	}
	return max(now.Sub(t), 0)
}

// settle acks, naks or dead-letters the message according to rep.Err and
// sets rep.Outcome.
func (w *Worker) settle(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, rep *Report) {
	err := rep.Err
	switch {
	case err == nil:
		if rep.Outcome != Unrouted {
			rep.Outcome = Applied
		}
		if aerr := msg.Ack(); aerr != nil {
			w.log.Warn("⚠️ ack failed, the event will be redelivered", slog.String("subject", rep.Subject), slog.Any("error", aerr))
		}
	case ctx.Err() != nil:
		rep.Outcome = Abandoned
		_ = msg.Nak()
	case errors.Is(err, ErrPermanent) || meta == nil || meta.NumDelivered >= uint64(w.cfg.MaxDeliver):
		rep.Outcome = DeadLettered
		if derr := w.deadLetter(ctx, msg, meta, err); derr != nil {
			rep.Outcome = Retried
			rep.Err = fmt.Errorf("%w (dead letter failed: %w)", err, derr)
			_ = msg.NakWithDelay(w.cfg.backoff(rep.Deliveries))
		}
	default:
		rep.Outcome = Retried
		_ = msg.NakWithDelay(w.cfg.backoff(rep.Deliveries))
	}
}

// deadLetter publishes the event to <prefix>.<subject> with the reason and
// terminates it. The publish is deduplicated by the stream sequence, so a
// repeat after a failed term stores one dead letter.
func (w *Worker) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, reason error) error {
	ev := deadletter.Event{Subject: msg.Subject(), Body: msg.Data(), Header: msg.Headers(), Stream: w.cfg.Stream}
	if meta != nil {
		ev.StreamSeq, ev.Deliveries = meta.Sequence.Stream, meta.NumDelivered
	}
	dl := deadletter.Encode(w.cfg.DeadLetterPrefix, ev, kindOf(reason), reason)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := w.js.PublishMsg(pctx, dl); err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	if !w.termReason.Load() {
		// Servers before 2.10.4 ignore "+TERM <reason>" and would redeliver
		// the event; the reason is in the dead letter's HeaderError.
		return msg.Term()
	}
	return msg.TermWithReason(truncate(reason.Error(), 200))
}

// kindOf classifies the reason of a dead letter.
func kindOf(reason error) deadletter.Kind {
	switch {
	case errors.Is(reason, events.ErrMalformed):
		return deadletter.Malformed
	case errors.Is(reason, ErrPermanent):
		return deadletter.Rejected
	}
	return deadletter.Failed
}

func (w *Worker) record(rep Report, now time.Time) {
	switch rep.Outcome {
	case Applied:
		w.stats.applied.Add(1)
	case DeadLettered:
		w.stats.deadLettered.Add(1)
	case Retried:
		w.stats.retried.Add(1)
	case Unrouted:
		w.stats.unrouted.Add(1)
	}
	w.stats.keysRemoved.Add(rep.Removed)
	w.stats.lastEvent.Store(now.UnixNano())
	w.obs.EventDone(rep)
}

func (w *Worker) logReport(rep Report, d time.Duration) {
	level := slog.LevelInfo
	switch rep.Outcome {
	case DeadLettered:
		level = slog.LevelError
	case Retried, Abandoned:
		level = slog.LevelWarn
	}
	if !w.log.Enabled(context.Background(), level) {
		return // the attributes cost more than the event at 100k events/s
	}
	attrs := []slog.Attr{slog.String("subject", rep.Subject)}
	if rep.ID != "" {
		attrs = append(attrs, slog.String("id", rep.ID))
	}
	attrs = append(attrs, slog.Uint64("seq", rep.StreamSeq),
		slog.Int64("removed", rep.Removed), slog.Int64("scanned", rep.Scanned),
		slog.Float64("ms", float64(d.Microseconds())/1000), slog.Uint64("delivery", rep.Deliveries))
	ctx := context.Background()
	switch rep.Outcome {
	case Applied:
		w.log.LogAttrs(ctx, slog.LevelInfo, "🗑️ event applied", attrs...)
	case Unrouted:
		w.log.LogAttrs(ctx, slog.LevelInfo, "🔍 event matched no rule", attrs...)
	case DeadLettered:
		w.log.LogAttrs(ctx, slog.LevelError, "❌ event dead-lettered", append(attrs, slog.Any("error", rep.Err))...)
	case Retried:
		w.log.LogAttrs(ctx, slog.LevelWarn, "⚠️ event failed, will retry", append(attrs, slog.Any("error", rep.Err))...)
	case Abandoned:
		w.log.LogAttrs(ctx, slog.LevelWarn, "⚠️ event not finished before shutdown, nak'ed", attrs...)
	}
}
