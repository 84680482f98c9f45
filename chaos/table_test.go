package chaos

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/deadletter"
)

// row holds one scenario's figures.
type row struct {
	name       string
	published  int // events acknowledged by the stream
	applied    int // events whose keys are all gone
	lost       int // acknowledged, but a matching key survives
	duplicates int // deliveries after the first (worker log lines)
	dead       map[deadletter.Kind]int
	// expectedDead are the letters the scenario itself asks for (the
	// rejected values of the glob corpus), not caused by a fault.
	expectedDead int
	overDeleted  int           // canary keys removed
	recover      time.Duration // fault end to every event applied; <0 when no fault ends
	peakLag      uint64        // max NumPending+NumAckPending sampled
	note         string
}

func (r row) totalDead() int {
	n := 0
	for _, v := range r.dead {
		n += v
	}
	return n
}

func (r row) faultDead() int { return r.totalDead() - r.expectedDead }

func (r row) deadCell() string {
	if len(r.dead) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(r.dead)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, r.dead[k]))
	}
	s := strings.Join(parts, ", ")
	if r.expectedDead > 0 {
		s += fmt.Sprintf(" (%d expected)", r.expectedDead)
	}
	return s
}

func (r row) recoverCell() string {
	if r.recover < 0 {
		return "–"
	}
	return r.recover.Round(10 * time.Millisecond).String()
}

func (r row) markdown() string {
	return fmt.Sprintf("| %s | %d | %d | **%d** | %d | %s | %d | %s | %d | %s |",
		r.name, r.published, r.applied, r.lost, r.duplicates, r.deadCell(), r.overDeleted, r.recoverCell(), r.peakLag, r.note)
}

const tableHeader = "| scenario | published | applied | **lost** | duplicates | dead letters | over-deleted | time to recover | peak lag | notes |\n" +
	"|---|---|---|---|---|---|---|---|---|---|"

// check prints the row and fails the test when anything was lost,
// over-deleted or dead-lettered because of the fault.
func (r row) check(t *testing.T) {
	t.Helper()
	record(r)
	t.Logf("\n%s\n%s", tableHeader, r.markdown())
	if r.lost != 0 || r.overDeleted != 0 || r.faultDead() != 0 {
		t.Errorf("%s: %d lost, %d over-deleted, %d dead-lettered because of the fault (want 0 each): %s",
			r.name, r.lost, r.overDeleted, r.faultDead(), r.markdown())
	}
}

var (
	rowsMu sync.Mutex
	rows   []row
)

func record(r row) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	rows = append(rows, r)
}

// resultsFile is where the table of a long run goes, relative to this
// package; a short run (CI) only logs its table, so it never rewrites the
// committed figures.
const resultsFile = "../docs/chaos/results.md"

// writeResults writes the rows recorded so far as a Markdown table (long
// runs; short ones log it).
func writeResults(t *testing.T, took time.Duration) {
	t.Helper()
	rowsMu.Lock()
	defer rowsMu.Unlock()
	mode := "short (`go test ./chaos/`)"
	if long() {
		mode = "long (`go test ./chaos/ -chaos.long`)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Fault suite results\n\nMode: %s. Written by `chaos.TestFaults` on %s; the suite took %s.\n\n",
		mode, time.Now().UTC().Format("2006-01-02 15:04 MST"), took.Round(time.Second))
	b.WriteString("Lost: published and acknowledged by the stream, but a matching key survives at the end. " +
		"Duplicates: deliveries after the first, from the workers' log lines. " +
		"Time to recover: from the end of the fault to every event applied. " +
		"Peak lag: the largest NumPending+NumAckPending of the consumer, sampled every 100 ms.\n\n")
	b.WriteString(tableHeader + "\n")
	for _, r := range rows {
		b.WriteString(r.markdown() + "\n")
	}
	if !long() {
		t.Logf("short run, results not written (the long run writes docs/chaos/results.md):\n%s", b.String())
		return
	}
	if err := os.MkdirAll(filepath.Dir(resultsFile), 0o755); err != nil {
		t.Errorf("write results: %v", err)
		return
	}
	if err := os.WriteFile(resultsFile, []byte(b.String()), 0o644); err != nil {
		t.Errorf("write results: %v", err)
	}
	t.Logf("results written to docs/chaos/results.md:\n%s", b.String())
}
