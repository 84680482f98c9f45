package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/internal/logging"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const dlqSummary = `Reads and acts on the dead-letter stream:
  list [--subject S] [--reason TEXT] [--since DURATION] [--json]
                   one line per letter (sequence, time, subject, deliveries,
                   reason), then a count per kind of reason
  show SEQ         one letter: headers, body, and what the current rules say
  replay (SEQ... | --all | --subject S | --reason TEXT) [--dry-run] [--force]
                   republishes each letter to its original subject (new
                   Nats-Msg-Id <original>:replay:<seq>) and deletes it once the
                   stream has acknowledged; a letter the current rules still
                   reject stays, unless --force
  purge (SEQ... | --all | --subject S | --reason TEXT) [--yes]
                   deletes letters, after a confirmation on a terminal;
                   off a terminal (a pipe, /dev/null) it needs --yes
A SEQ that names no letter (already replayed or purged) makes replay and
purge exit 1 once they have done the others.
NATS_URL, NATS_CREDS, NATS_STREAM, NATS_DLQ_STREAM and INVALIDATOR_RULES are
those of run.`

func dlqCmd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "dlq", "list|show|replay|purge [flags]", dlqSummary)
	build := config.DLQFlags(fs, e.getenv)
	subject := fs.String("subject", "", "only letters of this original `subject`")
	reason := fs.String("reason", "", "only letters whose reason contains this `text` (any case)")
	since := fs.Duration("since", 0, "only letters written in the last `duration`")
	asJSON := fs.Bool("json", false, "list: one JSON object per line")
	all := fs.Bool("all", false, "replay, purge: every letter")
	dry := fs.Bool("dry-run", false, "replay: print what would be done, do nothing")
	force := fs.Bool("force", false, "replay: also letters the current rules would reject")
	yes := fs.Bool("yes", false, "purge: do not ask")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("dlq needs a subcommand: list, show, replay or purge (see --help)")
	}
	cfg, err := build()
	if err != nil {
		return usageError{err}
	}
	sub, rest := pos[0], pos[1:]
	seqs, err := parseSeqs(rest)
	if err != nil {
		return err
	}
	f := deadletter.Filter{Seqs: seqs, Subject: *subject, Reason: *reason, Since: *since}
	switch sub {
	case "list":
		if len(rest) > 0 {
			return usagef("dlq list takes no arguments, only flags")
		}
	case "show":
		if len(seqs) != 1 {
			return usagef("dlq show takes one SEQ")
		}
	case "replay", "purge":
		if len(seqs) == 0 && !*all && *subject == "" && *reason == "" {
			return usagef("dlq %s needs SEQ..., --all, --subject or --reason", sub)
		}
	default:
		return usagef("unknown dlq subcommand %q: list, show, replay or purge", sub)
	}
	js, closeNATS, err := dialJetStream(cfg)
	if err != nil {
		return err
	}
	defer closeNATS()
	store := deadletter.NewStore(js, cfg.DeadLetterStream, cfg.DeadLetterPrefix)
	switch sub {
	case "list":
		return dlqList(ctx, e, store, f, *asJSON)
	case "show":
		return dlqShow(ctx, e, store, cfg, seqs[0])
	case "replay":
		return dlqReplay(ctx, e, store, cfg, f, *dry, *force)
	default:
		return dlqPurge(ctx, e, store, f, *yes)
	}
}

func parseSeqs(args []string) ([]uint64, error) {
	var seqs []uint64
	for _, a := range args {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return nil, usagef("%q is not a letter's sequence (a positive number)", a)
		}
		seqs = append(seqs, n)
	}
	return seqs, nil
}

func dialJetStream(cfg *config.DLQ) (jetstream.JetStream, func(), error) {
	opts := []nats.Option{nats.Name("invalidator dlq"), nats.Timeout(5 * time.Second)}
	opts = append(opts, config.NATSOptions(cfg.NATSCreds, cfg.NATSTLS)...)
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", logging.RedactURL(cfg.NATSURL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return js, func() { _ = nc.Drain() }, nil
}

func dlqList(ctx context.Context, e env, s *deadletter.Store, f deadletter.Filter, asJSON bool) error {
	counts := map[deadletter.Kind]int{}
	enc := json.NewEncoder(e.stdout)
	err := s.List(ctx, f, func(l deadletter.Letter) error {
		counts[l.Kind]++
		if asJSON {
			return enc.Encode(l)
		}
		_, err := fmt.Fprintf(e.stdout, "%d  %s  %s  deliveries=%d  [%s] %s\n", l.Seq, l.Time.UTC().Format(time.RFC3339),
			l.Subject, l.Deliveries, l.Kind, oneLine(l.Reason))
		return err
	})
	if err != nil {
		return err
	}
	if asJSON {
		return nil
	}
	total := 0
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		total += counts[k]
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	fmt.Fprint(e.stdout, letters(total))
	if len(parts) > 0 {
		fmt.Fprintf(e.stdout, ": %s", strings.Join(parts, ", "))
	}
	fmt.Fprintln(e.stdout)
	return nil
}

func dlqShow(ctx context.Context, e env, s *deadletter.Store, cfg *config.DLQ, seq uint64) error {
	l, err := s.Get(ctx, seq)
	if err != nil {
		return err
	}
	w := e.stdout
	fmt.Fprintf(w, "letter %d, %s\nsubject: %s\nkind: %s\nreason: %s\ndeliveries: %d\nstream sequence: %d\n",
		l.Seq, l.Time.UTC().Format(time.RFC3339), l.Subject, l.Kind, l.Reason, l.Deliveries, l.StreamSeq)
	if l.OriginalMsgID != "" {
		fmt.Fprintf(w, "original Nats-Msg-Id: %s\n", l.OriginalMsgID)
	}
	fmt.Fprintln(w, "headers:")
	for _, k := range slices.Sorted(maps.Keys(l.Header)) {
		fmt.Fprintf(w, "  %s: %s\n", k, strings.Join(l.Header[k], ", "))
	}
	fmt.Fprintln(w, "body:")
	var pretty bytes.Buffer
	if json.Indent(&pretty, l.Body, "  ", "  ") == nil {
		fmt.Fprintf(w, "  %s\n", pretty.String())
	} else {
		fmt.Fprintf(w, "  %q\n", l.Body)
	}
	if cfg.RulesPath == "" {
		fmt.Fprintln(w, "now: INVALIDATOR_RULES is not set, so the letter is not checked against the rules")
		return nil
	}
	fmt.Fprintf(w, "now, under %s:\n", cfg.RulesPath)
	err = rulesExplain(indent{w}, cfg.RulesPath, l.Subject, string(l.Body))
	if errors.Is(err, errRejected) {
		return nil // shown; not a failure of show
	}
	return err
}

// indent writes every line two spaces in.
type indent struct{ w io.Writer }

func (i indent) Write(p []byte) (int, error) {
	s := "  " + strings.ReplaceAll(strings.TrimSuffix(string(p), "\n"), "\n", "\n  ") + "\n"
	if _, err := io.WriteString(i.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}

func dlqReplay(ctx context.Context, e env, s *deadletter.Store, cfg *config.DLQ, f deadletter.Filter, dry, force bool) error {
	opts := deadletter.ReplayOptions{Force: force, DryRun: dry}
	if cfg.RulesPath != "" {
		r, err := loadRules(cfg.RulesPath)
		if err != nil {
			return err
		}
		opts.Rules = r
	} else if !force {
		return usagef("dlq replay checks each letter against the current rules: set INVALIDATOR_RULES (or --rules), or give --force")
	}
	var seen []uint64
	verb := string(deadletter.Replayed)
	if dry {
		verb = string(deadletter.WouldReplay)
	}
	c, err := s.Replay(ctx, f, opts, func(r deadletter.ReplayResult) {
		seen = append(seen, r.Letter.Seq)
		printReplay(e.stdout, r)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s %d, kept %d, failed %d\n", verb, c.Replayed, c.Kept, c.Failed)
	if c.Failed > 0 {
		return fmt.Errorf("%s could not be replayed", letters(c.Failed))
	}
	return missing(f.Seqs, seen)
}

// printReplay prints one line of dlq replay.
func printReplay(w io.Writer, r deadletter.ReplayResult) {
	l := r.Letter
	switch r.Outcome {
	case deadletter.Kept:
		fmt.Fprintf(w, "%d kept: the current rules still reject it: %s\n", l.Seq, oneLine(r.Why))
	case deadletter.WouldReplay:
		fmt.Fprintf(w, "%d would replay to %s as %s\n", l.Seq, l.Subject, l.ReplayID())
	case deadletter.NotReplayed:
		fmt.Fprintf(w, "%d not replayed: %s\n", l.Seq, oneLine(r.Err.Error()))
	case deadletter.NotDeleted:
		fmt.Fprintf(w, "%d replayed as stream sequence %d, but not deleted: %s\n", l.Seq, r.StreamSeq, oneLine(r.Err.Error()))
	default:
		dup := ""
		if r.Duplicate {
			dup = " (already replayed: the stream kept the first)"
		}
		fmt.Fprintf(w, "%d replayed to %s as stream sequence %d%s\n", l.Seq, l.Subject, r.StreamSeq, dup)
	}
}

// missing returns an error naming the sequences of asked that are not in
// found (a letter already replayed, purged or never written), or nil.
func missing(asked, found []uint64) error {
	var gone []string
	for _, q := range asked {
		if !slices.Contains(found, q) {
			gone = append(gone, strconv.FormatUint(q, 10))
		}
	}
	if len(gone) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", deadletter.ErrNoLetter, strings.Join(gone, ", "))
}

// letters says "1 letter" or "n letters".
func letters(n int) string {
	if n == 1 {
		return "1 letter"
	}
	return strconv.Itoa(n) + " letters"
}

func dlqPurge(ctx context.Context, e env, s *deadletter.Store, f deadletter.Filter, yes bool) error {
	var seqs []uint64
	if err := s.List(ctx, f, func(l deadletter.Letter) error { seqs = append(seqs, l.Seq); return nil }); err != nil {
		return err
	}
	if len(seqs) == 0 {
		fmt.Fprintln(e.stdout, "no letter matches")
		return missing(f.Seqs, nil)
	}
	if !yes {
		in, ok := e.stdin.(*os.File)
		if !ok || !terminal(in) {
			return usagef("dlq purge would delete %s: give --yes (standard input is not a terminal to ask on)", letters(len(seqs)))
		}
		fmt.Fprintf(e.stderr, "delete %s? [y/N] ", letters(len(seqs)))
		answer, _ := bufio.NewReader(in).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			fmt.Fprintln(e.stdout, "nothing deleted")
			return nil
		}
	}
	if _, err := s.Purge(ctx, deadletter.Filter{Seqs: seqs}); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "deleted %s\n", letters(len(seqs)))
	return missing(f.Seqs, seqs)
}
