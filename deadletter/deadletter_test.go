package deadletter_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// store starts JetStream with a dead-letter stream and writes letters.
func store(t *testing.T) (jetstream.JetStream, *deadletter.Store) {
	t.Helper()
	_, js := testserver.JetStream(t, testserver.NATS(t))
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "EVENTS_DLQ", Subjects: []string{"dlq.>"}}); err != nil {
		t.Fatal(err)
	}
	return js, deadletter.NewStore(js, "EVENTS_DLQ", "dlq")
}

func write(t *testing.T, js jetstream.JetStream, ev deadletter.Event, kind deadletter.Kind, reason string) uint64 {
	t.Helper()
	ack, err := js.PublishMsg(context.Background(), deadletter.Encode("dlq", ev, kind, errors.New(reason)))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	js, s := store(t)
	h := nats.Header{}
	h.Set(nats.MsgIdHdr, "evt-1")
	h.Set("Ce-Source", "courses")
	h.Set("Nats-Expected-Stream", "EVENTS") // would refuse the publish if kept
	seq := write(t, js, deadletter.Event{Subject: "events.course.updated", Body: []byte(`{"course_id":"*"}`), Header: h,
		StreamSeq: 42, Deliveries: 1, Stream: "EVENTS"}, deadletter.Rejected, `field course_id: value "*" holds a glob`)
	l, err := s.Get(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	want := deadletter.Letter{Seq: seq, Subject: "events.course.updated", Reason: `field course_id: value "*" holds a glob`,
		Kind: deadletter.Rejected, Deliveries: 1, StreamSeq: 42, OriginalMsgID: "evt-1"}
	got := l
	got.Time, got.Header, got.Body = time.Time{}, nil, nil
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("letter = %+v\nwant     %+v", got, want)
	}
	if string(l.Body) != `{"course_id":"*"}` || l.Header.Get("Ce-Source") != "courses" || l.Header.Get("Nats-Expected-Stream") != "" ||
		l.Header.Get(deadletter.HeaderError) != "" {
		t.Errorf("body %q, headers %v: want the event's own", l.Body, l.Header)
	}
	if time.Since(l.Time) > time.Minute {
		t.Errorf("time %v", l.Time)
	}
	r := l.Replay()
	if r.Subject != "events.course.updated" || r.Header.Get(nats.MsgIdHdr) != "evt-1:replay:"+fmt.Sprint(seq) ||
		string(r.Data) != `{"course_id":"*"}` || r.Header.Get("Ce-Source") != "courses" {
		t.Errorf("replay = %s %v %q", r.Subject, r.Header, r.Data)
	}
}

func TestDeadLetteringTwiceStoresOneLetter(t *testing.T) {
	js, s := store(t)
	ev := deadletter.Event{Subject: "events.user.updated", Body: []byte(`{}`), Header: nats.Header{}, StreamSeq: 7, Stream: "EVENTS"}
	write(t, js, ev, deadletter.Failed, "boom")
	write(t, js, ev, deadletter.Failed, "boom")
	st, err := s.Stats(context.Background())
	if err != nil || st.Total != 1 {
		t.Fatalf("stats %+v, %v: want one letter", st, err)
	}
}

func TestListFilterStatsDelete(t *testing.T) {
	js, s := store(t)
	ctx := context.Background()
	var seqs []uint64
	for i, c := range []struct {
		subject string
		kind    deadletter.Kind
		reason  string
	}{
		{"events.course.updated", deadletter.Malformed, "events: malformed event: invalid JSON"},
		{"events.course.updated", deadletter.Rejected, "field course_id: value holds a glob"},
		{"events.user.updated", deadletter.Failed, "unlink 1 keys: NOPERM this user has no permissions"},
	} {
		seqs = append(seqs, write(t, js, deadletter.Event{Subject: c.subject, Body: []byte(`{}`), Header: nats.Header{}, StreamSeq: uint64(i + 1), Stream: "EVENTS"}, c.kind, c.reason))
	}
	// Something else on the stream is skipped, not an error.
	if _, err := js.Publish(ctx, "dlq.other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	list := func(f deadletter.Filter) []uint64 {
		var got []uint64
		if err := s.List(ctx, f, func(l deadletter.Letter) error { got = append(got, l.Seq); return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	tests := []struct {
		name  string
		given deadletter.Filter
		want  []uint64
	}{
		{"all", deadletter.Filter{}, seqs},
		{"by subject", deadletter.Filter{Subject: "events.course.updated"}, seqs[:2]},
		{"by reason, any case", deadletter.Filter{Reason: "noperm"}, seqs[2:]},
		{"by sequence", deadletter.Filter{Seqs: []uint64{seqs[1], 999}}, seqs[1:2]},
		{"since an hour", deadletter.Filter{Since: time.Hour}, seqs},
		{"since a nanosecond", deadletter.Filter{Since: time.Nanosecond}, nil},
	}
	for _, tt := range tests {
		if got := list(tt.given); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	st, err := s.Stats(ctx)
	if err != nil || st.Total != 3 || st.ByKind[deadletter.Malformed] != 1 || st.ByKind[deadletter.Rejected] != 1 ||
		st.ByKind[deadletter.Failed] != 1 || st.Oldest.IsZero() {
		t.Errorf("stats %+v, %v", st, err)
	}
	if err := s.Delete(ctx, seqs[0]); err != nil {
		t.Fatal(err)
	}
	if got := list(deadletter.Filter{}); fmt.Sprint(got) != fmt.Sprint(seqs[1:]) {
		t.Errorf("after delete: %v", got)
	}
	if _, err := s.Get(ctx, seqs[0]); !errors.Is(err, deadletter.ErrNoLetter) {
		t.Errorf("Get of a deleted letter: %v, want ErrNoLetter", err)
	}
	if n, err := s.Count(ctx); err != nil || n != 3 { // 2 letters and the stray message
		t.Errorf("Count = %d, %v, want 3", n, err)
	}
}
