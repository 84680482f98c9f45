package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/redis/go-redis/v9"
	"golang.org/x/term"
)

const purgeSummary = `Removes keys now, through the worker's SCAN/UNLINK engine. Each argument is an
exact key or a glob pattern, checked like a rule template: it must start with
a literal prefix and ':' before any glob ("user:*" is fine, "*" is refused).
All patterns are served by one shared SCAN pass. REDIS_URL (or --redis-url)
says where; the pool and timeout settings, SCAN_COUNT and SCAN_BUDGET are
those of run.
On a terminal a progress bar (keys examined / DBSIZE, rate, ETA) is drawn on
stderr while the pass runs. --dry-run lists what would go. --json prints one
summary object instead, and no bar.`

// maxListed bounds the keys --dry-run prints.
const maxListed = 1000

// barInterval is how often the progress bar is redrawn; frames closer than
// barMinGap are skipped, so it is never redrawn more than 5 times a second.
const (
	barInterval = 200 * time.Millisecond
	barMinGap   = barInterval * 9 / 10
)

func purgeCmd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "purge", "PATTERN... [--dry-run] [--json]", purgeSummary)
	build := config.PurgeFlags(fs, e.getenv)
	dry := fs.Bool("dry-run", false, "print what would be removed, remove nothing")
	asJSON := fs.Bool("json", false, "print one JSON summary object on stdout at the end (and no progress bar)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	gens := fs.Bool("generations", false, "advance the generation guard of each key and pattern first, as the worker does when cache warming is on, so a warm fetch in flight cannot write an older value back")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("purge needs at least one PATTERN, see --help")
	}
	job, err := purgeJob(pos)
	if err != nil {
		return err
	}
	cfg, err := build()
	if err != nil {
		return usageError{err}
	}
	rdb := config.NewRedisClient(cfg.Redis, cfg.Topology)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	eng, err := newEngine(rdb, engine.Config{ScanCount: cfg.ScanCount, Generations: *gens,
		Sweep: sweep.Config{Budget: cfg.ScanBudget}})
	if err != nil {
		return usageError{err}
	}
	defer eng.Close()
	if *dry {
		return preview(ctx, e, eng, job, *asJSON)
	}
	var stop func()
	if w := barOutput(e, *asJSON); w != nil && len(job.Patterns) > 0 {
		stop = startBar(ctx, w, rdb, eng)
	}
	res, err := engine.Invalidate(ctx, eng, job)
	if stop != nil {
		stop()
	}
	if err != nil {
		return fmt.Errorf("purge: %w (removed %d keys before the error)", err, res.Removed)
	}
	if *asJSON {
		return writeJSON(e.stdout, newPurgeReport(job, res, false))
	}
	fmt.Fprintf(e.stdout, "scanned %d keys, removed %d in %s\n", res.Scanned, res.Removed, res.Duration.Round(time.Millisecond))
	return nil
}

func preview(ctx context.Context, e env, eng sweepingEngine, job engine.Job, asJSON bool) error {
	seen := map[string]bool{}
	var listed []string
	res, err := eng.Preview(ctx, job, func(k string) {
		if !seen[k] && len(seen) < maxListed {
			listed = append(listed, k)
			if !asJSON {
				fmt.Fprintln(e.stdout, k)
			}
		}
		seen[k] = true
	})
	if err != nil {
		return fmt.Errorf("purge --dry-run: %w", err)
	}
	if asJSON {
		return writeJSON(e.stdout, dryRunReport{
			purgeReport: newPurgeReport(job, res, true),
			WouldRemove: len(seen),
			Keys:        append([]string{}, listed...),
		})
	}
	if len(seen) > maxListed {
		fmt.Fprintf(e.stdout, "... and %d more\n", len(seen)-maxListed)
	}
	fmt.Fprintf(e.stdout, "dry run: scanned %d keys, would remove %d\n", res.Scanned, len(seen))
	return nil
}

// purgeReport is the summary --json prints.
type purgeReport struct {
	Patterns   []string `json:"patterns"`
	Exact      []string `json:"exact"`
	Removed    int64    `json:"removed"`
	Examined   int64    `json:"examined"`
	ScanCalls  int64    `json:"scan_calls"`
	DurationMS int64    `json:"duration_ms"`
	DryRun     bool     `json:"dry_run"`
}

// dryRunReport is the summary --json --dry-run prints: Keys holds the first
// maxListed keys that would go.
type dryRunReport struct {
	purgeReport
	WouldRemove int      `json:"would_remove"`
	Keys        []string `json:"keys"`
}

func newPurgeReport(job engine.Job, res engine.Result, dry bool) purgeReport {
	r := purgeReport{
		Patterns:   append([]string{}, job.Patterns...),
		Exact:      append([]string{}, job.Exact...),
		Examined:   res.Scanned,
		ScanCalls:  res.ScanCalls,
		DurationMS: res.Duration.Milliseconds(),
		DryRun:     dry,
	}
	if !dry {
		r.Removed = res.Removed
	}
	return r
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("purge: encode summary: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// purgeJob checks each argument like a template without placeholders.
func purgeJob(args []string) (engine.Job, error) {
	job, err := engine.ParseJob(args)
	if err != nil {
		return job, usageError{err}
	}
	return job, nil
}

// terminal reports whether w is an *os.File on a terminal. Other character
// devices are not: cron, systemd and "docker exec -T" give /dev/null, where
// there is nobody to answer a prompt or watch a bar.
func terminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// barOutput returns where the progress bar goes, or nil for no bar: stderr,
// when stdout is a terminal, --json is off, and stderr is not redirected to
// a file or a pipe.
func barOutput(e env, asJSON bool) io.Writer {
	if asJSON || !terminal(e.stdout) {
		return nil
	}
	if _, ok := e.stderr.(*os.File); ok && !terminal(e.stderr) {
		return nil
	}
	return e.stderr
}

// startBar reads DBSIZE once and draws the bar from the engine's sweep
// status every barInterval, in a goroutine; the function it returns stops
// that goroutine, waits for it and clears the bar. Without DBSIZE there is
// no bar.
func startBar(ctx context.Context, w io.Writer, rdb redis.UniversalClient, eng sweepingEngine) func() {
	total, err := rdb.DBSize(ctx).Result()
	if err != nil {
		return func() {}
	}
	b := newBar(w, total, time.Now)
	status := func() (sweep.Status, bool) {
		return mergeSweeps(eng.Sweeps())
	}
	stop, done := make(chan struct{}), make(chan struct{})
	tick := time.NewTicker(barInterval)
	go func() {
		defer close(done)
		defer tick.Stop()
		b.run(status, stop, tick.C)
	}()
	return func() {
		close(stop)
		<-done
	}
}

// bar draws a one-line progress bar, redrawn in place with \r.
type bar struct {
	w     io.Writer
	total int64 // DBSIZE at the start
	now   func() time.Time
	start time.Time
	last  time.Time // of the last frame; zero before the first
	width int       // of the last frame, to clear it
}

func newBar(w io.Writer, total int64, now func() time.Time) *bar {
	return &bar{w: w, total: total, now: now, start: now()}
}

// run draws a frame at once and on every tick while the walk runs, until
// stop is closed; then it clears the bar.
func (b *bar) run(status func() (sweep.Status, bool), stop <-chan struct{}, tick <-chan time.Time) {
	defer b.clear()
	b.draw(sweep.Status{})
	for {
		select {
		case <-stop:
			return
		case <-tick:
			if s, ok := status(); ok && s.Running {
				b.draw(s)
			}
		}
	}
}

// draw redraws the bar for s unless the last frame is younger than
// barMinGap.
func (b *bar) draw(s sweep.Status) {
	now := b.now()
	if !b.last.IsZero() && now.Sub(b.last) < barMinGap {
		return
	}
	b.last = now
	line := b.frame(s, now.Sub(b.start))
	pad := strings.Repeat(" ", max(0, b.width-len(line)))
	b.width = len(line)
	fmt.Fprintf(b.w, "\r%s%s", line, pad)
}

// clear blanks the last frame and returns the cursor to the line start.
func (b *bar) clear() {
	if b.width > 0 {
		fmt.Fprintf(b.w, "\r%s\r", strings.Repeat(" ", b.width))
		b.width = 0
	}
}

// frame renders s, elapsed into the pass:
// "[#######.............]  37% 18,500/50,000 keys  9,250 keys/s  ETA 3s".
func (b *bar) frame(s sweep.Status, elapsed time.Duration) string {
	const cells = 20
	p := min(max(s.Progress, 0), 1)
	pct := int(math.Floor(p*100 + 1e-9)) // 0.37 is 36.99… in floating point
	filled := pct * cells / 100
	rate, eta := "-", "-"
	if secs := elapsed.Seconds(); secs > 0 {
		rate = thousands(int64(float64(s.Examined) / secs))
	}
	if p > 0 {
		eta = time.Duration(float64(elapsed) * (1 - p) / p).Round(time.Second).String()
	}
	return fmt.Sprintf("[%s%s] %3d%% %s/%s keys  %s keys/s  ETA %s",
		strings.Repeat("#", filled), strings.Repeat(".", cells-filled), pct,
		thousands(s.Examined), thousands(b.total), rate, eta)
}

// thousands formats n with a comma every three digits.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// mergeSweeps folds the walks of several nodes into one status for the bar.
func mergeSweeps(all []sweep.Status) (sweep.Status, bool) { return sweep.Merge(all) }
