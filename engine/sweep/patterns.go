package sweep

import (
	"slices"
	"strings"

	"github.com/invalidator/invalidator/cachekeys"
)

// covers reports whether every key matching b also matches a, in the one
// case checked cheaply: a is a literal prefix followed only by stars, and b
// starts with that prefix. (An empty prefix covers every non-empty b: `*`
// matches every key but the empty one.)
func covers(a, b string) bool {
	lit, ok := starPrefix(a)
	if !ok {
		return false
	}
	if lit == "" {
		return b != ""
	}
	return strings.HasPrefix(b, lit)
}

// starPrefix returns the literal prefix of a pattern that is that prefix
// followed by one or more stars, and false for any other pattern.
func starPrefix(a string) (string, bool) {
	lit := cachekeys.LiteralPrefix(a)
	rest := a[len(lit):]
	return lit, rest != "" && strings.Trim(rest, "*") == ""
}

// matchSet is the compiled set of patterns a page is matched against: the
// distinct patterns that no other active pattern covers, indexed by literal
// prefix so that a key is tried only against the patterns whose prefix it
// starts with.
type matchSet struct {
	byPrefix map[string][]string
	lengths  []int // distinct literal prefix lengths, ascending
	serve    int   // number of patterns matched
	match    string
}

// compile builds the match set of patterns (in any order, duplicates
// allowed). Of two patterns that cover each other ("a*" and "a**") the
// smaller string is kept.
func compile(patterns []string) matchSet {
	distinct := slices.Compact(slices.Sorted(slices.Values(patterns)))
	covered := make([]bool, len(distinct))
	for i, a := range distinct {
		lit, ok := starPrefix(a)
		if !ok {
			continue
		}
		start, _ := slices.BinarySearch(distinct, lit)
		for j := start; j < len(distinct) && strings.HasPrefix(distinct[j], lit); j++ {
			b := distinct[j]
			if j == i || !covers(a, b) || (covers(b, a) && b < a) {
				continue
			}
			covered[j] = true
		}
	}
	s := matchSet{byPrefix: map[string][]string{}}
	var kept []string
	for i, p := range distinct {
		if covered[i] {
			continue
		}
		kept = append(kept, p)
		lit := cachekeys.LiteralPrefix(p)
		if _, ok := s.byPrefix[lit]; !ok {
			s.lengths = append(s.lengths, len(lit))
		}
		s.byPrefix[lit] = append(s.byPrefix[lit], p)
	}
	slices.Sort(s.lengths)
	s.lengths = slices.Compact(s.lengths)
	s.serve = len(kept)
	s.match = serverMatch(kept)
	return s
}

// serverMatch returns the MATCH argument for a walk serving kept: the
// pattern itself when there is one, the escaped common literal prefix
// followed by `*` when they share one, else "" (no MATCH). Every key a kept
// pattern matches also matches the result, so a page filtered by it loses
// nothing the client would have matched.
func serverMatch(kept []string) string {
	switch len(kept) {
	case 0:
		return ""
	case 1:
		return kept[0]
	}
	prefix := cachekeys.LiteralPrefix(kept[0])
	for _, p := range kept[1:] {
		lit := cachekeys.LiteralPrefix(p)
		n := 0
		for n < len(prefix) && n < len(lit) && prefix[n] == lit[n] {
			n++
		}
		prefix = prefix[:n]
	}
	if prefix == "" {
		return ""
	}
	return escapeGlob(prefix) + "*"
}

// escapeGlob escapes the bytes Redis' glob gives a meaning to.
func escapeGlob(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(`*?[]\`, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// find returns the pattern of the set that matches key, trying the
// patterns with the shortest literal prefix first, and false if none does.
func (s *matchSet) find(key string) (string, bool) {
	for _, n := range s.lengths {
		if n > len(key) {
			break
		}
		for _, p := range s.byPrefix[key[:n]] {
			if cachekeys.Match(p, key) {
				return p, true
			}
		}
	}
	return "", false
}
