package engine

import (
	"context"
	"errors"

	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

// MaxCapturedKeys bounds the keys a Capture reports per pattern.
const MaxCapturedKeys = 100

// Capture is what the invalidation of a job with Job.Capture set moved in
// the generation guard, for the consistency checker: generation tokens are
// unique and never reused (package guard), so a value found later whose
// stamp holds a displaced token was filled before the invalidation, and one
// stamped with the batch token or a newer one after it, without a clock.
//
// The single-node engine reads the tokens in the round trip that moves
// them, at the same place in the pipeline: each exact key's own generation
// is removed with GETDEL (which returns the token removed) in place of the
// batch's UNLINK, each pattern scope's generation is SET with GET (which
// returns the token it replaces). The cluster engine does the same in its
// first round trip (scopes) and before each slot's script (own
// generations), routed by slot.
type Capture struct {
	// Generations reports whether the engine advanced the generation guard
	// for the job (engine Config.Generations, or EnableGenerations). When
	// false no token was moved or captured, and a value found later cannot
	// be dated.
	Generations bool
	// Exact lists, for each exact key of the job (and, on a cluster, each
	// pattern without glob characters), its own generation and the token
	// removed from it.
	Exact []Displaced
	// Scopes lists, for each pattern scope of the job, its generation, the
	// token it held before and the batch token it was set to.
	Scopes []Displaced
	// Removed holds, for each pattern of the job, up to MaxCapturedKeys of
	// the keys the sweep removed for the job (a uniform sample; see
	// sweep.Walker.SweepSample), gathered from every node.
	Removed map[string][]string
}

// Displaced is one generation key an invalidation moved.
type Displaced struct {
	// Scope is the exact key, or the pattern scope (cachekeys.PatternScope).
	Scope string
	// Key is the generation key: guard.Key(Scope), or guard.ClusterKey for
	// an exact key on a Redis Cluster.
	Key string
	// Previous is the token the key held before the invalidation; "" when
	// it held none.
	Previous string
	// Token is the token the invalidation set: the batch token for a
	// scope, "" for an exact key (its generation is removed).
	Token string
}

// captures holds the Capture of each job of a batch with Capture set; nil
// (no allocation) for a batch without one, the case of every batch when the
// consistency checker is off.
type captures []*Capture

// newCaptures returns, for each job with Capture, its empty Capture;
// gensOn says whether the batch moves generations.
func newCaptures(jobs []Job, gensOn bool) captures {
	var caps captures
	for i, job := range jobs {
		if job.Capture {
			if caps == nil {
				caps = make(captures, len(jobs))
			}
			caps[i] = &Capture{Generations: gensOn}
		}
	}
	return caps
}

// of returns job i's Capture, nil when it has none.
func (c captures) of(i int) *Capture {
	if c == nil {
		return nil
	}
	return c[i]
}

// capturer queues the capturing commands of a batch's Capture jobs: each
// generation key once, so that two jobs of one batch that name the same
// key both see the token from before the batch. Its zero value is ready,
// and allocates nothing until a command is queued.
type capturer struct {
	getdel map[string]*redis.StringCmd
	setget map[string]*redis.StatusCmd
}

// remove queues GETDEL of generation key gen, once, and returns it.
func (c *capturer) remove(ctx context.Context, pipe redis.Pipeliner, gen string) *redis.StringCmd {
	if cmd, ok := c.getdel[gen]; ok {
		return cmd
	}
	if c.getdel == nil {
		c.getdel = map[string]*redis.StringCmd{}
	}
	cmd := pipe.GetDel(ctx, gen)
	c.getdel[gen] = cmd
	return cmd
}

// set queues SET gen token GET with the guard's TTL, once, and returns it.
func (c *capturer) set(ctx context.Context, pipe redis.Pipeliner, gen, token string) *redis.StatusCmd {
	if cmd, ok := c.setget[gen]; ok {
		return cmd
	}
	if c.setget == nil {
		c.setget = map[string]*redis.StatusCmd{}
	}
	cmd := pipe.SetArgs(ctx, gen, token, redis.SetArgs{Get: true, TTL: guard.TTL})
	c.setget[gen] = cmd
	return cmd
}

// previous returns the token a capturing command returned: "" for none.
func previous(cmd interface{ Result() (string, error) }) string {
	v, err := cmd.Result()
	if err != nil {
		return ""
	}
	return v
}

// capturedOK reports whether err, a generation command's, is no failure:
// a GETDEL or SET GET of a key that held nothing replies nil.
func capturedOK(err error) bool { return err == nil || errors.Is(err, redis.Nil) }

// addRemoved adds the keys o removed per pattern to c's, at most n per
// pattern; a nil c or o adds nothing.
func (c *Capture) addRemoved(o *Capture, n int) {
	if c == nil || o == nil {
		return
	}
	for p, keys := range o.Removed {
		if c.Removed == nil {
			c.Removed = map[string][]string{}
		}
		room := n - len(c.Removed[p])
		c.Removed[p] = append(c.Removed[p], keys[:max(0, min(room, len(keys)))]...)
	}
}

// Merge returns the capture of a job run again after an attempt that
// captured c (nil: none) and then failed, with o the new attempt's: the
// token an earlier attempt displaced is the one from before the
// invalidation (the later attempt finds what fills wrote in between, or
// nothing), so for each generation key the earliest non-empty Previous is
// kept, with the latest Token; the removed keys are o's, else c's.
func (c *Capture) Merge(o *Capture) *Capture {
	if c == nil {
		return o
	}
	if o == nil {
		return c
	}
	m := &Capture{Generations: c.Generations || o.Generations,
		Exact: mergeDisplaced(c.Exact, o.Exact), Scopes: mergeDisplaced(c.Scopes, o.Scopes), Removed: o.Removed}
	if len(m.Removed) == 0 {
		m.Removed = c.Removed
	}
	return m
}

// mergeDisplaced is later with each key's Previous taken from earlier when
// earlier has one; keys only earlier has are kept.
func mergeDisplaced(earlier, later []Displaced) []Displaced {
	first := make(map[string]Displaced, len(earlier))
	for _, d := range earlier {
		first[d.Key] = d
	}
	out := make([]Displaced, 0, len(later)+len(earlier))
	for _, d := range later {
		if e, ok := first[d.Key]; ok {
			if e.Previous != "" {
				d.Previous = e.Previous
			}
			delete(first, d.Key)
		}
		out = append(out, d)
	}
	for _, d := range earlier {
		if _, ok := first[d.Key]; ok {
			out = append(out, d)
		}
	}
	return out
}
