package cachekeys

import (
	"errors"
	"fmt"
	"strings"
)

// InvalidateSubject is the built-in subject of explicit invalidation
// requests. Its events name keys and patterns directly and are checked
// against the explicit section of the rules file; no rule is consulted.
const InvalidateSubject = "events.cache.invalidate"

// SubjectPrefix is the first token of every event subject,
// events.<entity>.<action>; the worker's stream listens on SubjectPrefix.>.
// (It is events.Prefix; cachekeys does not import events.)
const SubjectPrefix = "events"

// subjectTokens is the number of tokens of an event subject.
const subjectTokens = 3

// MatchSubject reports whether a NATS subject matches a filter. In the
// filter, `*` matches exactly one token and `>`, as the last token, matches
// one or more trailing tokens. A subject with an empty token never matches.
func MatchSubject(filter, subject string) bool {
	ft := strings.Split(filter, ".")
	st := strings.Split(subject, ".")
	for i, f := range ft {
		if f == ">" {
			return i < len(st) && validTokens(st[i:])
		}
		if i >= len(st) || st[i] == "" || (f != "*" && f != st[i]) {
			return false
		}
	}
	return len(ft) == len(st)
}

func validTokens(tokens []string) bool {
	for _, t := range tokens {
		if t == "" {
			return false
		}
	}
	return true
}

// checkFilter validates an `on` filter: dot-separated tokens, each made of
// [a-z0-9_-], or `*`, or `>` as the last token; and the filter must match at
// least one event subject events.<entity>.<action>, or the rule would never
// fire.
func checkFilter(filter string) error {
	if filter == InvalidateSubject {
		return fmt.Errorf("subject %q is reserved for explicit invalidation", filter)
	}
	tokens := strings.Split(filter, ".")
	for i, t := range tokens {
		if err := checkFilterToken(t, i == len(tokens)-1); err != nil {
			return fmt.Errorf("invalid subject filter: token %d %q: %w", i+1, t, err)
		}
	}
	return canMatchEvent(tokens)
}

// canMatchEvent explains why a syntactically valid filter matches no
// event subject, if it does not.
func canMatchEvent(tokens []string) error {
	const want = "event subjects are " + SubjectPrefix + ".<entity>.<action>"
	if t := tokens[0]; t != SubjectPrefix && t != "*" && t != ">" {
		return fmt.Errorf("the filter can never match: %s, and the stream listens on %s.>; the first token must be %q, not %q",
			want, SubjectPrefix, SubjectPrefix, t)
	}
	n := len(tokens)
	if tokens[n-1] == ">" {
		if n > subjectTokens {
			return fmt.Errorf("the filter can never match: %s (3 tokens), and this filter needs at least %d", want, n)
		}
		return nil
	}
	if n == subjectTokens {
		return nil
	}
	err := fmt.Errorf("the filter can never match: %s (3 tokens), and this filter has %d", want, n)
	if n == subjectTokens-1 {
		err = fmt.Errorf("%w; for every event of the entity write %s.*", err, strings.Join(tokens, "."))
	}
	return err
}

func checkFilterToken(t string, last bool) error {
	switch {
	case t == "":
		return errors.New("empty token")
	case t == "*":
		return nil
	case t == ">" && !last:
		return errors.New("'>' is only allowed as the last token")
	case t == ">":
		return nil
	}
	for _, c := range t {
		if !isFilterChar(c) {
			return fmt.Errorf("character %q is not allowed, use [a-z0-9_-]", c)
		}
	}
	return nil
}

func isFilterChar(c rune) bool {
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'
}
