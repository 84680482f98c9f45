package sweep

import "golang.org/x/time/rate"

// PaceWithCount makes a budgeted walker pace the other way, for the
// latency comparison of TestBudgetReaderLatency: COUNT grows up to max as
// without a budget, and the walk waits between pages instead.
func PaceWithCount(w *Walker, max int) {
	w.cfg.MaxScanCount = max
	w.limiter = rate.NewLimiter(rate.Limit(w.cfg.Budget), max)
}
