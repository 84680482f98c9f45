package deadletter

import (
	"context"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/events"
)

// ReplayOutcome says what a replay did with one letter.
type ReplayOutcome string

// The outcomes of a replay.
const (
	// Replayed: republished to its subject and deleted.
	Replayed ReplayOutcome = "replayed"
	// WouldReplay: a dry run's Replayed.
	WouldReplay ReplayOutcome = "would replay"
	// Kept: the current rules still reject it, so it stays.
	Kept ReplayOutcome = "kept"
	// NotReplayed: the publish failed; the letter stays.
	NotReplayed ReplayOutcome = "not replayed"
	// NotDeleted: republished, but the letter could not be deleted.
	NotDeleted ReplayOutcome = "not deleted"
)

// ReplayOptions steer Replay.
type ReplayOptions struct {
	// Rules, when set, are the current rules: a letter they still reject
	// is kept, unless Force.
	Rules *cachekeys.Rules
	// Force replays letters the rules still reject.
	Force bool
	// DryRun reports what would be done and does nothing.
	DryRun bool
}

// ReplayResult is what happened to one letter.
type ReplayResult struct {
	Letter  Letter
	Outcome ReplayOutcome
	// Why is the rules' refusal of a kept letter.
	Why string
	// StreamSeq and Duplicate are the event stream's answer to the
	// republish.
	StreamSeq uint64
	Duplicate bool
	// Err is the failure of a NotReplayed or NotDeleted letter.
	Err error
}

// ReplayCounts sum up a replay; Replayed counts WouldReplay on a dry run.
type ReplayCounts struct {
	Replayed, Kept, Failed int
}

// publishTimeout bounds the republish of one letter.
const publishTimeout = 10 * time.Second

// Replay republishes each letter f selects to its original subject (with
// Letter.ReplayID as Nats-Msg-Id) and deletes it once the event stream has
// acknowledged; report, when set, hears of each letter. A letter that
// cannot be replayed is counted as failed and the replay goes on. This is
// `invalidator dlq replay`, and the console's Replay.
func (s *Store) Replay(ctx context.Context, f Filter, o ReplayOptions, report func(ReplayResult)) (ReplayCounts, error) {
	var c ReplayCounts
	if report == nil {
		report = func(ReplayResult) {}
	}
	err := s.List(ctx, f, func(l Letter) error {
		r := s.replayOne(ctx, l, o)
		switch r.Outcome {
		case Replayed, WouldReplay:
			c.Replayed++
		case Kept:
			c.Kept++
		default:
			c.Failed++
		}
		report(r)
		return nil
	})
	return c, err
}

func (s *Store) replayOne(ctx context.Context, l Letter, o ReplayOptions) ReplayResult {
	if o.Rules != nil && !o.Force {
		if why := StillRejected(o.Rules, l); why != "" {
			return ReplayResult{Letter: l, Outcome: Kept, Why: why}
		}
	}
	if o.DryRun {
		return ReplayResult{Letter: l, Outcome: WouldReplay}
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	ack, err := s.js.PublishMsg(pctx, l.Replay())
	cancel()
	if err != nil {
		return ReplayResult{Letter: l, Outcome: NotReplayed, Err: err}
	}
	r := ReplayResult{Letter: l, Outcome: Replayed, StreamSeq: ack.Sequence, Duplicate: ack.Duplicate}
	if err := s.Delete(ctx, l.Seq); err != nil {
		r.Outcome, r.Err = NotDeleted, err
	}
	return r
}

// StillRejected says why the current rules would dead-letter l again, or "".
func StillRejected(rules *cachekeys.Rules, l Letter) string {
	ev, err := events.Decode(l.Subject, l.OriginalMsgID, l.Body)
	if err == nil {
		_, err = rules.Plan(ev.Subject, ev.Data)
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// Purge deletes each letter f selects, as it reads them, and returns how
// many it deleted. A filter of sequences alone deletes them without
// reading them first. This is `invalidator dlq purge`, and the console's
// Purge.
func (s *Store) Purge(ctx context.Context, f Filter) (int, error) {
	n := 0
	del := func(seq uint64) error {
		if err := s.Delete(ctx, seq); err != nil {
			return err
		}
		n++
		return nil
	}
	if len(f.Seqs) > 0 && f.Subject == "" && f.Reason == "" && f.Since == 0 && f.Kind == "" && f.Text == "" {
		for _, q := range f.Seqs {
			if err := del(q); err != nil {
				return n, err
			}
		}
		return n, nil
	}
	err := s.List(ctx, f, func(l Letter) error { return del(l.Seq) })
	return n, err
}
