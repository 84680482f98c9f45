package sweep

import (
	"slices"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

func TestCompile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		given     []string
		wantServe []string
		wantMatch string
	}{
		{"one pattern is sent as MATCH", []string{"cache:c:42:*"}, []string{"cache:c:42:*"}, "cache:c:42:*"},
		{"duplicates are matched once", []string{"a:1:*", "a:1:*"}, []string{"a:1:*"}, "a:1:*"},
		{"a wider pattern covers", []string{"a:1:x?", "a:*", "a:1:*", "a:2:[ab]"}, []string{"a:*"}, "a:*"},
		{"equivalent stars keep one", []string{"a:**", "a:*"}, []string{"a:*"}, "a:*"},
		{"shared literal prefix", []string{"c:42:*", "c:420:*"}, []string{"c:420:*", "c:42:*"}, "c:42*"},
		{"prefix is escaped", []string{"c]:1?", "c]:2?"}, []string{"c]:1?", "c]:2?"}, `c\]:*`},
		{"no shared prefix, no MATCH", []string{"a:*x", "b:*"}, []string{"a:*x", "b:*"}, ""},
		{"a star pattern covers all but the empty key", []string{"*", "a", ""}, []string{"", "*"}, ""},
		{"a class does not cover", []string{"a[b]*", "ab:1"}, []string{"a[b]*", "ab:1"}, "a*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := compile(tt.given)
			var got []string
			for _, ps := range s.byPrefix {
				got = append(got, ps...)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.wantServe) || s.match != tt.wantMatch {
				t.Errorf("compile(%q) serves %q with MATCH %q, want %q with %q", tt.given, got, s.match, tt.wantServe, tt.wantMatch)
			}
		})
	}
}

// A key that any pattern matches is found by the compiled set, and only
// such keys; the server-side MATCH keeps every one of them.
func FuzzCompiledSetAgreesWithMatch(f *testing.F) {
	f.Add("a:*", "a:1:*", "b:?", "a:1:x")
	f.Add("*", "", "[a-c]*", "b")
	f.Add(`x\*:*`, "x*:1", "x*", "x*:1")
	f.Fuzz(func(t *testing.T, p1, p2, p3, key string) {
		patterns := []string{p1, p2, p3}
		s := compile(patterns)
		want := slices.ContainsFunc(patterns, func(p string) bool { return cachekeys.Match(p, key) })
		p, got := s.find(key)
		if got != want {
			t.Fatalf("find(%q) over %q = %q, %v; want %v", key, patterns, p, got, want)
		}
		if want && s.match != "" && !cachekeys.Match(s.match, key) {
			t.Fatalf("MATCH %q drops %q, which %q match", s.match, key, patterns)
		}
		for _, a := range patterns {
			for _, b := range patterns {
				if covers(a, b) && cachekeys.Match(b, key) && !cachekeys.Match(a, key) {
					t.Fatalf("%q covers %q but misses %q", a, b, key)
				}
			}
		}
	})
}
