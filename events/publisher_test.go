package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go/jetstream"
)

// setup starts JetStream with a stream EVENTS on events.> and returns a
// publisher and the stream.
func setup(t *testing.T) (*events.Publisher, jetstream.Stream) {
	t.Helper()
	_, js := testserver.JetStream(t, testserver.NATS(t))
	stream, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	p, err := events.NewPublisher(js, events.WithSource("urn:test"))
	if err != nil {
		t.Fatal(err)
	}
	return p, stream
}

func msgCount(t *testing.T, stream jetstream.Stream) uint64 {
	t.Helper()
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestPublisherPublish(t *testing.T) {
	t.Parallel()
	p, stream := setup(t)
	ctx := t.Context()
	type course struct {
		ID    int     `json:"course_id"`
		Price float64 `json:"price"`
	}
	var last uint64
	for i := 1; i <= 3; i++ {
		seq, err := p.Publish(ctx, subject, course{ID: i, Price: 4.5})
		if err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
		if seq <= last {
			t.Fatalf("sequence %d after %d, want increasing", seq, last)
		}
		last = seq
	}
	checkStored(t, stream, last, map[string]any{"course_id": json.Number("3"), "price": json.Number("4.5")})
}

// checkStored decodes the message at seq and checks its data and headers.
func checkStored(t *testing.T, stream jetstream.Stream, seq uint64, wantData map[string]any) {
	t.Helper()
	msg, err := stream.GetMsg(t.Context(), seq)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Decode(msg.Subject, msg.Header.Get(events.HeaderMsgID), msg.Data)
	if err != nil {
		t.Fatalf("Decode stored message: %v", err)
	}
	if !reflect.DeepEqual(ev.Data, wantData) {
		t.Errorf("Data = %#v, want %#v", ev.Data, wantData)
	}
	if got := msg.Header.Get(events.HeaderMsgID); got != ev.ID {
		t.Errorf("%s = %q, want event ID %q", events.HeaderMsgID, got, ev.ID)
	}
	if got := msg.Header.Get("Content-Type"); got != "application/cloudevents+json" {
		t.Errorf("Content-Type = %q", got)
	}
	if !ev.CloudEvent || ev.Source != "urn:test" || ev.Type != subject || ev.Time.IsZero() {
		t.Errorf("event = %+v, want a CloudEvent from urn:test of type %s with a time", ev, subject)
	}
}

func TestPublisherPublishRefuses(t *testing.T) {
	t.Parallel()
	p, stream := setup(t)
	tests := []struct {
		name      string
		givenSubj string
		givenData any
		wantErr   error
	}{
		{name: "invalid subject", givenSubj: "events.Course.x", givenData: map[string]any{}, wantErr: events.ErrInvalidSubject},
		{name: "wildcard subject", givenSubj: "events.course.*", givenData: map[string]any{}, wantErr: events.ErrInvalidSubject},
		{name: "nil data", givenSubj: subject, givenData: nil, wantErr: events.ErrMalformed},
		{name: "nil map", givenSubj: subject, givenData: map[string]any(nil), wantErr: events.ErrMalformed},
		{name: "slice data", givenSubj: subject, givenData: []int{1}, wantErr: events.ErrMalformed},
		{name: "string data", givenSubj: subject, givenData: "x", wantErr: events.ErrMalformed},
		{name: "unmarshalable data", givenSubj: subject, givenData: map[string]any{"c": make(chan int)}, wantErr: events.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Publish(t.Context(), tt.givenSubj, tt.givenData)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Publish error = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if n := msgCount(t, stream); n != 0 {
		t.Errorf("stream holds %d messages, want 0", n)
	}
}

func TestPublisherPublishEventDeduplicates(t *testing.T) {
	t.Parallel()
	p, stream := setup(t)
	ev := events.NewEvent("events.user.deleted", map[string]any{"user_id": "u1"})
	first, err := p.PublishEvent(t.Context(), ev)
	if err != nil {
		t.Fatal(err)
	}
	second, err := p.PublishEvent(t.Context(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Errorf("sequences %d and %d, want equal for a duplicate", first, second)
	}
	if n := msgCount(t, stream); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
}

func TestPublisherPublishEventDefaults(t *testing.T) {
	t.Parallel()
	p, stream := setup(t)
	seq, err := p.PublishEvent(t.Context(), events.Event{Type: "events.cache.invalidate", Data: map[string]any{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetMsg(t.Context(), seq)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Decode(msg.Subject, "", msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "events.cache.invalidate" || ev.ID == "" || ev.Source != "urn:test" {
		t.Errorf("stored %s %+v, want subject from Type, generated ID and publisher source", msg.Subject, ev)
	}
}

func TestNewPublisherOptions(t *testing.T) {
	t.Parallel()
	_, js := testserver.JetStream(t, testserver.NATS(t))
	tests := []struct {
		name    string
		givenJS jetstream.JetStream
		given   []events.PublisherOption
		wantErr error
	}{
		{name: "defaults", givenJS: js},
		{name: "source", givenJS: js, given: []events.PublisherOption{events.WithSource("urn:svc")}},
		{name: "empty source", givenJS: js, given: []events.PublisherOption{events.WithSource("")}, wantErr: events.ErrInvalidOption},
		{name: "nil jetstream", givenJS: nil, wantErr: events.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := events.NewPublisher(tt.givenJS, tt.given...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewPublisher error = %v, want %v", err, tt.wantErr)
			}
			if (p == nil) != (tt.wantErr != nil) {
				t.Errorf("NewPublisher = %v with error %v", p, err)
			}
		})
	}
}

func TestPublisherWithoutStream(t *testing.T) {
	t.Parallel()
	_, js := testserver.JetStream(t, testserver.NATS(t))
	p, err := events.NewPublisher(js)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Publish(context.Background(), subject, map[string]any{})
	if !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Errorf("Publish without stream = %v, want ErrNoStreamResponse", err)
	}
}
