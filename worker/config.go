package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/invalidator/invalidator/consistency"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Config.
const (
	DefaultStream           = "EVENTS"
	DefaultSubjects         = "events.>"
	DefaultDeadLetterStream = "EVENTS_DLQ"
	DefaultDeadLetterPrefix = "dlq"
	DefaultConsumer         = "invalidator"
	DefaultConcurrency      = 16
	DefaultBatchSize        = 64
	DefaultMaxDeliver       = 5
	DefaultAckWait          = 30 * time.Second
	DefaultMaxAckPending    = 1000
	DefaultFetchMaxWait     = time.Second
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultEventTimeout     = 5 * time.Minute
	DefaultHealthInterval   = time.Second
	// DefaultFailoverReplayWindow is Config.FailoverReplayWindow's default.
	DefaultFailoverReplayWindow = 10 * time.Second
)

// DefaultBackoff is the delay before each redelivery of an event whose
// invalidation failed: after the 1st, 2nd, 3rd and 4th delivery.
var DefaultBackoff = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second}

// ErrInvalidConfig wraps every Config validation error.
var ErrInvalidConfig = errors.New("worker: invalid config")

// Config configures a Worker. The zero value of each field takes its default.
type Config struct {
	// Stream is the JetStream stream events are read from; created (file
	// storage) if missing, used as it is if it exists. Defaults to "EVENTS".
	Stream string
	// Subjects of Stream when the worker creates it. Defaults to ["events.>"].
	Subjects []string
	// DeadLetterStream holds events that could not be applied; created if
	// missing. Defaults to "EVENTS_DLQ".
	DeadLetterStream string
	// DeadLetterPrefix is put before the original subject of a dead letter,
	// and the dead-letter stream listens on "<prefix>.>". Defaults to "dlq".
	DeadLetterPrefix string
	// Consumer is the durable pull consumer's name. Defaults to "invalidator".
	Consumer string
	// Concurrency is the number of handlers running at once, each with a
	// group of at most BatchSize events. Events with patterns leave their
	// handler while they wait for a shared sweep; MaxAckPending bounds
	// those. Defaults to 16.
	Concurrency int
	// BatchSize is the most events one handler takes at once: their exact
	// keys share one pipelined round trip. Defaults to 64.
	BatchSize int
	// MaxDeliver is how many times an event is delivered before it is dead-lettered. Defaults to 5.
	MaxDeliver int
	// Backoff is the redelivery delay after each failed delivery (the last
	// entry repeats), sent with the nak: the gaps between the deliveries of a
	// failing event are exactly these. Defaults to DefaultBackoff. Events
	// whose ack never comes (a worker died) are redelivered by the server
	// AckWait after their last delivery.
	Backoff []time.Duration
	// AckWait is how long the server waits for an ack before it redelivers;
	// long invalidations keep their event with progress signals. Defaults to 30s.
	AckWait time.Duration
	// MaxAckPending bounds the events delivered but not yet acked. Defaults to 1000.
	MaxAckPending int
	// FetchMaxWait is how long one fetch waits for events. Defaults to 1s.
	FetchMaxWait time.Duration
	// ShutdownTimeout bounds how long Run waits for events in flight after
	// its context ends. Defaults to 30s.
	ShutdownTimeout time.Duration
	// EventTimeout bounds one invalidation attempt. Defaults to 5m.
	EventTimeout time.Duration
	// HealthInterval is how often Redis is pinged while it is up. Defaults to 1s.
	HealthInterval time.Duration
	// StreamReplicas is the replicas of the streams the worker creates: 3
	// on a NATS cluster, so the events survive the loss of a server. An
	// existing stream is used as it is (a warning is logged when its
	// replicas differ). Defaults to 1.
	StreamReplicas int
	// FailoverReplayWindow guards against the writes a Redis failover
	// loses: replication is asynchronous, so an UNLINK the old master
	// acknowledged may never reach the replica that takes its place, and the
	// key would come back stale. When the worker sees another master (its
	// run_id changed: a Sentinel failover, or a restart), it applies again
	// the events it acked within this window before it last saw the old
	// master, re-read from the stream; they are not acked again. Negative
	// turns the replay off. Defaults to 10s.
	FailoverReplayWindow time.Duration
	// Consistency configures the consistency checker (package
	// consistency): the fraction of applied events whose keys are read
	// again, at which delays, and its pace. Its zero value samples
	// consistency.DefaultSample of the events; a negative Sample turns it
	// off, and nothing changes on the hot path then. Its Logger defaults to
	// Logger.
	Consistency consistency.Config
	// Logger gets the worker's lines (start, stop, outages, dead letters).
	// Defaults to a discarding logger.
	Logger *slog.Logger
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&c.Stream, DefaultStream)
	def(&c.DeadLetterStream, DefaultDeadLetterStream)
	def(&c.DeadLetterPrefix, DefaultDeadLetterPrefix)
	def(&c.Consumer, DefaultConsumer)
	if len(c.Subjects) == 0 {
		c.Subjects = []string{DefaultSubjects}
	}
	if len(c.Backoff) == 0 {
		c.Backoff = DefaultBackoff
	}
	c.Concurrency = cmpOr(c.Concurrency, DefaultConcurrency)
	c.BatchSize = cmpOr(c.BatchSize, DefaultBatchSize)
	c.MaxDeliver = cmpOr(c.MaxDeliver, DefaultMaxDeliver)
	c.MaxAckPending = cmpOr(c.MaxAckPending, DefaultMaxAckPending)
	c.AckWait = cmpOr(c.AckWait, DefaultAckWait)
	c.FetchMaxWait = cmpOr(c.FetchMaxWait, DefaultFetchMaxWait)
	c.ShutdownTimeout = cmpOr(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.EventTimeout = cmpOr(c.EventTimeout, DefaultEventTimeout)
	c.HealthInterval = cmpOr(c.HealthInterval, DefaultHealthInterval)
	c.StreamReplicas = cmpOr(c.StreamReplicas, 1)
	c.FailoverReplayWindow = cmpOr(c.FailoverReplayWindow, DefaultFailoverReplayWindow)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Consistency.Logger == nil {
		c.Consistency.Logger = c.Logger
	}
	c.Consistency = c.Consistency.WithDefaults()
	return c
}

func cmpOr[T int | time.Duration](v, d T) T {
	if v == 0 {
		return d
	}
	return v
}

// Validate reports the first invalid field, wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	switch {
	case c.Concurrency < 1 || c.Concurrency > 10000:
		return bad("concurrency must be 1..10000, not %d", c.Concurrency)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return bad("batch size must be 1..10000, not %d", c.BatchSize)
	case c.MaxDeliver < 1:
		return bad("max deliver must be at least 1, not %d", c.MaxDeliver)
	case c.MaxAckPending < c.Concurrency:
		return bad("max ack pending (%d) must be at least the concurrency (%d)", c.MaxAckPending, c.Concurrency)
	case c.AckWait < time.Second:
		return bad("ack wait must be at least 1s, not %s", c.AckWait)
	case c.ShutdownTimeout < 0, c.EventTimeout < 0, c.FetchMaxWait < 0, c.HealthInterval < 0:
		return bad("durations must not be negative")
	case c.StreamReplicas < 1 || c.StreamReplicas > 5:
		return bad("stream replicas must be 1..5, not %d", c.StreamReplicas)
	case c.Stream == c.DeadLetterStream:
		return bad("stream and dead-letter stream must differ")
	}
	for _, d := range c.Backoff {
		if d <= 0 {
			return bad("backoff delays must be positive, not %s", d)
		}
	}
	if err := c.Consistency.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// backoff is the delay after the n-th delivery (n from 1).
func (c Config) backoff(n uint64) time.Duration {
	i := min(int(max(n, 1))-1, len(c.Backoff)-1)
	return c.Backoff[i]
}

// StreamConfig is the events stream Setup creates when it is missing, for
// a publisher (invalidator cdc) that starts before any worker.
func (c Config) StreamConfig() jetstream.StreamConfig { return c.WithDefaults().streamConfig() }

func (c Config) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:     c.Stream,
		Subjects: c.Subjects,
		Storage:  jetstream.FileStorage,
		Replicas: c.StreamReplicas,
	}
}

func (c Config) deadLetterConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:     c.DeadLetterStream,
		Subjects: []string{c.DeadLetterPrefix + ".>"},
		Storage:  jetstream.FileStorage,
		Replicas: c.StreamReplicas,
	}
}

// consumerConfig carries no BackOff list on purpose: the server adds
// BackOff[n-1] minus AckWait to every explicit nak delay, so with one the
// delays between deliveries of a failing event would not be Backoff's. An
// event whose ack never comes (its worker died) is redelivered AckWait after
// its last delivery or progress signal.
func (c Config) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Description:   "invalidator: removes Redis keys named by domain events",
	}
}
