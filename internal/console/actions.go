package console

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/engine/sweep"
)

// actionTimeout bounds a replay or purge of letters done in one request.
const actionTimeout = 10 * time.Minute

// maxReported bounds the per-letter lines a replay's result shows.
const maxReported = 100

// letterAction is a Replay or Purge of letters: which, and of what.
type letterAction struct {
	Verb  string // replay or purge
	Scope string // one, selected or all
	Seqs  []uint64
	Q     listQuery
	Count int
}

func (a letterAction) filter() deadletter.Filter {
	if a.Scope == "all" {
		return a.Q.filter()
	}
	return deadletter.Filter{Seqs: a.Seqs}
}

// Label is "Replay" or "Purge".
func (a letterAction) Label() string { return strings.ToUpper(a.Verb[:1]) + a.Verb[1:] }

// readAction reads do=<verb>:<seq|selected|all>, the selected seq values
// and the list's filter.
func readAction(r *http.Request) (letterAction, error) {
	verb, scope, _ := strings.Cut(r.PostFormValue("do"), ":")
	a := letterAction{Verb: verb, Q: readListQuery(r.PostForm)}
	if verb != "replay" && verb != "purge" {
		return a, fmt.Errorf("unknown action %q", verb)
	}
	switch scope {
	case "all", "selected":
		a.Scope = scope
	default:
		n, err := strconv.ParseUint(scope, 10, 64)
		if err != nil || n == 0 {
			return a, fmt.Errorf("%q is not a letter", scope)
		}
		a.Scope, a.Seqs = "one", []uint64{n}
	}
	if a.Scope == "selected" {
		for _, s := range r.PostForm["seq"] {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil || n == 0 {
				return a, fmt.Errorf("%q is not a letter", s)
			}
			a.Seqs = append(a.Seqs, n)
		}
		if len(a.Seqs) == 0 {
			return a, fmt.Errorf("no letter is selected: tick the letters first")
		}
	}
	return a, nil
}

type resultData struct {
	A        letterAction
	Counts   deadletter.ReplayCounts
	Purged   int
	Lines    []string
	More     int
	Err      string
	Back     string
	Duration string
}

// dlqAction asks for confirmation, naming how many letters the action
// takes; with confirm=yes it replays or purges them through package
// deadletter, as `invalidator dlq replay|purge` does.
func (c *Console) dlqAction(w http.ResponseWriter, r *http.Request) {
	if c.d.Letters == nil {
		c.problem(w, http.StatusServiceUnavailable, "No dead-letter stream is configured.", c.base)
		return
	}
	if err := r.ParseForm(); err != nil {
		c.problem(w, http.StatusBadRequest, "Could not read the form.", c.base+"dlq")
		return
	}
	a, err := readAction(r)
	back := c.link(a.Q.values(a.Q.Offset, a.Q.Kind))
	if err != nil {
		c.problem(w, http.StatusBadRequest, err.Error(), back)
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		c.confirmLetters(w, r, a, back)
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(actionTimeout + 10*time.Second))
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	start := time.Now()
	d := resultData{A: a, Back: back}
	if a.Verb == "purge" {
		d.Purged, err = c.d.Letters.Purge(ctx, a.filter())
	} else {
		d.Counts, err = c.d.Letters.Replay(ctx, a.filter(), deadletter.ReplayOptions{Rules: c.d.Rules}, func(res deadletter.ReplayResult) {
			if len(d.Lines) >= maxReported {
				d.More++
				return
			}
			d.Lines = append(d.Lines, replayLine(res))
		})
	}
	if err != nil {
		d.Err = err.Error()
	}
	d.Duration = time.Since(start).Round(time.Millisecond).String()
	c.d.Logger.Info("🧾 console dead-letter action", "action", a.Verb, "scope", a.Scope, "replayed", d.Counts.Replayed,
		"kept", d.Counts.Kept, "failed", d.Counts.Failed, "purged", d.Purged)
	c.render(w, http.StatusOK, "result", a.Label()+" done", d)
}

func (c *Console) confirmLetters(w http.ResponseWriter, r *http.Request, a letterAction, back string) {
	switch a.Scope {
	case "all":
		p, err := c.letters.Page(r.Context(), a.Q.filter(), 0, pageSize)
		if err != nil {
			c.problem(w, http.StatusServiceUnavailable, "Could not count the letters: "+err.Error(), back)
			return
		}
		a.Count = p.Matched
	default:
		a.Count = len(a.Seqs)
	}
	if a.Count == 0 {
		c.problem(w, http.StatusOK, "No letter matches: nothing to "+a.Verb+".", back)
		return
	}
	c.render(w, http.StatusOK, "confirm", a.Label()+"?", map[string]any{"A": a, "Back": back})
}

// replayLine is the line `invalidator dlq replay` prints for one letter.
func replayLine(r deadletter.ReplayResult) string {
	l := r.Letter
	switch r.Outcome {
	case deadletter.Kept:
		return fmt.Sprintf("%d kept: the current rules still reject it: %s", l.Seq, r.Why)
	case deadletter.NotReplayed:
		return fmt.Sprintf("%d not replayed: %v", l.Seq, r.Err)
	case deadletter.NotDeleted:
		return fmt.Sprintf("%d replayed as stream sequence %d, but not deleted: %v", l.Seq, r.StreamSeq, r.Err)
	}
	return fmt.Sprintf("%d replayed to %s as stream sequence %d", l.Seq, l.Subject, r.StreamSeq)
}

// purgeStatus is the state of the console's key purge, for the page and
// its progress bar.
type purgeStatus struct {
	Running  bool     `json:"running"`
	Patterns []string `json:"patterns,omitempty"`
	// Progress is the fraction of the SCAN pass covered, Examined the keys
	// it examined.
	Progress float64 `json:"progress"`
	Examined int64   `json:"examined"`
	// Removed, Duration and Error are set once it ends.
	Removed  int64  `json:"removed"`
	Duration string `json:"duration,omitempty"`
	Error    string `json:"error,omitempty"`
	Done     bool   `json:"done"`
}

// purgeJob runs one key purge at a time.
type purgeJob struct {
	mu     sync.Mutex
	st     purgeStatus
	sweeps func() []sweep.Status
}

func (p *purgeJob) status() purgeStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.st
	if s.Running && p.sweeps != nil {
		if m, ok := sweep.Merge(p.sweeps()); ok && m.Running {
			s.Progress, s.Examined = m.Progress, m.Examined
		}
	}
	return s
}

type purgeData struct {
	Patterns string
	Job      engine.Job
	Count    int
	Listed   []string
	Status   purgeStatus
	Scanned  int64
}

func (c *Console) purgePage(w http.ResponseWriter, _ *http.Request) {
	c.render(w, http.StatusOK, "purge", "Purge", purgeData{Status: c.purge.status()})
}

// purgeAction checks the patterns as `invalidator purge` does, then
// counts what they match (step=count, a dry run), then, with step=run,
// starts the purge and shows its progress.
func (c *Console) purgeAction(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		c.problem(w, http.StatusBadRequest, "Could not read the form.", c.base+"purge")
		return
	}
	if c.d.Engine == nil {
		c.problem(w, http.StatusServiceUnavailable, "No Redis engine: the purge is unavailable.", c.base+"purge")
		return
	}
	text := r.PostFormValue("patterns")
	job, err := engine.ParseJob(trimLines(text))
	if err == nil && len(job.Exact)+len(job.Patterns) == 0 {
		err = fmt.Errorf("give at least one key or pattern, one a line")
	}
	if err != nil {
		c.render(w, http.StatusBadRequest, "purge", "Purge", purgeData{Patterns: text, Status: c.purge.status(), Listed: []string{"refused: " + err.Error()}})
		return
	}
	if r.PostFormValue("step") == "run" {
		c.startPurge(w, r, job)
		return
	}
	seen := map[string]bool{}
	var listed []string
	res, err := c.d.Engine.Preview(r.Context(), job, func(k string) {
		if !seen[k] && len(listed) < 20 {
			listed = append(listed, k)
		}
		seen[k] = true
	})
	if err != nil {
		c.problem(w, http.StatusServiceUnavailable, "The dry run failed: "+err.Error(), c.base+"purge")
		return
	}
	c.render(w, http.StatusOK, "purgeconfirm", "Purge?", purgeData{Patterns: text, Job: job, Count: len(seen), Listed: listed, Scanned: res.Scanned})
}

func (c *Console) startPurge(w http.ResponseWriter, r *http.Request, job engine.Job) {
	ctx, err := c.runContext()
	if err != nil {
		c.problem(w, http.StatusServiceUnavailable, err.Error(), c.base+"purge")
		return
	}
	p := c.purge
	p.mu.Lock()
	if p.st.Running {
		p.mu.Unlock()
		c.problem(w, http.StatusConflict, "A purge is running: wait for it to end.", c.base+"purge")
		return
	}
	p.st = purgeStatus{Running: true, Patterns: append(append([]string{}, job.Exact...), job.Patterns...)}
	p.sweeps = c.d.Engine.Sweeps
	p.mu.Unlock()
	c.d.Logger.Info("🧹 console purge started", "patterns", p.st.Patterns)
	c.jobs.Go(func() {
		start := time.Now()
		res, err := engine.Invalidate(ctx, c.d.Engine, job)
		p.mu.Lock()
		p.st.Running, p.st.Done, p.st.Progress = false, true, 1
		p.st.Removed, p.st.Examined, p.st.Duration = res.Removed, res.Scanned, time.Since(start).Round(time.Millisecond).String()
		if err != nil {
			p.st.Error = err.Error()
		}
		p.mu.Unlock()
		c.d.Logger.Info("🧹 console purge done", "removed", res.Removed, "error", err)
	})
	http.Redirect(w, r, c.base+"purge", http.StatusSeeOther)
}
