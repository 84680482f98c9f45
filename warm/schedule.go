package warm

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/nats-io/nuid"
	"github.com/sourcegraph/conc"
)

// Scheduler refreshes global keys ahead of their expiry, each on its own
// interval. Time is cut into slots of the entry's interval; in each slot
// every replica wakes at a random point of the slot's first tenth (at most
// 5 s in) and tries to take the slot's lock in Redis (SET NX with the slot
// number in the key), so exactly one replica refreshes per interval
// cluster-wide. Refreshes go through the Warmer, and so through the
// generation guard.
type Scheduler struct {
	warmer  *Warmer
	entries []cachekeys.Schedule
	log     *slog.Logger
	owner   string
}

// NewScheduler returns a scheduler of entries on w (with w's logger);
// start it with Run.
func NewScheduler(w *Warmer, entries []cachekeys.Schedule) *Scheduler {
	return &Scheduler{warmer: w, entries: entries, log: w.log, owner: nuid.Next()}
}

// Run refreshes until ctx ends and returns when every entry's loop is done.
func (s *Scheduler) Run(ctx context.Context) {
	var wg conc.WaitGroup
	for _, e := range s.entries {
		wg.Go(func() { s.loop(ctx, e) })
	}
	wg.Wait()
}

func (s *Scheduler) loop(ctx context.Context, e cachekeys.Schedule) {
	req := e.Request()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		slot, at := nextSlot(time.Now(), e.Every)
		t.Reset(time.Until(at))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.claim(ctx, req.Key, slot, e.Every) {
			s.warmer.obs.ScheduledRefresh(req.Key)
			s.warmer.Warm(ctx, req)
		}
	}
}

// nextSlot is the number of the slot after now's and when in it to wake.
func nextSlot(now time.Time, every time.Duration) (int64, time.Time) {
	slot := now.UnixNano()/int64(every) + 1
	jitter := time.Duration(rand.Int64N(int64(min(every/10, 5*time.Second)) + 1))
	return slot, time.Unix(0, slot*int64(every)).Add(jitter)
}

// claim takes the slot's lock; only one replica gets it.
func (s *Scheduler) claim(ctx context.Context, key string, slot int64, every time.Duration) bool {
	lock := DefaultScheduleLockPrefix + key + ":" + strconv.FormatInt(slot, 10)
	ok, err := s.warmer.rdb.SetNX(ctx, lock, s.owner, every).Result()
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("⚠️ schedule lock failed", slog.String("key", key), slog.Any("error", err))
		}
		return false
	}
	return ok
}
