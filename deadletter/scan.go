package deadletter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// scanBatch is how many letters a scan asks the server for at a time.
const scanBatch = 2000

// scanIdle bounds the wait for the next letter: a scan that waits that
// long has read them all (the last ones were deleted under it).
const scanIdle = 2 * time.Second

// errStopScan, returned by scan's fn, ends the scan without an error.
var errStopScan = errors.New("deadletter: stop the scan")

// headerMsgSize is the header a headers-only delivery carries in place of
// the body; it is not one of the event's headers.
const headerMsgSize = "Nats-Msg-Size"

// scan calls fn with each letter f selects, oldest first, reading the
// stream through an ordered consumer filtered to f.Subject. withBody
// false asks the server for headers only (unless f needs the body to
// match), which is what a count or a page of the list needs. It reads at
// most MaxScan messages, and stops at the last message the stream held
// when it started. It starts at the sequence from (0: the first), and
// stops early, with no error, when fn returns errStopScan.
func (s *Store) scan(ctx context.Context, f Filter, withBody bool, from uint64, fn func(Letter) error) error {
	st, err := s.handle(ctx)
	if err != nil {
		return err
	}
	subject := s.prefix + ".>"
	if f.Subject != "" {
		subject = s.prefix + "." + f.Subject
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return fmt.Errorf("dead-letter stream %q: %w", s.stream, err)
	}
	if info.State.Msgs == 0 || (f.Subject != "" && info.State.Subjects[subject] == 0) {
		return nil
	}
	last := info.State.LastSeq
	if from > last {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		HeadersOnly:    !withBody && !f.needsBody(),
		// gone soon if the delete below cannot reach the server
		InactiveThreshold: 10 * time.Second,
	}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := s.js.OrderedConsumer(ctx, s.stream, cfg)
	if err != nil {
		return fmt.Errorf("read dead-letter stream %q: %w", s.stream, err)
	}
	defer func() {
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = s.js.DeleteConsumer(dctx, s.stream, ci.Name)
			cancel()
		}
	}()
	it, err := cons.Messages(jetstream.PullMaxMessages(scanBatch))
	if err != nil {
		return fmt.Errorf("read dead-letter stream %q: %w", s.stream, err)
	}
	defer it.Stop()
	now := time.Now()
	for range MaxScan {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := it.Next(jetstream.NextMaxWait(scanIdle))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			return nil // the rest was deleted under the scan
		}
		if err != nil {
			return fmt.Errorf("read dead-letter stream %q: %w", s.stream, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		raw := &jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: meta.Sequence.Stream, Header: m.Headers(),
			Data: m.Data(), Time: meta.Timestamp}
		if l, err := Decode(s.prefix, raw); err == nil && f.match(l, now) {
			delete(l.Header, headerMsgSize)
			if err := fn(l); errors.Is(err, errStopScan) {
				return nil
			} else if err != nil {
				return err
			}
		}
		if meta.NumPending == 0 || meta.Sequence.Stream >= last {
			return nil
		}
	}
	return nil
}

// Page is one page of the letters a filter selects, with the counts of
// the whole selection.
type Page struct {
	// Letters are the page's letters, oldest first, with headers but
	// without bodies (Get reads one whole).
	Letters []Letter
	// Matched is the number of letters the filter selects.
	Matched int
	// ByKind counts, per kind of reason, the letters the filter selects
	// when its Kind is left out: what each kind would show.
	ByKind map[Kind]int
}

// Page returns the letters f selects from offset on, at most limit of
// them, and counts the whole selection in the same pass. It keeps only
// the page in memory: one pass over the stream's headers (and bodies when
// f has a Text), filtered to f.Subject by the server.
func (s *Store) Page(ctx context.Context, f Filter, offset, limit int) (Page, error) {
	p := Page{ByKind: map[Kind]int{}}
	kind := f.Kind
	f.Kind = ""
	f.Seqs = nil
	err := s.scan(ctx, f, false, 0, func(l Letter) error {
		p.ByKind[l.Kind]++
		if kind != "" && l.Kind != kind {
			return nil
		}
		if p.Matched >= offset && len(p.Letters) < limit {
			p.Letters = append(p.Letters, l)
		}
		p.Matched++
		return nil
	})
	return p, err
}
