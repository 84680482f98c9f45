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
// [a-z0-9_-], or `*`, or `>` as the last token.
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
	return nil
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
