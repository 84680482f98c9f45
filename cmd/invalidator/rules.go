package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/internal/explain"
)

const rulesSummary = `check FILE                  validates the rules file and prints its rules;
                            warns of variables named by headers_from_env that
                            are not set (--require-env: refuses, as run does)
explain FILE SUBJECT JSON   prints the exact keys and patterns the event would
                            invalidate, or why it would be rejected (exit 1)`

func rulesCmd(_ context.Context, e env, args []string) error {
	fs := newFlagSet(e, "rules", "check FILE [--require-env] | explain FILE SUBJECT JSON", rulesSummary)
	requireEnv := fs.Bool("require-env", false, "check: refuse the file (exit 2) when a variable its headers_from_env names is not set here, as run and dev do; without it, warn")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 2 && pos[0] == "check":
		return rulesCheck(e, pos[1], *requireEnv)
	case len(pos) == 4 && pos[0] == "explain":
		return rulesExplain(e.stdout, pos[1], pos[2], pos[3])
	}
	return usagef("usage: invalidator rules check FILE | explain FILE SUBJECT JSON")
}

// rulesCheck validates the file and prints its rules. The variables that
// headers_from_env names are read at start by run and dev; rulesCheck
// warns about those not set here, or refuses with requireEnv.
func rulesCheck(e env, path string, requireEnv bool) error {
	r, err := loadRules(path)
	if err != nil {
		return err
	}
	if missing := config.MissingEnv(r.EnvNames(), e.getenv); len(missing) > 0 {
		names := strings.Join(missing, ", ")
		if requireEnv {
			return usagef("%s: headers_from_env names %s, not set here", path, names)
		}
		fmt.Fprintf(e.stderr, "⚠️ not set here: %s (named by headers_from_env); run and dev refuse to start without it; --require-env makes this check refuse too\n", names)
	}
	w := e.stdout
	fmt.Fprintf(w, "%s: %d rules, OK\n", path, len(r.List()))
	for _, rule := range r.List() {
		fmt.Fprintf(w, "on %s\n", rule.On)
		for _, t := range rule.Invalidate {
			kind := "exact  "
			if t.IsPattern() {
				kind = "pattern"
			}
			fmt.Fprintf(w, "  %s %s\n", kind, t)
		}
		for _, wt := range rule.Warm {
			printWarmTarget(w, "  warm   ", wt)
		}
	}
	for _, sc := range r.Schedules() {
		printWarmTarget(w, fmt.Sprintf("schedule every %s: ", sc.Every), sc.WarmTarget)
	}
	if allow := r.Allow(); len(allow) > 0 {
		fmt.Fprintf(w, "explicit (%s) may name: %v\n", cachekeys.InvalidateSubject, allow)
	} else {
		fmt.Fprintf(w, "explicit: none (%s events are rejected)\n", cachekeys.InvalidateSubject)
	}
	for _, t := range r.CDC() {
		cols := make([]string, 0, len(t.Columns))
		for c, f := range t.Columns {
			cols = append(cols, c+"->"+f)
		}
		slices.Sort(cols)
		fmt.Fprintf(w, "cdc %s -> %s.%s.created|updated|deleted|truncated|bulk, columns %s (and the key)\n",
			t.Table(), cachekeys.SubjectPrefix, t.Entity, strings.Join(cols, " "))
	}
	return nil
}

// errRejected is the exit-1 answer of explain for an event that would be dead-lettered.
var errRejected = explain.ErrRejected

func rulesExplain(w io.Writer, path, subject, body string) error {
	r, err := loadRules(path)
	if err != nil {
		return err
	}
	return explain.Write(w, r, subject, body)
}

func printWarmTarget(w io.Writer, prefix string, t cachekeys.WarmTarget) {
	h := explain.HeaderNames(t.Headers, t.HeadersFromEnv)
	if t.Store() {
		fmt.Fprintf(w, "%sGET %s -> SET %s (ttl %s)%s\n", prefix, t.From, t.Key, t.TTL, h)
	} else {
		fmt.Fprintf(w, "%sGET %s (trigger)%s\n", prefix, t.From, h)
	}
}
