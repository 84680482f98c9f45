package consistency

import (
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/guard"
)

// Result is the class of one read of a key.
type Result string

// The results of a read, see the package documentation.
const (
	// Consistent: the key is absent.
	Consistent Result = "consistent"
	// Masked: the value is stamped, but the stamp is not the current
	// generations: readers of the protocol miss it.
	Masked Result = "masked"
	// Refilled: the value is current and was filled after the
	// invalidation (its stamp holds no token the invalidation displaced).
	Refilled Result = "refilled"
	// Stale: the value is current and filled before the invalidation (its
	// stamp holds a token the invalidation displaced).
	Stale Result = "stale"
	// Unknown: the value has no stamp (written outside the protocol), or
	// the invalidation moved no generation (generations were off), so the
	// read cannot be dated; reported, not counted in the nines.
	Unknown Result = "unknown"
)

// Results lists every Result, in the order of the table.
var Results = []Result{Consistent, Masked, Refilled, Stale, Unknown}

// Kind says how the invalidation named a key.
type Kind string

// The kinds of key checked.
const (
	// Exact: a key the event named.
	Exact Kind = "exact"
	// Pattern: a key a pattern's sweep removed.
	Pattern Kind = "pattern"
)

// touched indexes the generation keys an invalidation moved.
type touched map[string]engine.Displaced

// touchedBy returns the generation keys c moved.
func touchedBy(c *engine.Capture) touched {
	t := touched{}
	for _, d := range c.Exact {
		t[d.Key] = d
	}
	for _, d := range c.Scopes {
		t[d.Key] = d
	}
	return t
}

// classify returns the class of read o of a key whose invalidation moved
// the generations t (gens false: it moved none), and the displaced token
// its stamp holds when stale.
func classify(o guard.Observation, t touched, gens bool) (Result, engine.Displaced) {
	switch {
	case !o.Exists:
		return Consistent, engine.Displaced{}
	case !o.Stamped:
		return Unknown, engine.Displaced{}
	case !o.IsCurrent:
		return Masked, engine.Displaced{}
	case !gens:
		return Unknown, engine.Displaced{}
	}
	for i, g := range o.Generations {
		d, ok := t[g]
		if ok && i < len(o.Stamp) && d.Previous != "" && d.Previous != d.Token && o.Stamp[i] == d.Previous {
			return Stale, d
		}
	}
	return Refilled, engine.Displaced{}
}
