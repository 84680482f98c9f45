package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nuid"
)

// ErrMalformed is wrapped by every error about an event that cannot be
// decoded or encoded. Redelivering such a message cannot help.
var ErrMalformed = errors.New("events: malformed event")

const (
	// HeaderMsgID is the NATS header that carries the event ID; JetStream
	// deduplicates messages by it.
	HeaderMsgID = "Nats-Msg-Id"

	// SpecVersion is the only CloudEvents version Decode accepts.
	SpecVersion = "1.0"

	// MaxBodySize is the largest message body Decode accepts: 1 MiB.
	MaxBodySize = 1 << 20
)

// Event is a decoded domain event.
type Event struct {
	// ID identifies the event; JetStream deduplicates publishes by it.
	ID string
	// Source is the CloudEvents source; empty for bare events.
	Source string
	// Type is the CloudEvents type; for bare events it is the subject.
	Type string
	// Subject is the NATS subject, events.<entity>.<action>.
	Subject string
	// SpecVersion is "1.0" for CloudEvents and empty for bare events.
	SpecVersion string
	// Time is when the event happened; zero if absent.
	Time time.Time
	// Data is the event payload, never nil after Decode. JSON numbers are
	// json.Number, so they keep the form they were written in.
	Data map[string]any
	// CloudEvent is true if the structured CloudEvent form was used.
	CloudEvent bool
}

// NewEvent returns a CloudEvent for subject with a fresh ID, Type set to the
// subject and Time set to now (UTC). Source is left empty for the Publisher
// to fill. Keep the event to retry a publish: the stream then stores it once.
func NewEvent(subject string, data map[string]any) Event {
	return Event{
		ID:          nuid.Next(),
		Type:        subject,
		Subject:     subject,
		SpecVersion: SpecVersion,
		Time:        time.Now().UTC(),
		Data:        data,
		CloudEvent:  true,
	}
}

// Decode parses the body of a message received on subject. A top-level JSON
// object with the key "specversion" is a structured CloudEvents 1.0 event:
// id, source and type must be non-empty strings, time (optional) RFC 3339,
// and data a JSON object; data_base64 is refused, other extension
// attributes are ignored, and a null optional attribute counts as absent.
// Any other JSON object is bare data: its ID is msgID (the Nats-Msg-Id
// header) or a generated NUID, Source is empty and Type is the subject.
//
// Every error wraps ErrMalformed; an invalid subject also wraps
// ErrInvalidSubject. Bodies over MaxBodySize, invalid JSON, trailing data
// and non-object values are malformed.
func Decode(subject, msgID string, body []byte) (Event, error) {
	if err := ValidateSubject(subject); err != nil {
		return Event{}, malformedSubject{err}
	}
	obj, err := decodeObject(body)
	if err != nil {
		return Event{}, err
	}
	if _, ok := obj["specversion"]; ok {
		return decodeCloudEvent(subject, obj)
	}
	return bareEvent(subject, msgID, obj), nil
}

// malformedSubject is an invalid subject as a malformed event: it wraps
// both ErrMalformed and ErrInvalidSubject, and says "events:" once.
type malformedSubject struct{ err error }

func (m malformedSubject) Error() string {
	return ErrMalformed.Error() + ": " + strings.TrimPrefix(m.err.Error(), "events: ")
}

func (m malformedSubject) Unwrap() []error { return []error{ErrMalformed, m.err} }

// decodeObject parses body as exactly one JSON object, keeping numbers as
// json.Number: the common body with parseObjectQuick, any other with
// encoding/json.
func decodeObject(body []byte) (map[string]any, error) {
	if len(body) > MaxBodySize {
		return nil, malformedf("body of %d bytes exceeds the limit of %d", len(body), MaxBodySize)
	}
	if obj, ok := parseObjectQuick(body); ok {
		return obj, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, malformedf("empty body")
		}
		return nil, fmt.Errorf("%w: invalid JSON: %w", ErrMalformed, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, malformedf("trailing data after the JSON value")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, malformedf("body must be a JSON object, got %s", kind(v))
	}
	return obj, nil
}

func bareEvent(subject, msgID string, data map[string]any) Event {
	if msgID == "" {
		msgID = nuid.Next()
	}
	return Event{ID: msgID, Type: subject, Subject: subject, Data: data}
}

func decodeCloudEvent(subject string, obj map[string]any) (Event, error) {
	ev := Event{Subject: subject, SpecVersion: SpecVersion, CloudEvent: true}
	if err := checkSpecVersion(obj); err != nil {
		return Event{}, err
	}
	for _, a := range []struct {
		name string
		dst  *string
	}{{"id", &ev.ID}, {"source", &ev.Source}, {"type", &ev.Type}} {
		s, err := requiredString(obj, a.name)
		if err != nil {
			return Event{}, err
		}
		*a.dst = s
	}
	var err error
	if ev.Time, err = eventTime(obj); err != nil {
		return Event{}, err
	}
	if _, err := optionalString(obj, "datacontenttype"); err != nil {
		return Event{}, err
	}
	if ev.Data, err = eventData(obj); err != nil {
		return Event{}, err
	}
	return ev, nil
}

func checkSpecVersion(obj map[string]any) error {
	v, err := requiredString(obj, "specversion")
	if err != nil {
		return err
	}
	if v != SpecVersion {
		return malformedf("unsupported cloudevent specversion %q, want %q", v, SpecVersion)
	}
	return nil
}

// requiredString returns the non-empty string attribute name.
func requiredString(obj map[string]any, name string) (string, error) {
	s, err := optionalString(obj, name)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", malformedf("cloudevent without %s", name)
	}
	return s, nil
}

// optionalString returns the string attribute name, or "" if it is absent or
// null.
func optionalString(obj map[string]any, name string) (string, error) {
	v := obj[name]
	if v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", malformedf("cloudevent %s must be a string, got %s", name, kind(v))
	}
	return s, nil
}

func eventTime(obj map[string]any) (time.Time, error) {
	if obj["time"] == nil {
		return time.Time{}, nil
	}
	s, err := optionalString(obj, "time")
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: cloudevent time is not RFC 3339: %w", ErrMalformed, err)
	}
	return t, nil
}

func eventData(obj map[string]any) (map[string]any, error) {
	if _, ok := obj["data_base64"]; ok {
		return nil, malformedf("cloudevent data_base64 is not supported, data must be a JSON object")
	}
	v, ok := obj["data"]
	if !ok {
		return nil, malformedf("cloudevent without data")
	}
	data, ok := v.(map[string]any)
	if !ok {
		return nil, malformedf("cloudevent data must be a JSON object, got %s", kind(v))
	}
	return data, nil
}

// wireEvent is the structured-mode JSON form written by Encode.
type wireEvent struct {
	SpecVersion     string         `json:"specversion"`
	ID              string         `json:"id"`
	Source          string         `json:"source"`
	Type            string         `json:"type"`
	Time            string         `json:"time,omitempty"`
	DataContentType string         `json:"datacontenttype"`
	Data            map[string]any `json:"data"`
}

// Encode returns ev as a structured-mode CloudEvents 1.0 JSON event with
// datacontenttype application/json; Decode on the same subject returns an
// equal event. ID, Source and Type are required, SpecVersion must be empty or
// "1.0", a zero Time is left out and nil Data is written as {}. Errors wrap
// ErrMalformed. Subject and CloudEvent are not part of the body.
func Encode(ev Event) ([]byte, error) {
	w, err := toWire(ev)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("%w: encode data: %w", ErrMalformed, err)
	}
	return b, nil
}

func toWire(ev Event) (wireEvent, error) {
	switch {
	case ev.SpecVersion != "" && ev.SpecVersion != SpecVersion:
		return wireEvent{}, malformedf("unsupported cloudevent specversion %q, want %q", ev.SpecVersion, SpecVersion)
	case ev.ID == "", ev.Source == "", ev.Type == "":
		return wireEvent{}, malformedf("cloudevent needs id, source and type, got %q, %q, %q", ev.ID, ev.Source, ev.Type)
	}
	w := wireEvent{SpecVersion: SpecVersion, ID: ev.ID, Source: ev.Source, Type: ev.Type,
		DataContentType: "application/json", Data: ev.Data}
	if w.Data == nil {
		w.Data = map[string]any{}
	}
	if !ev.Time.IsZero() {
		t, err := ev.Time.MarshalText()
		if err != nil {
			return wireEvent{}, fmt.Errorf("%w: encode time: %w", ErrMalformed, err)
		}
		w.Time = string(t)
	}
	return w, nil
}

func malformedf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// kind names the JSON type of a value decoded with UseNumber.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	default:
		return "number"
	}
}
