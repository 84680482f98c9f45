package cachekeys

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxKeyLen is the longest key or pattern accepted in an explicit
// invalidation request, in bytes.
const MaxKeyLen = 1024

// Plan is what one event invalidates.
type Plan struct {
	// Exact lists exact keys to UNLINK, each once, in order of first appearance.
	Exact []string
	// Patterns lists glob patterns to SCAN MATCH and delete, each once.
	Patterns []string
	// Rules lists the `on` filters of the matching rules, each once, or
	// [InvalidateSubject] for an explicit request. Its values come from the
	// rules file, so they are safe as metric labels.
	Rules []string
	// Warm lists the rendered warm targets of the matching rules, each
	// (Key, URL) pair once, in order of first appearance (the first
	// occurrence's headers and TTL win). It is empty for explicit
	// ([InvalidateSubject]) plans.
	Warm []WarmRequest
	// WarmSkipped lists the warm targets of the matching rules that could
	// not be rendered from the event (a value that is safe in a key but not
	// in a URL, like ".."; a missing field): the keys are still invalidated,
	// only those warm requests are not made. Each URL template is listed
	// once.
	WarmSkipped []WarmSkip
}

// WarmSkip is a warm target left out of a Plan, and why.
type WarmSkip struct {
	// From is the target's URL template, as written in the rules file.
	From string
	// Err says why; it wraps [ErrRejected] and names the field.
	Err error
}

// Empty reports whether the plan deletes nothing.
func (p Plan) Empty() bool { return len(p.Exact) == 0 && len(p.Patterns) == 0 }

// Plan works out what an event invalidates.
//
// For [InvalidateSubject] the data names keys and patterns directly (see
// explicit mode below). For any other subject, every rule whose filter
// matches contributes its rendered templates, then its rendered warm
// targets. A render error of a key rejects the whole event: the Plan
// deletes nothing (its Rules still name the matching rules, for metrics)
// and the error wraps [ErrRejected]. A warm target that does not render
// leaves only itself out, in WarmSkipped: what is invalidated does not
// depend on what is warmed. No matching
// rule gives an empty Plan and a nil error.
//
// Explicit mode reads data {"keys": [...], "patterns": [...]}; at least one
// must be non-empty. A key must be non-empty text of at most [MaxKeyLen]
// bytes without whitespace or control characters, and [Match] an
// explicit.allow entry. A pattern must also start with a literal prefix and
// the separator, hold no backslash, close its classes, and fall under an
// allow entry: under "P*" when its [LiteralPrefix] starts with P, under an
// exact entry only when equal to it.
func (r *Rules) Plan(subject string, data map[string]any) (Plan, error) {
	if subject == InvalidateSubject {
		return r.explicitPlan(data)
	}
	var b planBuilder
	for _, rule := range r.rules {
		if !MatchSubject(rule.On, subject) {
			continue
		}
		if err := b.addRule(rule, data); err != nil {
			return Plan{Rules: b.plan.Rules}, err // the rule that refused, for metrics
		}
	}
	return b.plan, nil
}

// planBuilder accumulates a Plan, dropping duplicates.
type planBuilder struct {
	plan Plan
}

func (b *planBuilder) addRule(rule Rule, data map[string]any) error {
	b.plan.Rules = appendOnce(b.plan.Rules, rule.On)
	for _, t := range rule.Invalidate {
		key, err := t.Render(data)
		if err != nil {
			return err
		}
		b.add(key, t.IsPattern())
	}
	for _, w := range rule.Warm {
		req, err := w.render(data)
		if err != nil {
			if !slices.ContainsFunc(b.plan.WarmSkipped, func(s WarmSkip) bool { return s.From == w.From.String() }) {
				b.plan.WarmSkipped = append(b.plan.WarmSkipped, WarmSkip{From: w.From.String(), Err: err})
			}
			continue
		}
		b.addWarm(req)
	}
	return nil
}

func (b *planBuilder) addWarm(req WarmRequest) {
	if !slices.ContainsFunc(b.plan.Warm, func(o WarmRequest) bool { return o.Key == req.Key && o.URL == req.URL }) {
		b.plan.Warm = append(b.plan.Warm, req)
	}
}

func (b *planBuilder) add(key string, pattern bool) {
	if pattern {
		b.plan.Patterns = appendOnce(b.plan.Patterns, key)
	} else {
		b.plan.Exact = appendOnce(b.plan.Exact, key)
	}
}

func appendOnce(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

func (r *Rules) explicitPlan(data map[string]any) (Plan, error) {
	if len(r.allow) == 0 {
		return Plan{}, reject("", "explicit invalidation not allowed by the rules file")
	}
	keys, err := stringList(data, "keys")
	if err != nil {
		return Plan{}, err
	}
	patterns, err := stringList(data, "patterns")
	if err != nil {
		return Plan{}, err
	}
	if len(keys) == 0 && len(patterns) == 0 {
		return Plan{}, reject("", `explicit invalidation needs "keys" or "patterns"`)
	}
	return r.checkExplicit(keys, patterns)
}

func (r *Rules) checkExplicit(keys, patterns []string) (Plan, error) {
	b := planBuilder{plan: Plan{Rules: []string{InvalidateSubject}}}
	for _, k := range keys {
		if reason := r.checkKey(k); reason != "" {
			return Plan{}, reject("keys", fmt.Sprintf("key %q: %s", k, reason))
		}
		b.add(k, false)
	}
	for _, p := range patterns {
		if reason := r.checkPattern(p); reason != "" {
			return Plan{}, reject("patterns", fmt.Sprintf("pattern %q: %s", p, reason))
		}
		b.add(p, true)
	}
	return b.plan, nil
}

// stringList reads an optional array of strings; JSON gives []any.
func stringList(data map[string]any, field string) ([]string, error) {
	switch v := data[field].(type) {
	case nil:
		return nil, nil
	case []string:
		return v, nil
	case []any:
		out := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, reject(field, fmt.Sprintf("element %d is not a string", i))
			}
			out[i] = s
		}
		return out, nil
	default:
		return nil, reject(field, "must be an array of strings")
	}
}

func (r *Rules) checkKey(k string) string {
	if reason := checkExplicitText(k); reason != "" {
		return reason
	}
	for _, a := range r.allow {
		if Match(a, k) {
			return ""
		}
	}
	return "not allowed by explicit.allow"
}

func (r *Rules) checkPattern(p string) string {
	if reason := checkExplicitText(p); reason != "" {
		return reason
	}
	if strings.Contains(p, `\`) {
		return "backslash not allowed"
	}
	if err := checkPrefix(p, globMeta); err != nil {
		return err.Error()
	}
	if err := checkClasses(p); err != nil {
		return err.Error()
	}
	if !r.allowsPattern(p) {
		return "not allowed by explicit.allow"
	}
	return ""
}

func (r *Rules) allowsPattern(p string) bool {
	prefix := LiteralPrefix(p)
	for _, a := range r.allow {
		allowPrefix, isPrefix := strings.CutSuffix(a, "*")
		if (isPrefix && strings.HasPrefix(prefix, allowPrefix)) || a == p {
			return true
		}
	}
	return false
}

func checkExplicitText(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > MaxKeyLen:
		return fmt.Sprintf("%d bytes, longer than %d", len(s), MaxKeyLen)
	case !utf8.ValidString(s):
		return "not valid UTF-8"
	case strings.IndexFunc(s, isSpaceOrControl) >= 0:
		return "holds whitespace or a control character"
	}
	return ""
}

func isSpaceOrControl(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) }
