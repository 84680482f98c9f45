package cdc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/invalidator/invalidator/events"
	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// decodeObject parses content as exactly one JSON object, numbers kept as
// written.
func decodeObject(content []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(content))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, errors.New("null")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data")
	}
	return obj, nil
}

// batch is one committed transaction's events on their way to JetStream.
type batch struct {
	seq        int           // 1 for the first transaction with events this process published
	endLSN     pglogrepl.LSN // what to confirm once every event is acknowledged; 0 for none
	commitTime time.Time
	msgs       []*nats.Msg
	futs       []jetstream.PubAckFuture
	acked      int       // futs[:acked] are acknowledged
	retryAt    time.Time // when futs[acked] failed: when to send it again
}

// publisher publishes batches asynchronously, in order, and hands them
// back in order once each is wholly acknowledged: the confirm rule needs
// the longest acknowledged prefix. It is used by one goroutine.
type publisher struct {
	js       jetstream.JetStream
	pub      *events.Publisher
	slot     string
	source   string // urn:invalidator:cdc:<system id>/<database>/<slot>
	max      int
	log      *slog.Logger
	queue    []*batch
	inflight int
	seq      int
	failing  bool // a publish failed and has not succeeded since (for one log line per episode)
	fail     failPoint
}

type failPoint struct {
	name string
	n    int
}

// hit kills the process at the named point of batch seq, for crash tests.
func (f failPoint) hit(name string, seq int, log *slog.Logger) {
	if f.name == name && f.n == seq {
		log.Warn("⚠️ fail point reached: killing the process", slog.String("point", name), slog.Int("transaction", seq))
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal ends the process
	}
}

// messages turns a transaction's events into NATS messages with their ids.
func (p *publisher) messages(changes []change, commitLSN pglogrepl.LSN, commitTime time.Time) ([]*nats.Msg, error) {
	msgs := make([]*nats.Msg, 0, len(changes))
	for i, c := range changes {
		id := eventID(p.slot, commitLSN, i)
		if c.raw != nil { // published as it is, for the worker to dead-letter with the reason
			m := nats.NewMsg(c.subject())
			m.Data = c.raw
			m.Header.Set(events.HeaderMsgID, id)
			msgs = append(msgs, m)
			continue
		}
		data := c.data
		if data == nil {
			data = map[string]any{}
		}
		if m, ok := rowMessage(c.subject(), id, p.source, commitTime.UTC(), data); ok {
			msgs = append(msgs, m)
			continue
		}
		ev := events.Event{ID: id, Source: p.source, Subject: c.subject(), Type: c.subject(), SpecVersion: events.SpecVersion,
			Time: commitTime.UTC(), Data: data, CloudEvent: true}
		m, err := p.pub.Message(ev)
		if err != nil {
			return nil, fmt.Errorf("cdc: event %s: %w", id, err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// submit publishes b's messages, waiting while MaxInFlight publishes are
// unacknowledged; wait is called now and then while it waits, to keep the
// replication connection's status flowing.
func (p *publisher) submit(ctx context.Context, b *batch, wait func() error) error {
	if len(b.msgs) > 0 {
		p.seq++
		b.seq = p.seq
	}
	b.futs = make([]jetstream.PubAckFuture, len(b.msgs))
	p.queue = append(p.queue, b)
	half := len(b.msgs) / 2
	for i, m := range b.msgs {
		for p.inflight >= p.max {
			if err := p.waitOldest(ctx, wait); err != nil {
				return err
			}
		}
		if p.fail.name == "mid-publish" && p.fail.n == b.seq && i == max(half, 1) {
			if err := p.drain(ctx, wait, b, i); err != nil {
				return err
			}
			p.fail.hit("mid-publish", b.seq, p.log)
		}
		if err := p.send(ctx, b, i, m); err != nil {
			return err
		}
	}
	return nil
}

// drain waits until b's first n events are acknowledged.
func (p *publisher) drain(ctx context.Context, wait func() error, b *batch, n int) error {
	for b.acked < n {
		if err := p.waitOldest(ctx, wait); err != nil {
			return err
		}
	}
	return nil
}

// send publishes message i of b, retrying while the client refuses it at
// once (a full reconnect buffer, say). The first attempt sends m itself;
// later ones a copy, since a publish sets the reply subject of what it sends.
func (p *publisher) send(ctx context.Context, b *batch, i int, m *nats.Msg) error {
	for attempt := 0; ; attempt++ {
		out := m
		if attempt > 0 || b.futs[i] != nil {
			out = clone(m)
		}
		fut, err := p.js.PublishMsgAsync(out)
		if err == nil {
			b.futs[i] = fut
			p.inflight++
			return nil
		}
		p.failed(err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff(attempt)):
		}
	}
}

func backoff(attempt int) time.Duration {
	return min(50*time.Millisecond<<min(attempt, 5), time.Second)
}

// clone copies m, since a publish sets the reply subject of the message it sends.
func clone(m *nats.Msg) *nats.Msg {
	c := nats.NewMsg(m.Subject)
	c.Data = m.Data
	for k, v := range m.Header {
		c.Header[k] = v
	}
	return c
}

func (p *publisher) failed(err error) {
	if !p.failing {
		p.failing = true
		p.log.Warn("⚠️ publish to JetStream failed; sending again with the same ids", slog.Any("error", err))
	}
}

// poll takes the acknowledgements that have arrived without waiting, and
// returns the batches at the head of the queue that are complete, in order.
func (p *publisher) poll(ctx context.Context) ([]*batch, error) {
	var done []*batch
	for len(p.queue) > 0 {
		b := p.queue[0]
		if _, err := p.advance(ctx, b, false); err != nil {
			return done, err
		}
		if b.acked < len(b.msgs) {
			return done, nil
		}
		p.queue = p.queue[1:]
		done = append(done, b)
	}
	return done, nil
}

// advance takes b's acknowledgements in order; with block it waits for
// one step (an ack, an error, or the retry time), else it only looks.
func (p *publisher) advance(ctx context.Context, b *batch, block bool) (bool, error) {
	progressed := false
	for b.acked < len(b.futs) {
		fut := b.futs[b.acked]
		if fut == nil { // not sent yet: submit is still under way
			return progressed, nil
		}
		if !b.retryAt.IsZero() {
			if wait := time.Until(b.retryAt); wait > 0 {
				if !block {
					return progressed, nil
				}
				select {
				case <-ctx.Done():
					return progressed, ctx.Err()
				case <-time.After(wait):
				}
			}
			b.retryAt = time.Time{}
			p.inflight--
			if err := p.send(ctx, b, b.acked, b.msgs[b.acked]); err != nil {
				return progressed, err
			}
			continue
		}
		var ok bool
		var err error
		if block {
			select {
			case <-fut.Ok():
				ok = true
			case err = <-fut.Err():
			case <-ctx.Done():
				return progressed, ctx.Err()
			case <-time.After(time.Second):
				return progressed, nil
			}
		} else {
			select {
			case <-fut.Ok():
				ok = true
			case err = <-fut.Err():
			default:
				return progressed, nil
			}
		}
		if !ok {
			p.failed(err)
			b.retryAt = time.Now().Add(backoff(0))
			continue
		}
		if p.failing {
			p.failing = false
			p.log.Info("✅ publishing to JetStream again")
		}
		b.acked++
		p.inflight--
		progressed = true
		if block {
			return progressed, nil
		}
	}
	return progressed, nil
}

// waitOldest blocks until the oldest unacknowledged publish moves on (or
// a second passes), calling wait after each step.
func (p *publisher) waitOldest(ctx context.Context, wait func() error) error {
	for _, b := range p.queue {
		if b.acked < len(b.futs) && b.futs[b.acked] != nil {
			if _, err := p.advance(ctx, b, true); err != nil {
				return err
			}
			return wait()
		}
	}
	return wait()
}

// idle reports whether nothing is waiting for an acknowledgement.
func (p *publisher) idle() bool { return len(p.queue) == 0 }
