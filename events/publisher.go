package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// ErrInvalidOption is wrapped by NewPublisher errors about its arguments.
var ErrInvalidOption = errors.New("events: invalid option")

// ContentType is the Content-Type header of published messages: a
// structured-mode CloudEvent.
const ContentType = "application/cloudevents+json"

// Publisher publishes events to JetStream as structured CloudEvents. It is
// safe for concurrent use. The stream that captures events.> must exist.
type Publisher struct {
	js     jetstream.JetStream
	source string
}

// PublisherOption configures a Publisher; it returns an error wrapping
// ErrInvalidOption for bad input.
type PublisherOption func(*Publisher) error

// WithSource sets the CloudEvents source of published events; it must be
// non-empty. Defaults to "urn:invalidator:<hostname>", or
// "urn:invalidator:publisher" if the hostname is unknown.
func WithSource(source string) PublisherOption {
	return func(p *Publisher) error {
		if source == "" {
			return fmt.Errorf("%w: empty source", ErrInvalidOption)
		}
		p.source = source
		return nil
	}
}

// NewPublisher returns a Publisher that publishes through js.
func NewPublisher(js jetstream.JetStream, opts ...PublisherOption) (*Publisher, error) {
	if js == nil {
		return nil, fmt.Errorf("%w: nil JetStream", ErrInvalidOption)
	}
	p := &Publisher{js: js, source: defaultSource()}
	for _, opt := range opts {
		if err := opt(p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func defaultSource() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "urn:invalidator:publisher"
	}
	return "urn:invalidator:" + host
}

// Publish sends data as a new event on subject and returns its stream
// sequence. data must marshal to a JSON object (a struct or a map); anything
// else is refused with an error wrapping ErrMalformed. An invalid subject is
// refused with an error wrapping ErrInvalidSubject. Nothing is sent on
// either error. Each call makes a new event; to retry safely keep an Event
// from NewEvent and use PublishEvent.
func (p *Publisher) Publish(ctx context.Context, subject string, data any) (uint64, error) {
	if err := ValidateSubject(subject); err != nil {
		return 0, err
	}
	obj, err := toObject(data)
	if err != nil {
		return 0, err
	}
	return p.PublishEvent(ctx, NewEvent(subject, obj))
}

// toObject converts data to the map Decode would return for it.
func toObject(data any) (map[string]any, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("%w: marshal data: %w", ErrMalformed, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: marshal data: %w", ErrMalformed, err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, malformedf("data must be a JSON object, got %s", kind(v))
	}
	return obj, nil
}

// PublishEvent sends ev and returns its stream sequence. It publishes on
// ev.Subject, or ev.Type if Subject is empty; an empty ID is generated and an
// empty Source is the publisher's. The Nats-Msg-Id header is the event ID, so
// publishing the same event again within the stream's duplicate window
// returns the first sequence and stores nothing new. Errors wrap
// ErrInvalidSubject or ErrMalformed (nothing sent), or come from JetStream.
func (p *Publisher) PublishEvent(ctx context.Context, ev Event) (uint64, error) {
	msg, err := p.message(ev)
	if err != nil {
		return 0, err
	}
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("events: publish to %s: %w", msg.Subject, err)
	}
	return ack.Sequence, nil
}

// Message returns the NATS message PublishEvent would send for ev, for a
// caller that publishes it itself (asynchronously, say): the structured
// CloudEvent body, Content-Type and a Nats-Msg-Id equal to the event ID.
// Errors are PublishEvent's, and nothing is sent.
func (p *Publisher) Message(ev Event) (*nats.Msg, error) { return p.message(ev) }

// message builds the NATS message for ev after filling its defaults.
func (p *Publisher) message(ev Event) (*nats.Msg, error) {
	if ev.Subject == "" {
		ev.Subject = ev.Type
	}
	if err := ValidateSubject(ev.Subject); err != nil {
		return nil, err
	}
	ev = p.withDefaults(ev)
	body, err := Encode(ev)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(ev.Subject)
	msg.Data = body
	msg.Header.Set(HeaderMsgID, ev.ID)
	msg.Header.Set("Content-Type", ContentType)
	return msg, nil
}

func (p *Publisher) withDefaults(ev Event) Event {
	if ev.ID == "" {
		ev.ID = nuid.Next()
	}
	if ev.Source == "" {
		ev.Source = p.source
	}
	if ev.Type == "" {
		ev.Type = ev.Subject
	}
	return ev
}
