package main

import (
	"context"
	"fmt"
	"log"
	"slices"
	"time"

	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/worker"
)

// checkerScenario measures what the consistency checker costs at its
// default sample (CONSISTENCY_SAMPLE=0.01): the worker drains a backlog of
// exact-key events with generations on, the checker off and on, in rounds
// whose order alternates; the ratio judged is the median of the rounds'
// on/off, as for the exact-key figures.
func checkerScenario(ctx context.Context, e *env, o options, rep *report) error {
	n := o.checkerEvts
	drainWith := func(sample float64) (float64, consistency.Report, error) {
		var rpt consistency.Report
		if err := e.freshUsers(ctx, n); err != nil {
			return 0, rpt, err
		}
		if err := publishUsers(e, n); err != nil {
			return 0, rpt, err
		}
		eng, err := engine.NewRedis(e.rdb, engine.Config{Generations: true})
		if err != nil {
			return 0, rpt, err
		}
		defer eng.Close()
		w, stop, err := startWorkerConfig(e, worker.Config{Consistency: consistency.Config{Sample: sample}}, eng, nil)
		if err != nil {
			return 0, rpt, err
		}
		defer stop()
		start := time.Now()
		if err := waitApplied(w, int64(n), 10*time.Minute); err != nil {
			return 0, rpt, err
		}
		rate := float64(n) / time.Since(start).Seconds()
		if left, _ := e.countKeys(ctx, "user:*"); left != 0 {
			return 0, rpt, fmt.Errorf("%d user keys left", left)
		}
		if c := w.Consistency(); c != nil {
			// The first delay's checks of the last events, so that the
			// report shows the checker did read.
			time.Sleep(consistency.DefaultDelays[0] + 500*time.Millisecond)
			rpt = c.Report(time.Now())
		}
		return rate, rpt, nil
	}
	var offs, ons, ratios []float64
	var last consistency.Report
	for round := range o.checkerRnds {
		var off, on float64
		first, second := -1.0, 0.0 // -1: off (a negative sample turns the checker off), 0: the default sample
		if round%2 == 1 {
			first, second = second, first
		}
		for _, s := range []float64{first, second} {
			rate, rpt, derr := drainWith(s)
			if derr != nil {
				return fmt.Errorf("checker %s: %w", map[bool]string{true: "off", false: "on"}[s < 0], derr)
			}
			if s < 0 {
				off = rate
			} else {
				on, last = rate, rpt
			}
		}
		offs, ons, ratios = append(offs, off), append(ons, on), append(ratios, on/off)
	}
	log.Printf("checker: off %.0f/s, on %.0f/s, ratios %.3f", offs, ons, ratios)
	slices.Sort(offs)
	slices.Sort(ons)
	slices.Sort(ratios)
	mid := len(ratios) / 2
	rounds := fmt.Sprintf("%d rounds", len(ratios))
	rep.add(row{group: "checker", name: fmt.Sprintf("worker, backlog of %d exact-key events, generations on, checker off (median of %s)", n, rounds), rate: offs[mid], ratio: 1})
	rep.add(row{group: "checker", name: fmt.Sprintf("the same, checker at its default sample %g (median of %s; ratio: the median of the rounds' ratios, %.3f–%.3f; %s)",
		consistency.DefaultSample, rounds, ratios[0], ratios[len(ratios)-1], checkedSummary(last)), rate: ons[mid], ratio: ratios[mid],
		target: "≥ 0.98× off", ok: ratios[mid] >= 0.98})
	return nil
}

// checkedSummary says what the checker of the last round read, at its
// first timescale.
func checkedSummary(r consistency.Report) string {
	if len(r.Timescales) == 0 {
		return "no checks"
	}
	w := r.Timescales[0].LastHour
	return fmt.Sprintf("at %s, the last round: %d keys checked, %d stale, %d unknown, %d samples dropped",
		r.Timescales[0].Timescale, w.Checked, w.Stale, w.Unknown, r.Dropped)
}
