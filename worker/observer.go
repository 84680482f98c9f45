package worker

import (
	"time"

	"github.com/invalidator/invalidator/engine"
)

// Outcome is what became of one delivery of an event.
type Outcome string

// The outcomes of a delivery.
const (
	// Applied: every key of the event is gone and the event is acked.
	Applied Outcome = "applied"
	// Retried: the invalidation failed and the event was nak'ed for redelivery.
	Retried Outcome = "retried"
	// DeadLettered: the event is malformed, rejected, or failed on its last
	// delivery; it went to the dead-letter stream and was terminated.
	DeadLettered Outcome = "dead_lettered"
	// Unrouted: no rule matches the subject; the event is acked untouched.
	Unrouted Outcome = "unrouted"
	// Abandoned: shutdown came before the event was done; it is nak'ed and
	// will be redelivered.
	Abandoned Outcome = "abandoned"
)

// Report describes one delivery of an event, after its outcome is settled.
type Report struct {
	Subject string
	// ID is the event id, empty if the event could not be decoded.
	ID string
	// Rules are the subject filters of the rules that matched: a bounded set,
	// fit for metric labels.
	Rules []string
	Outcome
	engine.Result
	// Err is why the event was retried or dead-lettered.
	Err error
	// StreamSeq is the event's sequence in the stream (0 if unknown): what
	// names an event that could not be decoded.
	StreamSeq uint64
	// Deliveries is the delivery count of this message, from 1.
	Deliveries uint64
	// Lag is from the event's time (or its publication) to the outcome.
	Lag time.Duration
}

// Observer is told about every delivery and about Redis going up or down.
// Its methods are called from many goroutines and must not block.
type Observer interface {
	EventDone(Report)
	RedisUp(up bool)
}

type nopObserver struct{}

func (nopObserver) EventDone(Report) {}
func (nopObserver) RedisUp(bool)     {}
