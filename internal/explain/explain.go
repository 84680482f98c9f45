// Package explain says what an event would invalidate under a rules file:
// the text `invalidator rules explain` prints and the console's Explain
// form shows.
package explain

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/events"
)

// ErrRejected means the event would be dead-lettered; Write has printed why.
var ErrRejected = errors.New("the event would be dead-lettered")

// Write decodes body as the event on subject, plans it under r and
// prints the exact keys, patterns and warm requests, or the refusal and
// its reason (then it returns ErrRejected).
func Write(w io.Writer, r *cachekeys.Rules, subject, body string) error {
	ev, err := events.Decode(subject, "", []byte(body))
	if err == nil {
		var plan cachekeys.Plan
		if plan, err = r.Plan(ev.Subject, ev.Data); err == nil {
			Plan(w, plan)
			return nil
		}
	}
	// The reason goes out once; cachekeys' own errors already start with
	// "rejected: ".
	fmt.Fprintf(w, "rejected: %s\n", strings.TrimPrefix(err.Error(), cachekeys.ErrRejected.Error()+": "))
	return ErrRejected
}

// Plan prints a plan: its rules, exact keys, patterns and warm requests.
func Plan(w io.Writer, p cachekeys.Plan) {
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
			fmt.Fprintf(w, "warm    GET %s -> SET %s (ttl %s)%s\n", wr.URL, wr.Key, wr.TTL, HeaderNames(wr.Headers, wr.HeadersFromEnv))
		} else {
			fmt.Fprintf(w, "warm    GET %s (trigger)%s\n", wr.URL, HeaderNames(wr.Headers, wr.HeadersFromEnv))
		}
	}
	for _, s := range p.WarmSkipped {
		fmt.Fprintf(w, "warm    skipped %s: %s (the keys are still invalidated)\n", s.From, s.Err)
	}
}

// HeaderNames lists header names, and for env headers the variable, never
// a value: " [Name: value, Auth: $VAR]", or "" when there is none.
func HeaderNames(lit, env map[string]string) string {
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
