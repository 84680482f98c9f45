package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a dead letter.
const (
	HeaderError      = "Invalidator-Error"
	HeaderDeliveries = "Invalidator-Deliveries"
	HeaderStreamSeq  = "Invalidator-Stream-Seq"
	// HeaderOriginalMsgID keeps the event's Nats-Msg-Id.
	HeaderOriginalMsgID = "Invalidator-Original-Msg-Id"
)

// maxTransientRetries bounds how often one delivery waits out a Redis outage
// and tries again before it is nak'ed.
const maxTransientRetries = 1000

// ErrPermanent marks an event that no retry can apply (malformed or
// rejected): it is dead-lettered at once. Check with errors.Is.
var ErrPermanent = errors.New("permanent failure")

// permanent wraps err so that errors.Is(err, ErrPermanent) holds while the
// message stays err's own.
type permanent struct{ error }

func (p permanent) Is(target error) bool { return target == ErrPermanent }
func (p permanent) Unwrap() error        { return p.error }

// handle settles one delivery: ack, nak with backoff, or dead letter + term.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	start := time.Now()
	rep := Report{Subject: msg.Subject()}
	meta, err := msg.Metadata()
	if err == nil {
		rep.Deliveries = meta.NumDelivered
	}
	ev, err := w.decode(msg)
	if err == nil {
		rep.ID = ev.ID
		var plan cachekeys.Plan
		plan, err = w.plan(ev)
		rep.Rules = plan.Rules
		if err == nil && plan.Empty() {
			rep.Outcome = Unrouted
			err = msg.Ack()
		} else if err == nil {
			rep.Result, err = w.apply(ctx, msg, plan)
		}
	}
	rep.Err = err
	w.settle(ctx, msg, meta, &rep)
	rep.Lag = since(ev.Time, meta)
	w.record(rep)
	w.logReport(rep, time.Since(start))
}

func since(t time.Time, meta *jetstream.MsgMetadata) time.Duration {
	if t.IsZero() && meta != nil {
		t = meta.Timestamp
	}
	if t.IsZero() {
		return 0
	}
	return max(time.Since(t), 0)
}

func (w *Worker) decode(msg jetstream.Msg) (events.Event, error) {
	ev, err := events.Decode(msg.Subject(), msg.Headers().Get(events.HeaderMsgID), msg.Data())
	if err != nil {
		return ev, permanent{err}
	}
	return ev, nil
}

func (w *Worker) plan(ev events.Event) (cachekeys.Plan, error) {
	p, err := w.rules.Plan(ev.Subject, ev.Data)
	if err != nil {
		return p, permanent{err}
	}
	return p, nil
}

// apply runs the plan through the engine. While Redis is unreachable it
// holds the event (telling the server it is still in progress) and tries
// again when Redis is back, so an outage burns no delivery attempts.
func (w *Worker) apply(ctx context.Context, msg jetstream.Msg, plan cachekeys.Plan) (Result, error) {
	job := Job{Exact: plan.Exact, Patterns: plan.Patterns}
	stop := w.keepAlive(ctx, msg)
	defer stop()
	var total Result
	for try := 0; ; try++ {
		actx, cancel := context.WithTimeout(ctx, w.cfg.EventTimeout)
		res, err := w.engine.Invalidate(actx, job)
		cancel()
		total.add(res)
		total.Duration += res.Duration
		if err == nil || !transient(err) || ctx.Err() != nil || try >= maxTransientRetries {
			return total, err
		}
		w.gate.Fail()
		if werr := w.gate.Wait(ctx); werr != nil {
			return total, err
		}
	}
}

// keepAlive sends progress signals so the server does not redeliver an event
// whose invalidation takes long or waits out an outage.
func (w *Worker) keepAlive(ctx context.Context, msg jetstream.Msg) (stop func()) {
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
				_ = msg.InProgress()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// settle acks, naks or dead-letters the message according to rep.Err and
// sets rep.Outcome.
func (w *Worker) settle(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, rep *Report) {
	err := rep.Err
	switch {
	case err == nil && rep.Outcome == Unrouted:
		return
	case err == nil:
		rep.Outcome = Applied
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
	dl := nats.NewMsg(w.cfg.DeadLetterPrefix + "." + msg.Subject())
	dl.Data = msg.Data()
	for k, v := range msg.Headers() {
		if !strings.HasPrefix(k, "Nats-") { // Nats-Expected-* would refuse the publish
			dl.Header[k] = v
		}
	}
	if id := msg.Headers().Get(nats.MsgIdHdr); id != "" {
		dl.Header.Set(HeaderOriginalMsgID, id)
	}
	dl.Header.Set(HeaderError, reason.Error())
	var seq, delivered uint64
	if meta != nil {
		seq, delivered = meta.Sequence.Stream, meta.NumDelivered
	}
	dl.Header.Set(HeaderDeliveries, strconv.FormatUint(delivered, 10))
	dl.Header.Set(HeaderStreamSeq, strconv.FormatUint(seq, 10))
	dl.Header.Set(nats.MsgIdHdr, fmt.Sprintf("dlq:%s:%d", w.cfg.Stream, seq))
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := w.js.PublishMsg(pctx, dl); err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	reasonText := reason.Error()
	if len(reasonText) > 200 {
		reasonText = reasonText[:200]
	}
	return msg.TermWithReason(reasonText)
}

func (w *Worker) record(rep Report) {
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
	w.stats.lastEvent.Store(time.Now().UnixNano())
	w.obs.EventDone(rep)
}

func (w *Worker) logReport(rep Report, d time.Duration) {
	attrs := []slog.Attr{
		slog.String("subject", rep.Subject), slog.String("id", rep.ID),
		slog.Int64("removed", rep.Removed), slog.Int64("scanned", rep.Scanned),
		slog.Float64("ms", float64(d.Microseconds())/1000), slog.Uint64("delivery", rep.Deliveries),
	}
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
