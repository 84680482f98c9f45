package cachekeys

import (
	"errors"
	"fmt"
	"strings"
)

// Separator divides a key into segments: "cache:course_analytics:42".
const Separator = ":"

// globMeta holds the bytes that give a Redis pattern its meaning. A `]`
// outside a class is literal to Redis, but it is refused in templates and
// values all the same to keep them readable.
const globMeta = `*?[]\`

// Match reports whether key matches a Redis glob pattern, with the semantics
// of Redis' stringmatchlen (as used by SCAN MATCH and KEYS): `*` matches any
// run of bytes, `?` one byte, `[abc]`, `[^a]` and `[a-z]` one byte of a
// class, and `\x` the byte x. Matching is byte-wise and case-sensitive. As
// in Redis' stringmatchlen, an empty key only matches an empty pattern. (SCAN
// and KEYS skip matching for the pattern `*` and so also list an empty key.)
//
// A range compares bytes as C's char of an x86-64 build of Redis, a signed
// type: `[a-\xff]` is the range from 0xff (-1) to 'a', which holds '0' and
// not 'b'. (ARM builds compare unsigned bytes; ranges within ASCII, the
// only ones rules can hold, mean the same on both.) The differential test
// against a real redis-server (glob_redis_test.go) checks all of this.
func Match(pattern, key string) bool {
	var skipLonger bool
	return matchGlob(pattern, key, &skipLonger, 0)
}

// matchGlob ports stringmatchlen_impl. skipLonger records that the rest of
// the pattern after some `*` matched nowhere, so earlier stars need not try
// longer runs; nesting bounds recursion as Redis does.
func matchGlob(p, s string, skipLonger *bool, nesting int) bool {
	if nesting > 1000 {
		return false
	}
	for len(p) > 0 && len(s) > 0 {
		switch p[0] {
		case '*':
			return matchStar(p, s, skipLonger, nesting)
		case '?':
			p, s = p[1:], s[1:]
		case '[':
			rest, ok := matchClass(p[1:], s[0])
			if !ok {
				return false
			}
			p, s = rest, s[1:]
		default:
			if p[0] == '\\' && len(p) >= 2 {
				p = p[1:]
			}
			if p[0] != s[0] {
				return false
			}
			p, s = p[1:], s[1:]
		}
		if len(s) == 0 {
			p = strings.TrimLeft(p, "*")
		}
	}
	return len(p) == 0 && len(s) == 0
}

// matchStar matches p, which starts with `*`, against the non-empty s.
func matchStar(p, s string, skipLonger *bool, nesting int) bool {
	p = strings.TrimLeft(p, "*")
	if p == "" {
		return true
	}
	for ; len(s) > 0; s = s[1:] {
		if matchGlob(p, s, skipLonger, nesting+1) {
			return true
		}
		if *skipLonger {
			return false
		}
	}
	*skipLonger = true
	return false
}

// matchClass matches c against the class whose body starts p (just after
// `[`) and returns the pattern after the closing `]`. As in Redis, an
// unclosed class runs to the end of the pattern, and a range's end byte may
// be `]`.
func matchClass(p string, c byte) (rest string, ok bool) {
	negate := len(p) > 0 && p[0] == '^'
	if negate {
		p = p[1:]
	}
	found := false
	for {
		switch {
		case len(p) >= 2 && p[0] == '\\':
			found = found || p[1] == c
			p = p[2:]
		case len(p) == 0:
			return "", found != negate
		case p[0] == ']':
			return p[1:], found != negate
		case len(p) >= 3 && p[1] == '-':
			lo, hi := min(int8(p[0]), int8(p[2])), max(int8(p[0]), int8(p[2]))
			found = found || (lo <= int8(c) && int8(c) <= hi)
			p = p[3:]
		default:
			found = found || p[0] == c
			p = p[1:]
		}
	}
}

// LiteralPrefix returns the part of pattern before its first glob
// metacharacter (`*`, `?`, `[`) or backslash: every key the pattern matches
// starts with it. For a pattern without metacharacters it is the pattern.
func LiteralPrefix(pattern string) string {
	if i := strings.IndexAny(pattern, `*?[\`); i >= 0 {
		return pattern[:i]
	}
	return pattern
}

// checkPrefix requires s to start with at least one literal character and
// the separator before the first byte of stops (glob metacharacters, and
// `{` for templates).
func checkPrefix(s, stops string) error {
	sep := strings.Index(s, Separator)
	stop := strings.IndexAny(s, stops)
	if sep <= 0 || (stop >= 0 && stop < sep) {
		return fmt.Errorf("must start with a literal prefix and the separator %q before any glob metacharacter or placeholder", Separator)
	}
	return nil
}

// checkClasses requires every `[` in s to open a non-empty class closed by
// `]`, parsed as Redis parses it (so `[a-]` is an unclosed class whose range
// ends in `]`), and refuses a `]` outside a class. s holds no backslash.
func checkClasses(s string) error {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ']':
			return errors.New("unbalanced ']'")
		case '[':
			n, err := classLen(s[i+1:])
			if err != nil {
				return err
			}
			i += n
		}
	}
	return nil
}

// classLen returns the length of a class body including its closing `]`.
func classLen(body string) (int, error) {
	i := 0
	if i < len(body) && body[i] == '^' {
		i++
	}
	start := i
	for i < len(body) {
		switch {
		case body[i] == ']' && i == start:
			return 0, errors.New("empty glob class '[]'")
		case body[i] == ']':
			return i + 1, nil
		case i+2 < len(body) && body[i+1] == '-':
			i += 3
		default:
			i++
		}
	}
	return 0, errors.New("unclosed '[': a glob class must end with ']'")
}
