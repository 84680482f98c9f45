package events

import (
	"errors"
	"fmt"
	"strings"
)

// Prefix is the first token of every event subject.
const Prefix = "events"

// ErrInvalidSubject is wrapped by every error about a subject that does not
// follow the scheme events.<entity>.<action>.
var ErrInvalidSubject = errors.New("events: invalid subject")

// ValidateSubject checks that subject has exactly three dot-separated tokens,
// that the first is Prefix, and that entity and action match [a-z0-9_-]+.
// Wildcards are therefore refused. The error wraps ErrInvalidSubject and
// names the offending token.
func ValidateSubject(subject string) error {
	if rest, ok := strings.CutPrefix(subject, Prefix+"."); ok {
		if entity, action, ok := strings.Cut(rest, "."); ok && validToken(entity) && validToken(action) {
			return nil // the common case, without allocating
		}
	}
	tokens := strings.Split(subject, ".")
	switch {
	case len(tokens) != 3:
		return invalidSubject(subject, "has %d tokens, want 3 (%s.<entity>.<action>)", len(tokens), Prefix)
	case tokens[0] != Prefix:
		return invalidSubject(subject, "first token %q must be %q", tokens[0], Prefix)
	}
	for _, tok := range tokens[1:] {
		if !validToken(tok) {
			return invalidSubject(subject, "token %q must match [a-z0-9_-]+", tok)
		}
	}
	return nil
}

func invalidSubject(subject, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidSubject, subject, fmt.Sprintf(format, args...))
}

// validToken reports whether tok matches [a-z0-9_-]+.
func validToken(tok string) bool {
	if tok == "" {
		return false
	}
	for _, c := range []byte(tok) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
