package cachekeys

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalidRules is wrapped by every problem found while loading a rules
// file or parsing a template. A worker should refuse to start on it.
var ErrInvalidRules = errors.New("invalid rules")

// ErrRejected is wrapped by every error about an event that must not be
// acted on: a placeholder value that is missing or unsafe, or an explicit
// invalidation request that the rules file does not allow. The event is
// permanently bad; retrying it cannot help.
var ErrRejected = errors.New("rejected")

// RuleError describes a problem in a rules file or a template. It wraps
// [ErrInvalidRules].
type RuleError struct {
	// File is the rules file name, empty for a template parsed on its own.
	File string
	// Rule is the 1-based index of the rule, 0 if not rule-specific.
	Rule int
	// On is the subject filter of the rule, if known.
	On string
	// Warm is the 1-based index of the warm target within the rule, 0 if
	// the problem is not in a warm target.
	Warm int
	// Schedule is the 1-based index of the schedule entry, 0 if the problem
	// is not in the schedule.
	Schedule int
	// Template is the template source text, if the problem is in one.
	Template string
	// Reason says what is wrong.
	Reason string
}

// Error reads like
// `rules.yaml: rule 2 (on "events.course.*"): template "cache:{id}*": reason`,
// `rules.yaml: rule 1 (on "events.course.*"): warm 2: reason` or
// `rules.yaml: schedule 1: template "http://api/x#y": reason`, leaving out
// the parts that are not set.
func (e *RuleError) Error() string {
	parts := make([]string, 0, 6)
	if e.File != "" {
		parts = append(parts, e.File)
	}
	if e.Rule > 0 {
		parts = append(parts, e.rulePart())
	}
	if e.Warm > 0 {
		parts = append(parts, fmt.Sprintf("warm %d", e.Warm))
	}
	if e.Schedule > 0 {
		parts = append(parts, fmt.Sprintf("schedule %d", e.Schedule))
	}
	if e.Template != "" {
		parts = append(parts, "template "+strconv.Quote(e.Template))
	}
	return strings.Join(append(parts, e.Reason), ": ")
}

func (e *RuleError) rulePart() string {
	if e.On == "" {
		return fmt.Sprintf("rule %d", e.Rule)
	}
	return fmt.Sprintf("rule %d (on %q)", e.Rule, e.On)
}

// Unwrap returns [ErrInvalidRules].
func (e *RuleError) Unwrap() error { return ErrInvalidRules }

// reject builds an error wrapping ErrRejected, naming the field if known.
func reject(field, reason string) error {
	if field == "" {
		return fmt.Errorf("%w: %s", ErrRejected, reason)
	}
	return fmt.Errorf("%w: field %s: %s", ErrRejected, field, reason)
}
