package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/config"
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
var errRejected = errors.New("the event would be dead-lettered")

func rulesExplain(w io.Writer, path, subject, body string) error {
	r, err := loadRules(path)
	if err != nil {
		return err
	}
	ev, err := events.Decode(subject, "", []byte(body))
	if err == nil {
		var plan cachekeys.Plan
		if plan, err = r.Plan(ev.Subject, ev.Data); err == nil {
			printPlan(w, plan)
			return nil
		}
	}
	// The reason goes to stdout once; cachekeys' own errors already start
	// with "rejected: ".
	fmt.Fprintf(w, "rejected: %s\n", strings.TrimPrefix(err.Error(), cachekeys.ErrRejected.Error()+": "))
	return errRejected
}

func printPlan(w io.Writer, p cachekeys.Plan) {
	if p.Empty() {
		fmt.Fprintln(w, "no rule matches: the event would be acked and nothing removed")
		return
	}
	fmt.Fprintf(w, "rules: %v\n", p.Rules)
	for _, k := range p.Exact {
		fmt.Fprintf(w, "exact   %s\n", k)
	}
	for _, k := range p.Patterns {
		fmt.Fprintf(w, "pattern %s\n", k)
	}
	for _, wr := range p.Warm {
		if wr.Key != "" {
			fmt.Fprintf(w, "warm    GET %s -> SET %s (ttl %s)%s\n", wr.URL, wr.Key, wr.TTL, headerNames(wr.Headers, wr.HeadersFromEnv))
		} else {
			fmt.Fprintf(w, "warm    GET %s (trigger)%s\n", wr.URL, headerNames(wr.Headers, wr.HeadersFromEnv))
		}
	}
	for _, s := range p.WarmSkipped {
		fmt.Fprintf(w, "warm    skipped %s: %s (the keys are still invalidated)\n", s.From, s.Err)
	}
}

func printWarmTarget(w io.Writer, prefix string, t cachekeys.WarmTarget) {
	h := headerNames(t.Headers, t.HeadersFromEnv)
	if t.Store() {
		fmt.Fprintf(w, "%sGET %s -> SET %s (ttl %s)%s\n", prefix, t.From, t.Key, t.TTL, h)
	} else {
		fmt.Fprintf(w, "%sGET %s (trigger)%s\n", prefix, t.From, h)
	}
}

// headerNames lists header names, and for env headers the variable, never a value.
func headerNames(lit, env map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(lit)) {
		parts = append(parts, k+": "+lit[k])
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		parts = append(parts, k+": $"+env[k])
	}
	if len(parts) == 0 {
		return ""
	}
	return " [" + strings.Join(parts, ", ") + "]"
}
