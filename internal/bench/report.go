package main

import (
	"fmt"
	"html"
	"os"
	"runtime"
	"strings"
	"time"
)

// row is one figure of the report.
type row struct {
	group, name string
	value       time.Duration // a time, when set
	rate        float64       // events/s, when set
	kib         int           // memory, when set
	calls       int           // SCAN calls, when known
	ratio       float64       // against the group's baseline
	callsRatio  float64
	target      string
	ok          bool
	note        string
}

type report struct {
	name    string // the files' base name: results, or cdc
	keys    int
	started time.Time
	pass    time.Duration
	rows    []row
	// staleness holds the staleness scenarios' rows, a table of their own.
	staleness []stalenessRow
	// stalenessAckWait is the ACK_WAIT of the staleness scenarios' worker.
	stalenessAckWait time.Duration
}

func (r *report) add(x row) { r.rows = append(r.rows, x) }

var groupTitles = map[string]string{
	"patterns": "Pattern events (ratio: time / one SCAN pass)",
	"exact":    "Exact-key events (ratio: events/s / the bare floor's)",
	"checker":  "The consistency checker's cost (ratio: events/s / the checker off)",
	"steady":   "Steady pattern stream (ratio: lag / one SCAN pass)",
	"latency":  "Concurrent GET latency (ratio: p99 / p99 with no sweep)",
	"rss":      "Memory (ratio: drain time / one SCAN pass)",
	"cdc":      "invalidator cdc (ratios: pg_recvlogical's time / cdc's; latency / 50 ms; RSS / 64 MiB)",
}

func (r *report) markdown() string {
	var b strings.Builder
	keys := fmt.Sprintf("%d keys; ", r.keys)
	if r.name != "results" {
		keys = ""
	}
	fmt.Fprintf(&b, "# Benchmark results\n\n%s%s; %d CPUs; run %s; `%s`.\n",
		keys, runtime.Version(), runtime.NumCPU(), r.started.UTC().Format("2006-01-02 15:04 UTC"), strings.Join(append([]string{"go run ./internal/bench"}, os.Args[1:]...), " "))
	if len(r.rows) > 0 {
		fmt.Fprintf(&b, "Every ratio is against a baseline measured in the same run. The chart: [%s.svg](%s.svg).\n", r.name, r.name)
	}
	last := ""
	for _, x := range r.rows {
		if x.group != last {
			last = x.group
			fmt.Fprintf(&b, "\n## %s\n\n| figure | value | SCAN calls | ratio | target | |\n|---|---|---|---|---|---|\n", groupTitles[x.group])
		}
		calls := ""
		if x.calls > 0 {
			calls = fmt.Sprint(x.calls)
			if x.callsRatio > 0 {
				calls += fmt.Sprintf(" (%.2f passes)", x.callsRatio)
			}
		}
		mark := ""
		if x.target != "" {
			mark = "❌ missed"
			if x.ok {
				mark = "✅ met"
			}
		}
		name := x.name
		if x.note != "" {
			name += " (" + x.note + ")"
		}
		name = strings.ReplaceAll(name, "|", `\|`)
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f× | %s | %s |\n", name, x.valueText(), calls, x.ratio, x.target, mark)
	}
	if len(r.staleness) > 0 {
		b.WriteString(r.stalenessMarkdown())
	}
	return b.String()
}

func (x row) valueText() string {
	var parts []string
	if x.kib > 0 {
		parts = append(parts, fmt.Sprintf("%.1f MiB", float64(x.kib)/1024))
	}
	if x.rate > 0 {
		parts = append(parts, fmt.Sprintf("%.0f events/s", x.rate))
	}
	if x.value > 0 {
		parts = append(parts, roundDur(x.value).String())
	}
	return strings.Join(parts, ", ")
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d > 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d > 10*time.Millisecond:
		return d.Round(time.Millisecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// svg draws one horizontal bar per row, its length the ratio on a log scale.
func (r *report) svg() string {
	const (
		width, left, barH, gap = 980, 560, 18, 6
		minR, maxR             = 0.1, 1000.0
	)
	h := 40 + len(r.rows)*(barH+gap) + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, h)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">invalidator benchmark, %d keys: ratio against each group's baseline (log scale)</text>`+"\n", r.keys)
	scale := func(v float64) float64 {
		v = min(max(v, minR), maxR)
		return float64(width-left-20) * (log10(v) - log10(minR)) / (log10(maxR) - log10(minR))
	}
	for i, x := range r.rows {
		y := 40 + i*(barH+gap)
		color := "#6c8ebf"
		if x.target != "" && !x.ok {
			color = "#d9534f"
		} else if x.target != "" {
			color = "#5cb85c"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+13, html.EscapeString(truncate(x.name, 80)))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, max(scale(x.ratio), 1), barH, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2f×</text>`+"\n", float64(left)+max(scale(x.ratio), 1)+4, y+13, x.ratio)
	}
	x1 := float64(left) + scale(1)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="30" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="4"/>`+"\n", x1, x1, h-25)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">1× (baseline)</text>`+"\n", x1, h-10)
	b.WriteString("</svg>\n")
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func log10(v float64) float64 {
	// small helper to avoid importing math for one call site
	n := 0.0
	for v >= 10 {
		v /= 10
		n++
	}
	for v < 1 {
		v *= 10
		n--
	}
	// linear interpolation inside the decade is enough for a chart
	return n + (v-1)/9
}
