package deadletter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MaxScan bounds the messages one List reads.
const MaxScan = 1_000_000

// Store reads and removes the letters of one dead-letter stream.
type Store struct {
	js             jetstream.JetStream
	stream, prefix string

	mu sync.Mutex
	st jetstream.Stream // the stream's handle, once looked up
}

// handle returns the stream's handle, looking it up once: every call on
// it names the stream, so deleting a letter costs one request, not two.
func (s *Store) handle(ctx context.Context) (jetstream.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st != nil {
		return s.st, nil
	}
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %q: %w", s.stream, err)
	}
	s.st = st
	return st, nil
}

// NewStore returns the store of the dead-letter stream named stream, whose
// letters are published under prefix ("dlq").
func NewStore(js jetstream.JetStream, stream, prefix string) *Store {
	return &Store{js: js, stream: stream, prefix: prefix}
}

// Filter selects letters; its zero value selects all.
type Filter struct {
	// Seqs, when set, are the letters' sequences.
	Seqs []uint64
	// Subject, when set, is the original subject (exactly).
	Subject string
	// Reason, when set, is a text the reason must contain (case-insensitive).
	Reason string
	// Since, when set, keeps the letters written in the last Since.
	Since time.Duration
	// Kind, when set, is the kind of reason.
	Kind Kind
	// Text, when set, is a text the reason or the body must contain
	// (case-insensitive).
	Text string
}

// needsBody reports whether matching f reads the letters' bodies.
func (f Filter) needsBody() bool { return f.Text != "" }

func (f Filter) match(l Letter, now time.Time) bool {
	switch {
	case len(f.Seqs) > 0 && !slices.Contains(f.Seqs, l.Seq):
		return false
	case f.Subject != "" && l.Subject != f.Subject:
		return false
	case f.Reason != "" && !strings.Contains(strings.ToLower(l.Reason), strings.ToLower(f.Reason)):
		return false
	case f.Since > 0 && now.Sub(l.Time) > f.Since:
		return false
	case f.Kind != "" && l.Kind != f.Kind:
		return false
	case f.Text != "" && !containsFold(l.Reason, f.Text) && !containsFold(string(l.Body), f.Text):
		return false
	}
	return true
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// List calls fn with each letter f selects, oldest first, until fn
// returns an error (which List returns). Messages that are not letters are
// skipped. Without f.Seqs it reads the stream through an ordered consumer
// in batches (filtered to f.Subject on the server), so it holds one batch
// in memory at a time, whatever the stream's size.
func (s *Store) List(ctx context.Context, f Filter, fn func(Letter) error) error {
	if len(f.Seqs) == 0 {
		return s.scan(ctx, f, true, 0, fn)
	}
	st, err := s.handle(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, q := range f.Seqs {
		m, err := st.GetMsg(ctx, q)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read letter %d: %w", q, err)
		}
		l, err := Decode(s.prefix, m)
		if err != nil || !f.match(l, now) {
			continue
		}
		if err := fn(l); err != nil {
			return err
		}
	}
	return nil
}

// ErrNoLetter means no letter has that sequence.
var ErrNoLetter = errors.New("deadletter: no such letter")

// Get returns the letter seq.
func (s *Store) Get(ctx context.Context, seq uint64) (Letter, error) {
	st, err := s.handle(ctx)
	if err != nil {
		return Letter{}, err
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Letter{}, fmt.Errorf("%w: %d", ErrNoLetter, seq)
	}
	if err != nil {
		return Letter{}, fmt.Errorf("read letter %d: %w", seq, err)
	}
	return Decode(s.prefix, m)
}

// Delete removes the letter seq.
func (s *Store) Delete(ctx context.Context, seq uint64) error {
	st, err := s.handle(ctx)
	if err != nil {
		return err
	}
	if err := st.DeleteMsg(ctx, seq); err != nil {
		return fmt.Errorf("delete letter %d: %w", seq, err)
	}
	return nil
}

// Stats summarise the letters.
type Stats struct {
	// Total is the number of letters.
	Total int `json:"total"`
	// ByKind counts them by kind of reason.
	ByKind map[Kind]int `json:"by_kind"`
	// Oldest is the time of the oldest letter, zero when there is none.
	Oldest time.Time `json:"oldest,omitzero"`
}

// Stats counts the letters by kind and finds the oldest.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	st := Stats{ByKind: map[Kind]int{}}
	err := s.List(ctx, Filter{}, func(l Letter) error {
		st.Total++
		st.ByKind[l.Kind]++
		if st.Oldest.IsZero() || l.Time.Before(st.Oldest) {
			st.Oldest = l.Time
		}
		return nil
	})
	return st, err
}

// Count is the number of messages in the dead-letter stream, cheap enough
// for a gauge read at every scrape.
func (s *Store) Count(ctx context.Context) (uint64, error) {
	st, err := s.handle(ctx)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}
