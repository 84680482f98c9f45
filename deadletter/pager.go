package deadletter

import (
	"context"
	"fmt"
	"sync"
)

// pagerEntries bounds the filters a Pager remembers.
const pagerEntries = 32

// Pager is Store.Page with a memory: for each filter it keeps the counts
// and the sequence at which each page starts, as long as the stream has
// not changed (same first and last sequence, same number of messages).
// The next page of the same filter is then read from its first letter,
// without counting again: a few page sizes of messages instead of the
// whole stream. It holds a few bytes per page, never the letters. Safe
// for concurrent use.
type Pager struct {
	s       *Store
	mu      sync.Mutex
	entries map[pagerKey]*pagerEntry
	order   []pagerKey // oldest first, for eviction
	hits    int        // pages served from memory, for tests
}

type pagerKey struct {
	subject, text     string
	kind              Kind
	limit             int
	first, last, msgs uint64
}

type pagerEntry struct {
	matched int
	byKind  map[Kind]int
	starts  []uint64 // starts[i] is the sequence of page i's first letter
}

// NewPager returns a pager over s.
func NewPager(s *Store) *Pager { return &Pager{s: s, entries: map[pagerKey]*pagerEntry{}} }

// Page is Store.Page; f.Seqs and f.Since are ignored. A page whose offset
// is a multiple of limit, of a filter already counted on the same stream,
// is read from the page's first letter.
func (p *Pager) Page(ctx context.Context, f Filter, offset, limit int) (Page, error) {
	if limit <= 0 {
		limit = 1
	}
	key, err := p.key(ctx, f, limit)
	if err != nil {
		return Page{}, err
	}
	p.mu.Lock()
	e, ok := p.entries[key]
	p.mu.Unlock()
	if ok && offset%limit == 0 {
		var pg Page
		if offset < e.matched {
			if pg, err = p.from(ctx, f, e.starts[offset/limit], limit); err != nil {
				return Page{}, err
			}
		}
		p.mu.Lock()
		p.hits++
		p.mu.Unlock()
		pg.Matched, pg.ByKind = e.matched, e.byKind
		return pg, nil
	}
	pg, e, err := p.count(ctx, f, offset, limit)
	if err != nil {
		return Page{}, err
	}
	p.remember(key, e)
	return pg, nil
}

// key names f on the stream as it is now.
func (p *Pager) key(ctx context.Context, f Filter, limit int) (pagerKey, error) {
	st, err := p.s.handle(ctx)
	if err != nil {
		return pagerKey{}, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return pagerKey{}, fmt.Errorf("dead-letter stream %q: %w", p.s.stream, err)
	}
	return pagerKey{subject: f.Subject, text: f.Text, kind: f.Kind, limit: limit,
		first: info.State.FirstSeq, last: info.State.LastSeq, msgs: info.State.Msgs}, nil
}

// count is Store.Page, noting where each page starts.
func (p *Pager) count(ctx context.Context, f Filter, offset, limit int) (Page, *pagerEntry, error) {
	pg := Page{ByKind: map[Kind]int{}}
	e := &pagerEntry{}
	kind := f.Kind
	f.Kind, f.Seqs, f.Since = "", nil, 0
	err := p.s.scan(ctx, f, false, 0, func(l Letter) error {
		pg.ByKind[l.Kind]++
		if kind != "" && l.Kind != kind {
			return nil
		}
		if pg.Matched%limit == 0 {
			e.starts = append(e.starts, l.Seq)
		}
		if pg.Matched >= offset && len(pg.Letters) < limit {
			pg.Letters = append(pg.Letters, l)
		}
		pg.Matched++
		return nil
	})
	e.matched, e.byKind = pg.Matched, pg.ByKind
	return pg, e, err
}

// from reads the first limit letters f selects from the sequence seq on.
func (p *Pager) from(ctx context.Context, f Filter, seq uint64, limit int) (Page, error) {
	var pg Page
	kind := f.Kind
	f.Kind, f.Seqs, f.Since = "", nil, 0
	err := p.s.scan(ctx, f, false, seq, func(l Letter) error {
		if kind != "" && l.Kind != kind {
			return nil
		}
		pg.Letters = append(pg.Letters, l)
		if len(pg.Letters) == limit {
			return errStopScan
		}
		return nil
	})
	return pg, err
}

func (p *Pager) remember(k pagerKey, e *pagerEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.entries[k]; !ok {
		p.order = append(p.order, k)
	}
	p.entries[k] = e
	for len(p.order) > pagerEntries {
		delete(p.entries, p.order[0])
		p.order = p.order[1:]
	}
}
