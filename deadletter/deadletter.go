// Package deadletter is the one place that writes and reads a dead letter:
// an event the worker could not apply, kept in the dead-letter stream with
// the reason, so that an operator can list, inspect, replay or purge it.
//
// A letter is the event's body and headers (but the Nats-* ones) published
// to <prefix>.<original subject>, with these headers added: HeaderError
// (the reason), HeaderKind (malformed, rejected or failed), HeaderDeliveries,
// HeaderStreamSeq, HeaderOriginalMsgID (the event's Nats-Msg-Id) and a
// Nats-Msg-Id of its own, "dlq:<stream>:<stream sequence>", so that
// dead-lettering one event twice stores one letter.
package deadletter

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a letter.
const (
	HeaderError      = "Invalidator-Error"
	HeaderKind       = "Invalidator-Reason-Kind"
	HeaderDeliveries = "Invalidator-Deliveries"
	HeaderStreamSeq  = "Invalidator-Stream-Seq"
	// HeaderOriginalMsgID keeps the event's Nats-Msg-Id.
	HeaderOriginalMsgID = "Invalidator-Original-Msg-Id"
)

// Kind says why an event was dead-lettered: a bounded set, fit for counts
// and metric labels.
type Kind string

// The kinds of reason.
const (
	// Malformed: the event could not be decoded.
	Malformed Kind = "malformed"
	// Rejected: the rules refused the event's values or explicit keys.
	Rejected Kind = "rejected"
	// Failed: the invalidation failed on every delivery.
	Failed Kind = "failed"
	// Unknown: a letter written before kinds were recorded.
	Unknown Kind = "unknown"
)

// Event is what the worker knows of an event it dead-letters.
type Event struct {
	Subject string
	Body    []byte
	Header  nats.Header
	// StreamSeq is the event's sequence in its stream; Deliveries how often
	// it was delivered.
	StreamSeq, Deliveries uint64
	// Stream is the name of the event's stream, for the letter's id.
	Stream string
}

// Encode returns the letter of ev for the dead-letter stream under prefix.
func Encode(prefix string, ev Event, kind Kind, reason error) *nats.Msg {
	m := nats.NewMsg(prefix + "." + ev.Subject)
	m.Data = ev.Body
	for k, v := range ev.Header {
		if !strings.HasPrefix(k, "Nats-") { // Nats-Expected-* would refuse the publish
			m.Header[k] = v
		}
	}
	if id := ev.Header.Get(nats.MsgIdHdr); id != "" {
		m.Header.Set(HeaderOriginalMsgID, id)
	}
	m.Header.Set(HeaderError, reason.Error())
	m.Header.Set(HeaderKind, string(kind))
	m.Header.Set(HeaderDeliveries, strconv.FormatUint(ev.Deliveries, 10))
	m.Header.Set(HeaderStreamSeq, strconv.FormatUint(ev.StreamSeq, 10))
	m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("dlq:%s:%d", ev.Stream, ev.StreamSeq))
	return m
}

// Letter is a dead letter read back from the stream.
type Letter struct {
	// Seq is the letter's sequence in the dead-letter stream.
	Seq uint64 `json:"seq"`
	// Time is when it was dead-lettered.
	Time time.Time `json:"time"`
	// Subject is the event's original subject.
	Subject string `json:"subject"`
	// Reason is why, and Kind its class.
	Reason string `json:"reason"`
	Kind   Kind   `json:"kind"`
	// Deliveries of the event before it was dead-lettered.
	Deliveries uint64 `json:"deliveries"`
	// StreamSeq is the event's sequence in its own stream.
	StreamSeq uint64 `json:"stream_seq"`
	// OriginalMsgID is the event's Nats-Msg-Id, empty if it had none.
	OriginalMsgID string `json:"original_msg_id,omitempty"`
	// Header holds the event's own headers (the letter's bookkeeping ones
	// removed); Body its body.
	Header nats.Header `json:"headers,omitempty"`
	Body   []byte      `json:"-"`
}

// ErrNotALetter means a message of the dead-letter stream lacks the
// headers of a letter (published there by something else).
var ErrNotALetter = errors.New("deadletter: not a dead letter")

// Decode reads a message of the dead-letter stream under prefix.
func Decode(prefix string, m *jetstream.RawStreamMsg) (Letter, error) {
	subject, ok := strings.CutPrefix(m.Subject, prefix+".")
	if !ok || m.Header.Get(HeaderError) == "" {
		return Letter{}, fmt.Errorf("%w: message %d on %q", ErrNotALetter, m.Sequence, m.Subject)
	}
	l := Letter{
		Seq: m.Sequence, Time: m.Time, Subject: subject, Body: m.Data,
		Reason:        m.Header.Get(HeaderError),
		Kind:          Kind(m.Header.Get(HeaderKind)),
		OriginalMsgID: m.Header.Get(HeaderOriginalMsgID),
		Header:        nats.Header{},
	}
	if l.Kind == "" {
		l.Kind = Unknown
	}
	l.Deliveries, _ = strconv.ParseUint(m.Header.Get(HeaderDeliveries), 10, 64)
	l.StreamSeq, _ = strconv.ParseUint(m.Header.Get(HeaderStreamSeq), 10, 64)
	for k, v := range m.Header {
		switch k {
		case HeaderError, HeaderKind, HeaderDeliveries, HeaderStreamSeq, HeaderOriginalMsgID, nats.MsgIdHdr:
		default:
			l.Header[k] = v
		}
	}
	return l, nil
}

// ReplayID is the Nats-Msg-Id a replay of l publishes with: derived from
// the event's own id (or its stream sequence), and from the letter, so the
// stream keeps the replay even inside the duplicate window of the original,
// while a second replay of the same letter is deduplicated.
func (l Letter) ReplayID() string {
	orig := l.OriginalMsgID
	if orig == "" {
		orig = "seq-" + strconv.FormatUint(l.StreamSeq, 10)
	}
	return orig + ":replay:" + strconv.FormatUint(l.Seq, 10)
}

// Replay is the message that republishes l to its original subject: its
// body and headers, with ReplayID as Nats-Msg-Id.
func (l Letter) Replay() *nats.Msg {
	m := nats.NewMsg(l.Subject)
	m.Data = l.Body
	for k, v := range l.Header {
		m.Header[k] = v
	}
	m.Header.Set(nats.MsgIdHdr, l.ReplayID())
	return m
}
