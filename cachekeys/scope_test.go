package cachekeys_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

func TestSegmentPrefixes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given string
		want  []string
	}{
		{given: "cache:course_analytics:42", want: []string{"cache:", "cache:course_analytics:"}},
		{given: "user:1:x", want: []string{"user:", "user:1:"}},
		{given: "user:1:", want: []string{"user:", "user:1:"}},
		{given: "a::b", want: []string{"a:", "a::"}},
		{given: ":x", want: []string{":"}},
		{given: "plain", want: nil},
		{given: "", want: nil},
	}
	for _, tt := range tests {
		if got := cachekeys.SegmentPrefixes(tt.given); !slices.Equal(got, tt.want) {
			t.Errorf("SegmentPrefixes(%q) = %q, want %q", tt.given, got, tt.want)
		}
	}
}

func TestPatternScope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		given string
		want  string
	}{
		{given: "cache:course_analytics:42:*", want: "cache:course_analytics:42:"},
		{given: "cache:sys*", want: "cache:"},
		{given: "user:?", want: "user:"},
		{given: "cache:system_stats:*", want: "cache:system_stats:"},
		{given: "cache:*:x", want: "cache:"},
		{given: "cache:a[bc]:d", want: "cache:"},
		{given: "cache:course_analytics:42", want: "cache:course_analytics:42"},
		{given: "c*", want: ""},
		{given: "", want: ""},
	}
	for _, tt := range tests {
		if got := cachekeys.PatternScope(tt.given); got != tt.want {
			t.Errorf("PatternScope(%q) = %q, want %q", tt.given, got, tt.want)
		}
	}
}

// FuzzScope checks the property the generation guard relies on: for a
// pattern P rendered from a template and any key K, Match(P, K) implies
// that PatternScope(P) is one of SegmentPrefixes(K), and for an exact key
// that PatternScope(P) is K itself. Keys are drawn near the pattern so that
// matches are common.
func FuzzScope(f *testing.F) {
	seeds := [][3]string{
		{"cache:course_analytics:{id}:*", "42", "weekly"},
		{"cache:sys*", "x", "tem_stats:global"},
		{"user:?", "1", "7"},
		{"cache:*:{id}", "42", "a:b"},
		{"cache:s:[a-z]?", "1", "ab"},
		{"cache:{id}", "42", ""},
		{"a:*", "1", ""},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, src, value, fill string) {
		tmpl, err := cachekeys.ParseTemplate(src)
		if err != nil {
			return
		}
		data := map[string]any{}
		for _, field := range tmpl.Fields() {
			setPath(data, field, value)
		}
		p, err := tmpl.Render(data)
		if err != nil {
			return
		}
		scope := cachekeys.PatternScope(p)
		if tmpl.IsPattern() && !strings.HasSuffix(scope, ":") {
			t.Fatalf("PatternScope(%q) = %q does not end with the separator", p, scope)
		}
		for _, k := range candidateKeys(p, fill) {
			if !cachekeys.Match(p, k) {
				continue
			}
			if tmpl.IsPattern() && !slices.Contains(cachekeys.SegmentPrefixes(k), scope) {
				t.Errorf("Match(%q, %q) but scope %q is not in %q", p, k, scope, cachekeys.SegmentPrefixes(k))
			}
			if !tmpl.IsPattern() && scope != k {
				t.Errorf("Match(%q, %q) but scope %q is not the key", p, k, scope)
			}
		}
	})
}

// candidateKeys returns keys likely to match pattern p: fill on its own,
// after the literal prefix, and standing in for each run of metacharacters
// (a class becoming its first member).
func candidateKeys(p, fill string) []string {
	one := "x"
	if fill != "" {
		one = fill[:1]
	}
	keys := []string{fill, p, cachekeys.LiteralPrefix(p) + fill, cachekeys.PatternScope(p) + fill}
	var b, c strings.Builder
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '*':
			b.WriteString(fill)
		case '?':
			b.WriteString(one)
			c.WriteString(one)
		case '[':
			end := strings.IndexByte(p[i+1:], ']')
			if end < 0 {
				return append(keys, b.String(), c.String())
			}
			class := strings.TrimPrefix(p[i+1:i+1+end], "^")
			if class != "" {
				b.WriteByte(class[0])
				c.WriteByte(class[0])
			}
			i += end + 1
			continue
		default:
			b.WriteByte(p[i])
			c.WriteByte(p[i])
		}
	}
	return append(keys, b.String(), c.String())
}
