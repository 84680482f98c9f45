package guard

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// stampHead starts every stamped value: Stamp's "@gen ".
const stampHead = "@gen "

// Observation is what one read of a cache key through the read protocol
// found, in full: the value's stamp beside the current generations, for a
// checker that must tell a stale value from a missing or refilled one
// (package consistency). Read answers only "current or not"; Inspect says
// why.
type Observation struct {
	// Key is the cache key read.
	Key string
	// Exists reports whether the key held a value.
	Exists bool
	// Stamped reports whether the value starts with a stamp head
	// ("@gen <token> ...\n"); a value written outside the protocol has none.
	Stamped bool
	// Stamp holds the tokens of the value's stamp, in the order of
	// Generations; nil when not stamped.
	Stamp []string
	// Generations are the guard's generation keys of Key, as the protocol
	// reads them: Keys(Key) on one server, ClusterKeys(Key) on a cluster.
	Generations []string
	// Current holds the token each of Generations held, a missing one
	// reading "0".
	Current []string
	// IsCurrent is true when the value is stamped with exactly the current
	// generations: what Read would return as a hit.
	IsCurrent bool
}

// GenerationKeys returns the generation keys that guard key on this
// deployment: Keys(key) on one server, ClusterKeys(key) on a cluster.
func (p *Protocol) GenerationKeys(key string) []string {
	if p.cluster != nil {
		return ClusterKeys(key)
	}
	return Keys(key)
}

// Inspect reads keys as Read does (GET each key and its guard generations,
// all in one pipeline: one round trip; on a cluster go-redis sends each
// node its part, and reads the masters, never a replica, unless the client
// was built with ReadOnly) and returns what each read found, in the order
// of keys. The first command error fails the whole call.
func (p *Protocol) Inspect(ctx context.Context, keys []string) ([]Observation, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	pipe := p.rdb().Pipeline()
	cmds := make([]readCmds, len(keys))
	for i, k := range keys {
		cmds[i] = p.queueRead(ctx, pipe, k)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	out := make([]Observation, len(keys))
	for i, k := range keys {
		o, err := p.observe(k, cmds[i])
		if err != nil {
			return nil, err
		}
		out[i] = o
	}
	return out, nil
}

// observe turns the commands of one read into its Observation.
func (p *Protocol) observe(key string, r readCmds) (Observation, error) {
	o := Observation{Key: key, Generations: p.GenerationKeys(key)}
	value, err := r.get.Result()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		return o, fmt.Errorf("guard: inspect %s: %w", key, err)
	default:
		o.Exists = true
	}
	if o.Current, err = r.current(); err != nil {
		return o, fmt.Errorf("guard: inspect %s: %w", key, err)
	}
	if o.Exists {
		o.Stamp, o.Stamped = ParseStamp(value)
		o.IsCurrent = stampedWith(value, o.Current)
	}
	return o, nil
}

// ParseStamp returns the tokens of the stamp value starts with ("@gen
// <token> <token> ...\n", see Stamp), and false when value has no stamp
// head.
func ParseStamp(value string) ([]string, bool) {
	rest, ok := strings.CutPrefix(value, stampHead)
	if !ok {
		return nil, false
	}
	head, _, ok := strings.Cut(rest, "\n")
	if !ok {
		return nil, false
	}
	return strings.Split(head, " "), true
}
