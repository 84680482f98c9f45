package deadletter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// writeMany publishes n letters: every third is rejected (subject
// events.course.updated), the others failed (events.user.updated); letter
// i's body holds "body-<i>". They go as core NATS publishes, which the
// stream stores without an ack each, and writeMany waits until it holds
// them all.
func writeMany(t testing.TB, js jetstream.JetStream, n int) {
	t.Helper()
	nc := js.Conn()
	for i := range n {
		kind, subject := deadletter.Failed, "events.user.updated"
		if i%3 == 0 {
			kind, subject = deadletter.Rejected, "events.course.updated"
		}
		ev := deadletter.Event{Subject: subject, Body: fmt.Appendf(nil, `{"id":"body-%d"}`, i), Header: nats.Header{},
			StreamSeq: uint64(i + 1), Deliveries: 1, Stream: "EVENTS"}
		if err := nc.PublishMsg(deadletter.Encode("dlq", ev, kind, fmt.Errorf("reason %d", i))); err != nil {
			t.Fatal(err)
		}
		if i%10_000 == 9_999 {
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitStored(t, js, "EVENTS_DLQ", uint64(n))
}

// waitStored waits until the stream holds n messages.
func waitStored(t testing.TB, js jetstream.JetStream, stream string, n uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := js.Stream(context.Background(), stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream holds %d messages, want %d", info.State.Msgs, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPageFiltersAndCounts(t *testing.T) {
	js, s := store(t)
	writeMany(t, js, 30)
	ctx := context.Background()
	tests := []struct {
		name          string
		given         deadletter.Filter
		offset, limit int
		wantMatched   int
		wantFirst     string // reason of the page's first letter
		wantPage      int
		wantByKind    map[deadletter.Kind]int
	}{
		{"all, first page", deadletter.Filter{}, 0, 7, 30, "reason 0", 7, map[deadletter.Kind]int{"rejected": 10, "failed": 20}},
		{"all, last page", deadletter.Filter{}, 28, 7, 30, "reason 28", 2, map[deadletter.Kind]int{"rejected": 10, "failed": 20}},
		{"kind", deadletter.Filter{Kind: deadletter.Rejected}, 1, 3, 10, "reason 3", 3, map[deadletter.Kind]int{"rejected": 10, "failed": 20}},
		{"subject", deadletter.Filter{Subject: "events.user.updated"}, 0, 2, 20, "reason 1", 2, map[deadletter.Kind]int{"failed": 20}},
		{"subject and kind disagree", deadletter.Filter{Subject: "events.user.updated", Kind: deadletter.Rejected}, 0, 2, 0, "", 0, map[deadletter.Kind]int{"failed": 20}},
		{"text in the body", deadletter.Filter{Text: "BODY-17\""}, 0, 5, 1, "reason 17", 1, map[deadletter.Kind]int{"failed": 1}},
		{"text in the reason", deadletter.Filter{Text: "reason 2"}, 0, 50, 11, "reason 2", 11, map[deadletter.Kind]int{"rejected": 3, "failed": 8}},
		{"no such subject", deadletter.Filter{Subject: "events.none"}, 0, 5, 0, "", 0, map[deadletter.Kind]int{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := s.Page(ctx, tt.given, tt.offset, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			first := ""
			if len(p.Letters) > 0 {
				first = p.Letters[0].Reason
			}
			if p.Matched != tt.wantMatched || len(p.Letters) != tt.wantPage || first != tt.wantFirst || fmt.Sprint(p.ByKind) != fmt.Sprint(tt.wantByKind) {
				t.Errorf("matched %d, page %d from %q, by kind %v; want %d, %d from %q, %v",
					p.Matched, len(p.Letters), first, p.ByKind, tt.wantMatched, tt.wantPage, tt.wantFirst, tt.wantByKind)
			}
		})
	}
}

// The list reads the stream through a consumer; letters deleted under it
// are skipped, and the scan leaves no consumer behind.
func TestListSkipsDeletedAndLeavesNoConsumer(t *testing.T) {
	js, s := store(t)
	writeMany(t, js, 10)
	ctx := context.Background()
	for _, q := range []uint64{1, 5, 10} {
		if err := s.Delete(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var got []uint64
	if err := s.List(ctx, deadletter.Filter{}, func(l deadletter.Letter) error { got = append(got, l.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[2 3 4 6 7 8 9]" {
		t.Errorf("listed %v", got)
	}
	stop := errors.New("stop")
	if err := s.List(ctx, deadletter.Filter{}, func(deadletter.Letter) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("List = %v, want fn's error", err)
	}
	st, err := js.Stream(ctx, "EVENTS_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	names := st.ConsumerNames(ctx)
	var left []string
	for n := range names.Name() {
		left = append(left, n)
	}
	if len(left) > 0 {
		t.Errorf("consumers left: %s", strings.Join(left, ", "))
	}
}

// BenchmarkPage100k times one page and its counts over 100,000 letters.
func BenchmarkPage100k(b *testing.B) {
	_, js := testserverJetStream(b)
	writeMany(b, js, 100_000)
	s := deadletter.NewStore(js, "EVENTS_DLQ", "dlq")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Page(context.Background(), deadletter.Filter{}, 50_000, 50); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPagerNextPage100k times a page of 100,000 letters whose
// filter the pager has counted: it reads from the page's first letter.
func BenchmarkPagerNextPage100k(b *testing.B) {
	_, js := testserverJetStream(b)
	writeMany(b, js, 100_000)
	p := deadletter.NewPager(deadletter.NewStore(js, "EVENTS_DLQ", "dlq"))
	f := deadletter.Filter{Kind: deadletter.Rejected}
	if _, err := p.Page(context.Background(), f, 0, 50); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Page(context.Background(), f, 20_000, 50); err != nil {
			b.Fatal(err)
		}
	}
}

func testserverJetStream(tb testing.TB) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, js := testserver.JetStream(tb, testserver.NATS(tb))
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "EVENTS_DLQ", Subjects: []string{"dlq.>"}}); err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// The pager answers as Page does, reads a page it has counted from its
// first letter, and counts again once the stream changes.
func TestPagerMatchesPage(t *testing.T) {
	js, s := store(t)
	writeMany(t, js, 95)
	ctx := context.Background()
	p := deadletter.NewPager(s)
	filters := []deadletter.Filter{{}, {Kind: deadletter.Rejected}, {Subject: "events.user.updated"}, {Text: "reason 1"},
		{Kind: deadletter.Failed, Text: "body-2"}}
	check := func(t *testing.T) {
		t.Helper()
		for _, f := range filters {
			for _, offset := range []int{0, 10, 20, 30, 60, 90, 10} {
				want, err := s.Page(ctx, f, offset, 10)
				if err != nil {
					t.Fatal(err)
				}
				got, err := p.Page(ctx, f, offset, 10)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got.Matched, got.ByKind, seqs(got.Letters)) != fmt.Sprint(want.Matched, want.ByKind, seqs(want.Letters)) {
					t.Errorf("%+v from %d: pager %d %v %v, want %d %v %v", f, offset,
						got.Matched, got.ByKind, seqs(got.Letters), want.Matched, want.ByKind, seqs(want.Letters))
				}
			}
		}
	}
	check(t)
	// 5 filters, 7 offsets: the first of each filter counts, the other
	// six (pages past the end among them) come from memory.
	if hits := p.Hits(); hits != 5*6 {
		t.Errorf("%d pages from memory, want 30", hits)
	}
	for _, q := range []uint64{1, 2, 50} {
		if err := s.Delete(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	check(t) // the stream changed: each filter's first page counts again
	if hits := p.Hits(); hits != 2*5*6 {
		t.Errorf("%d pages from memory, want 60", hits)
	}
}

func seqs(ls []deadletter.Letter) []uint64 {
	out := []uint64{}
	for _, l := range ls {
		out = append(out, l.Seq)
	}
	return out
}
