package cachekeys

import "strings"

// SegmentPrefixes returns every prefix of key that ends with the
// [Separator], shortest first, the key itself included when it ends with
// one: "cache:course_analytics:42" gives ["cache:", "cache:course_analytics:"]
// and "user:1:x" gives ["user:", "user:1:"]. A key without a separator has
// none.
//
// Together with [PatternScope] it lets a warmer tell, without matching,
// which invalidations can touch a key: a pattern P (a string holding a glob
// metacharacter, with a literal prefix and separator as every template
// has) can match key K only if PatternScope(P) is one of
// SegmentPrefixes(K); an exact key matches only itself. So recording each
// invalidation under its scope, and looking a key up under its segment
// prefixes and itself, finds every invalidation that may have covered it.
func SegmentPrefixes(key string) []string {
	var out []string
	for i := 0; i < len(key); i++ {
		if strings.HasPrefix(key[i:], Separator) {
			out = append(out, key[:i+len(Separator)])
		}
	}
	return out
}

// PatternScope returns the [LiteralPrefix] of pattern cut back to, and
// including, its last [Separator]: "cache:course_analytics:42:*" gives
// "cache:course_analytics:42:", "cache:sys*" gives "cache:" and "user:?"
// gives "user:". Every key the pattern matches starts with it, and it ends
// with the separator for every pattern that passes the template checks
// (see [ParseTemplate]); it is "" when the literal prefix holds no
// separator. A string without metacharacters is an exact key and is
// returned unchanged. See [SegmentPrefixes] for how the two relate.
func PatternScope(pattern string) string {
	prefix := LiteralPrefix(pattern)
	if prefix == pattern {
		return pattern
	}
	i := strings.LastIndex(prefix, Separator)
	if i < 0 {
		return ""
	}
	return prefix[:i+len(Separator)]
}
