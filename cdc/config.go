package cdc

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
)

// Defaults of Config.
const (
	DefaultSlot           = "invalidator"
	DefaultPublication    = "invalidator"
	DefaultMaxTxEvents    = 10000
	DefaultStatusInterval = 10 * time.Second
	DefaultStandbyRetry   = time.Second
	DefaultMaxInFlight    = 4096
	DefaultStateBucket    = "invalidator_cdc"
	DefaultPublishTimeout = 5 * time.Second
	// MessagePrefix is the pg_logical_emit_message prefix published as an
	// explicit invalidation (events.cache.invalidate).
	MessagePrefix = "invalidator"
)

// ErrSetup wraps every problem that stops the start and that waiting will
// not heal: bad settings, a missing table, wal_level, replica identity.
// Its message says how to fix it, on one line.
var ErrSetup = errors.New("cdc")

// Config configures a Runner.
type Config struct {
	// DatabaseURL is postgres://user:password@host:port/db; required. The
	// password is never logged.
	DatabaseURL string
	// Slot is the logical replication slot. Defaults to DefaultSlot.
	Slot string
	// Publication is the publication of the listed tables. Defaults to
	// DefaultPublication.
	Publication string
	// MaxTxEvents caps the events one transaction buffers for one table;
	// past it the table's events become one events.<entity>.bulk event.
	// Defaults to DefaultMaxTxEvents.
	MaxTxEvents int
	// Tables are the rules file's cdc tables; at least one.
	Tables []cachekeys.CDCTable
	// StatusInterval is the longest time between two standby status
	// updates. Defaults to DefaultStatusInterval (10 s).
	StatusInterval time.Duration
	// StandbyRetry is how often a standby tries to take the slot over.
	// Defaults to DefaultStandbyRetry (1 s).
	StandbyRetry time.Duration
	// MaxInFlight bounds the publishes awaiting their PubAck. Defaults to
	// DefaultMaxInFlight.
	MaxInFlight int
	// PublishTimeout is how long a publish waits for its PubAck before it
	// is sent again (with the same id). Defaults to DefaultPublishTimeout.
	PublishTimeout time.Duration
	// StateBucket is the JetStream key-value bucket that records each
	// slot's position, to tell a lost slot from a new one. Defaults to
	// DefaultStateBucket.
	StateBucket string
	// Replicas of the state bucket when it is created. Defaults to 1.
	Replicas int
	// Logger receives the process's lines. Defaults to discarding them.
	Logger *slog.Logger
	// Observer counts what happens (see Observer). Defaults to none.
	Observer Observer
	// FailPoint, for crash tests only, kills the process (SIGKILL) at a
	// named point of the Nth transaction: "after-puback:N" (every PubAck
	// in, before the confirm), "mid-publish:N" (half of its events
	// acknowledged) or "after-confirm:N". Empty in production.
	FailPoint string
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Slot == "" {
		c.Slot = DefaultSlot
	}
	if c.Publication == "" {
		c.Publication = DefaultPublication
	}
	if c.MaxTxEvents == 0 {
		c.MaxTxEvents = DefaultMaxTxEvents
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.StandbyRetry == 0 {
		c.StandbyRetry = DefaultStandbyRetry
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.StateBucket == "" {
		c.StateBucket = DefaultStateBucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// slotName is what PostgreSQL accepts as a slot name.
var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Validate checks a Config after WithDefaults.
func (c Config) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return fmt.Errorf("%w: CDC_DATABASE_URL is required (postgres://user:password@host:port/db)", ErrSetup)
	case !slotName.MatchString(c.Slot):
		return fmt.Errorf("%w: CDC_SLOT must be 1 to 63 characters of [a-z0-9_], not %q", ErrSetup, c.Slot)
	case !slotName.MatchString(c.Publication):
		return fmt.Errorf("%w: CDC_PUBLICATION must be 1 to 63 characters of [a-z0-9_], not %q", ErrSetup, c.Publication)
	case c.MaxTxEvents < 1:
		return fmt.Errorf("%w: CDC_MAX_TX_EVENTS must be at least 1, not %d", ErrSetup, c.MaxTxEvents)
	case len(c.Tables) == 0:
		return fmt.Errorf("%w: the rules file has no cdc section: list the tables to follow under cdc.tables", ErrSetup)
	case c.MaxInFlight < 1:
		return fmt.Errorf("%w: MaxInFlight must be at least 1", ErrSetup)
	}
	if _, _, err := parseFailPoint(c.FailPoint); err != nil {
		return err
	}
	return nil
}

// parseFailPoint reads "name:N".
func parseFailPoint(s string) (string, int, error) {
	if s == "" {
		return "", 0, nil
	}
	name, n, ok := strings.Cut(s, ":")
	k, err := strconv.Atoi(n)
	if !ok || err != nil || k < 1 || (name != "after-puback" && name != "mid-publish" && name != "after-confirm") {
		return "", 0, fmt.Errorf("%w: fail point must be after-puback:N, mid-publish:N or after-confirm:N, not %q", ErrSetup, s)
	}
	return name, k, nil
}

// Observer is told what the Runner does, for metrics. Its methods must be
// safe for concurrent use and must not block.
type Observer interface {
	// Transaction counts a transaction whose events are all acknowledged
	// and whose end was confirmed; commitToAck is from its commit to its
	// last PubAck.
	Transaction(commitToAck time.Duration)
	// Event counts one published event.
	Event(entity, action string)
	// SlotLost counts a lost slot: bulk events were published for every
	// entity and the slot was made again.
	SlotLost()
	// VisibilityWait counts a committed transaction that a snapshot showed
	// not yet visible to other sessions, so its events waited; wait is
	// from its decoded commit to the snapshot that showed it visible.
	VisibilityWait(wait time.Duration)
}

type nopObserver struct{}

func (nopObserver) Transaction(time.Duration)    {}
func (nopObserver) Event(string, string)         {}
func (nopObserver) SlotLost()                    {}
func (nopObserver) VisibilityWait(time.Duration) {}
