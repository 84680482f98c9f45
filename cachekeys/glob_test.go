package cachekeys_test

import (
	"strings"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		pattern string
		given   string
		want    bool
	}{
		{name: "literal", pattern: "user:42", given: "user:42", want: true},
		{name: "literal differs", pattern: "user:42", given: "user:420", want: false},
		{name: "star tail", pattern: "user:42:*", given: "user:42:profile", want: true},
		{name: "star tail needs separator", pattern: "user:42:*", given: "user:420:profile", want: false},
		{name: "star matches empty run", pattern: "user:42:*", given: "user:42:", want: true},
		{name: "star middle", pattern: "a*c", given: "abbbc", want: true},
		{name: "star middle fails", pattern: "a*c", given: "abbbd", want: false},
		{name: "many stars", pattern: "a**b*", given: "axxbyy", want: true},
		{name: "only star", pattern: "*", given: "anything", want: true},
		{name: "star vs empty key (Redis quirk)", pattern: "*", given: "", want: false},
		{name: "empty vs empty", pattern: "", given: "", want: true},
		{name: "question", pattern: "a?c", given: "abc", want: true},
		{name: "question needs a byte", pattern: "a?c", given: "ac", want: false},
		{name: "question is one byte", pattern: "a?", given: "aé", want: false},
		{name: "class", pattern: "h[ae]llo", given: "hallo", want: true},
		{name: "class miss", pattern: "h[ae]llo", given: "hillo", want: false},
		{name: "negated class", pattern: "h[^e]llo", given: "hallo", want: true},
		{name: "negated class miss", pattern: "h[^e]llo", given: "hello", want: false},
		{name: "range", pattern: "h[a-b]llo", given: "hbllo", want: true},
		{name: "reversed range", pattern: "h[b-a]llo", given: "hallo", want: true},
		{name: "range miss", pattern: "h[a-b]llo", given: "hcllo", want: false},
		{name: "escaped star", pattern: `a\*b`, given: "a*b", want: true},
		{name: "escaped star is literal", pattern: `a\*b`, given: "axb", want: false},
		{name: "escaped bracket", pattern: `a\[b`, given: "a[b", want: true},
		{name: "escape in class", pattern: `[\]]`, given: "]", want: true},
		{name: "trailing backslash literal", pattern: `a\`, given: `a\`, want: true},
		{name: "unclosed class runs to end", pattern: "a[bc", given: "ac", want: true},
		{name: "unclosed class is one byte", pattern: "a[bc", given: "abc", want: false},
		{name: "empty class matches nothing", pattern: "a[]", given: "a]", want: false},
		{name: "metachar in key is literal", pattern: "user:*", given: "user:[x]", want: true},
		{name: "key shorter than pattern", pattern: "user:42", given: "user:4", want: false},
		{name: "backtracking", pattern: "*a*a*a*b", given: strings.Repeat("a", 60), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := cachekeys.Match(tt.pattern, tt.given); got != tt.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.given, got, tt.want)
			}
		})
	}
}

func TestLiteralPrefix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given string
		want  string
	}{
		{given: "user:42:*", want: "user:42:"},
		{given: "user:42", want: "user:42"},
		{given: "cache:a?b", want: "cache:a"},
		{given: "cache:[ab]", want: "cache:"},
		{given: `cache:\*`, want: "cache:"},
		{given: "*", want: ""},
		{given: "", want: ""},
	}
	for _, tt := range tests {
		if got := cachekeys.LiteralPrefix(tt.given); got != tt.want {
			t.Errorf("LiteralPrefix(%q) = %q, want %q", tt.given, got, tt.want)
		}
	}
}

// FuzzMatch checks that Match never panics, that a pattern without
// metacharacters matches exactly itself, and that every match starts with
// the pattern's literal prefix.
func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{{"user:*", "user:1"}, {"a[b-", "a"}, {`[\`, `\`}, {"*?*", "ab"}, {"a[^]", "ab"}, {"[a-]x", "]"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, key string) {
		got := cachekeys.Match(pattern, key)
		literal := !strings.ContainsAny(pattern, `*?[\`)
		if literal && !cachekeys.Match(pattern, pattern) {
			t.Errorf("literal %q does not match itself", pattern)
		}
		if literal && got != (pattern == key) {
			t.Errorf("Match(%q, %q) = %v for a literal pattern", pattern, key, got)
		}
		if got && !strings.HasPrefix(key, cachekeys.LiteralPrefix(pattern)) {
			t.Errorf("Match(%q, %q) but key lacks prefix %q", pattern, key, cachekeys.LiteralPrefix(pattern))
		}
	})
}
