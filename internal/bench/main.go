// Command bench measures the invalidator against its floors on the same
// servers in one run, and writes a Markdown table and an SVG chart:
//
//	go run ./internal/bench                    # 1M keys, about 5 minutes
//	go run ./internal/bench -keys 10000000 -pattern-events 1000 -skip checker,cdc,staleness -out /tmp/b10m
//	                                           # the 10M-key figures, 15 to 35 minutes (copied to docs/bench/results-10m.*)
//	go run ./internal/bench -only cdc          # invalidator cdc against pg_recvlogical (docs/bench/cdc.md)
//	go run ./internal/bench -only checker      # the consistency checker's cost at its default sample (docs/bench/checker.md)
//	go run ./internal/bench -only staleness    # what readers see, publish and cdc modes, warming and faults (docs/bench/staleness.md)
//	go run ./internal/bench -only staleness -staleness-case SIGKILLed   # the scenarios whose name holds the text
//
// It starts its own redis-server (from PATH) and an embedded JetStream
// server on loopback ports, and reports every figure as a ratio against a
// baseline measured in the same run (one SCAN pass, the bare
// fetch→UNLINK→ack loop, GET latency with no sweep), because the absolute
// numbers of a shared 2-core machine mean little.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/invalidator/invalidator/worker"
)

type options struct {
	keys         int
	patternEvts  int
	perEventEvts int
	exactEvts    int
	exactRounds  int
	checkerEvts  int
	checkerRnds  int
	steadyRate   int
	steadyFor    time.Duration
	budget       int
	patterns10k  int
	out          string
	skip         string
	only         string
	cdcUpdates   int
	cdcRate      int
	cdcFor       time.Duration
	cdcBigTx     int

	stalenessFor        time.Duration
	stalenessReaders    int
	stalenessRate       int
	stalenessItems      int
	stalenessNATSBinary bool
	stalenessCase       string
	stalenessAckWait    time.Duration
	stalenessWorkerLog  string
}

func main() {
	var o options
	flag.IntVar(&o.keys, "keys", 1_000_000, "keys in the keyspace")
	flag.IntVar(&o.patternEvts, "pattern-events", 200, "backlog of pattern events with distinct ids (shared sweeps)")
	flag.IntVar(&o.perEventEvts, "per-event-events", 10, "pattern events run through the one-pass-per-event engine (its cost grows with each; the rate is what is compared)")
	flag.IntVar(&o.exactEvts, "exact-events", 50_000, "exact-key events for the throughput figures")
	flag.IntVar(&o.checkerEvts, "checker-events", 300_000, "exact-key events per drain of the checker's cost figure")
	flag.IntVar(&o.checkerRnds, "checker-rounds", 7, "rounds of checker off and on for the checker's cost figure (the median ratio is reported)")
	flag.IntVar(&o.exactRounds, "exact-rounds", 5, "rounds of floor then worker for the exact-key figures (the median is reported)")
	flag.IntVar(&o.steadyRate, "steady-rate", 50, "pattern events per second published in the steady test")
	flag.DurationVar(&o.steadyFor, "steady-for", 20*time.Second, "length of the steady test")
	flag.IntVar(&o.budget, "budget", 0, "SCAN_BUDGET for the latency test (keys/s); 0 picks a tenth of the unpaced rate")
	flag.IntVar(&o.patterns10k, "rss-patterns", 1000, "active patterns in the RSS test")
	flag.StringVar(&o.out, "out", "docs/bench", "directory for results.md and results.svg")
	flag.StringVar(&o.skip, "skip", "", "scenarios not to run, comma-separated (for example checker,cdc,staleness for the 10M-key figures)")
	flag.StringVar(&o.only, "only", "", "run only this scenario: patterns, exact, steady, latency, rss, cdc, staleness (cdc and staleness write cdc.md and staleness.md, not results.md)")
	flag.IntVar(&o.cdcUpdates, "cdc-updates", 200_000, "single-row UPDATE transactions decoded by pg_recvlogical and by cdc")
	flag.IntVar(&o.cdcRate, "cdc-rate", 1000, "transactions per second in the cdc latency test")
	flag.DurationVar(&o.cdcFor, "cdc-for", 20*time.Second, "length of the cdc latency test")
	flag.IntVar(&o.cdcBigTx, "cdc-big-tx", 1_000_000, "rows of the one-transaction UPDATE in the cdc memory test")
	flag.DurationVar(&o.stalenessFor, "staleness-for", 15*time.Second, "length of each staleness scenario")
	flag.IntVar(&o.stalenessReaders, "staleness-readers", 16, "readers through cache.Fetch in the staleness scenarios")
	flag.IntVar(&o.stalenessRate, "staleness-rate", 200, "writes per second (4 writers) in the staleness scenarios")
	flag.IntVar(&o.stalenessItems, "staleness-items", 2000, "items (Zipf) in the staleness scenarios")
	flag.BoolVar(&o.stalenessNATSBinary, "staleness-nats-binary", false, "run the staleness scenarios on the nats-server binary on PATH (Debian's 2.9) instead of the embedded server")
	flag.StringVar(&o.stalenessCase, "staleness-case", "", "run only the staleness scenarios whose name holds this text (\"warming\", \"SIGKILLed\", \"SIGSTOPped\", \"cdc\", or a whole name)")
	flag.DurationVar(&o.stalenessAckWait, "staleness-ack-wait", worker.DefaultAckWait, "ACK_WAIT of the staleness scenarios' worker (a fault scenario runs until ACK_WAIT after its fault)")
	log.SetFlags(log.Ltime)
	flag.StringVar(&o.stalenessWorkerLog, "staleness-worker-log", "warn", "LOG_LEVEL of the staleness scenarios' worker and cdc (debug logs every event applied)")
	flag.Parse()
	if o.stalenessAckWait < time.Second {
		log.Fatalf("bench: -staleness-ack-wait must be at least 1s")
	}
	if o.exactRounds < 1 || o.exactEvts < 1 || o.checkerEvts < 1 || o.checkerRnds < 1 {
		log.Fatalf("bench: -exact-rounds and -exact-events must be at least 1")
	}
	if err := run(context.Background(), o); err != nil {
		log.Fatalf("bench: %v", err)
	}
}

func run(ctx context.Context, o options) error {
	srv, err := startEnv(ctx, o)
	if err != nil {
		return err
	}
	defer srv.close()
	rep := &report{name: "results", keys: o.keys, started: time.Now()}
	if o.only == "cdc" || o.only == "staleness" || o.only == "checker" {
		rep.name = o.only // these figures alone do not replace the worker's
	}
	steps := []struct {
		name string
		fn   func(context.Context, *env, options, *report) error
	}{
		{"patterns", patternScenario},
		{"exact", exactScenario},
		{"checker", checkerScenario},
		{"steady", steadyScenario},
		{"latency", latencyScenario},
		{"rss", rssScenario},
		{"cdc", cdcScenario},
		{"staleness", stalenessScenario},
	}
	for _, s := range steps {
		if o.only != "" && o.only != s.name || slices.Contains(strings.Split(o.skip, ","), s.name) {
			continue
		}
		log.Printf("== %s", s.name)
		if err := s.fn(ctx, srv, o, rep); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	name := rep.name
	md := filepath.Join(o.out, name+".md")
	if err := os.WriteFile(md, []byte(rep.markdown()), 0o644); err != nil {
		return err
	}
	if len(rep.rows) > 0 {
		if err := os.WriteFile(filepath.Join(o.out, name+".svg"), []byte(rep.svg()), 0o644); err != nil {
			return err
		}
	}
	fmt.Print(rep.markdown())
	log.Printf("wrote %s", md)
	return nil
}
