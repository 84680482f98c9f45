package consistency

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults of Config.
const (
	// DefaultSample is the fraction of applied events checked.
	DefaultSample = 0.01
	// DefaultRate is how many keys the checker reads per second at most.
	DefaultRate = 1000
	// DefaultQueue bounds the sampled events in hand (waiting for a check).
	DefaultQueue = 10000
	// DefaultBatch is the most keys read in one pipeline.
	DefaultBatch = 100
	// MaxDelay is the longest delay a check may have: samples are kept in
	// memory until their last check.
	MaxDelay = time.Hour
	// MaxDelays bounds the number of delays.
	MaxDelays = 10
)

// DefaultDelays are when the checker reads the keys of a sampled event
// again, after it was applied.
var DefaultDelays = []time.Duration{time.Second, 10 * time.Second, 60 * time.Second}

// ErrInvalidConfig wraps every error of Config.Validate and ParseDelays.
var ErrInvalidConfig = errors.New("consistency: invalid config")

// Config configures a Checker. The zero value of each field takes its
// default.
type Config struct {
	// Sample is the fraction of applied events checked, in (0, 1].
	// Negative turns the checker off (Enabled reports false). Defaults to
	// DefaultSample.
	Sample float64
	// Delays are when the keys of a sampled event are read again after it
	// was applied, ascending, each positive and at most MaxDelay; each is a
	// timescale of the results. Defaults to DefaultDelays.
	Delays []time.Duration
	// Rate is the most keys read per second, a cost the checker keeps to
	// whatever the event rate. Defaults to DefaultRate.
	Rate int
	// Queue bounds the sampled events in hand; more are dropped and
	// counted (Observer.Dropped), never waited for. Defaults to
	// DefaultQueue.
	Queue int
	// Batch is the most keys read in one pipeline. Defaults to
	// DefaultBatch.
	Batch int
	// Logger gets the ⚠️ line of each stale finding and of failed reads.
	// Defaults to a discarding logger.
	Logger *slog.Logger
	// Observer is told of every result. Defaults to nil, no metrics.
	Observer Observer
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Sample = cmp.Or(c.Sample, DefaultSample)
	if len(c.Delays) == 0 {
		c.Delays = DefaultDelays
	}
	c.Rate = cmp.Or(c.Rate, DefaultRate)
	c.Queue = cmp.Or(c.Queue, DefaultQueue)
	c.Batch = cmp.Or(c.Batch, DefaultBatch)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// Enabled reports whether events are sampled: Sample, after defaults, is
// positive.
func (c Config) Enabled() bool { return c.WithDefaults().Sample > 0 }

// Validate reports the first invalid field of c, after defaults, wrapping
// ErrInvalidConfig.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Sample > 1:
		return fmt.Errorf("%w: sample %v is more than 1", ErrInvalidConfig, c.Sample)
	case c.Rate < 0 || c.Queue < 0 || c.Batch < 0:
		return fmt.Errorf("%w: rate, queue and batch must not be negative", ErrInvalidConfig)
	}
	return validDelays(c.Delays)
}

// validDelays checks that delays ascend strictly, each in (0, MaxDelay].
func validDelays(delays []time.Duration) error {
	if len(delays) > MaxDelays {
		return fmt.Errorf("%w: %d delays, at most %d", ErrInvalidConfig, len(delays), MaxDelays)
	}
	for i, d := range delays {
		switch {
		case d <= 0 || d > MaxDelay:
			return fmt.Errorf("%w: delay %s must be positive and at most %s", ErrInvalidConfig, d, MaxDelay)
		case i > 0 && d <= delays[i-1]:
			return fmt.Errorf("%w: delays must ascend, each once (%s after %s)", ErrInvalidConfig, d, delays[i-1])
		}
	}
	return nil
}

// ParseDelays parses a comma-separated list of durations ("1s,10s,60s";
// a bare number is seconds, as in every duration setting), sorts it and
// checks it as Config.Validate does: at least one, each positive, at most
// MaxDelay, none twice.
func ParseDelays(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		d, err := time.ParseDuration(f)
		if n, ferr := strconv.ParseFloat(f, 64); err != nil && ferr == nil && n > 0 && n <= MaxDelay.Seconds() {
			d, err = time.Duration(n*float64(time.Second)), nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %q is not a duration like 1s or 500ms", ErrInvalidConfig, f)
		}
		out = append(out, d)
	}
	slices.Sort(out)
	if err := validDelays(out); err != nil {
		return nil, err
	}
	return out, nil
}

// Timescale is the label of a delay in metrics and reports: "1s", "10s",
// "60s" (whole seconds as seconds, not "1m0s"), "50ms", else as
// time.Duration prints it.
func Timescale(d time.Duration) string {
	switch {
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	case d%time.Millisecond == 0:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	}
	return d.String()
}
