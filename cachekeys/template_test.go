package cachekeys_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

func TestParseTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		given       string
		wantPattern bool
		wantFields  []string
		wantErr     string // substring of the reason; empty means accepted
	}{
		{name: "exact key", given: "cache:{id}", wantFields: []string{"id"}},
		{name: "pattern after placeholder", given: "user:{user_id}:*", wantPattern: true, wantFields: []string{"user_id"}},
		{name: "literal pattern", given: "cache:system_stats:*", wantPattern: true},
		{name: "literal exact", given: "cache:system_stats"},
		{name: "nested path", given: "cache:{course.id}:{user-id}", wantFields: []string{"course.id", "user-id"}},
		{name: "repeated field listed once", given: "c:{a}:{a}", wantFields: []string{"a"}},
		{name: "placeholder inside segment", given: "c:v{a}-{b}", wantFields: []string{"a", "b"}},
		{name: "class", given: "cache:stats:[a-z]?", wantPattern: true},
		{name: "negated class", given: "cache:stats:[^x]", wantPattern: true},
		{name: "glob segment before placeholder", given: "cache:*:{id}", wantPattern: true, wantFields: []string{"id"}},
		{name: "stray close bracket", given: "cache:a]", wantErr: "unbalanced ']'"},

		{name: "empty", given: "", wantErr: "empty"},
		{name: "star only", given: "*", wantErr: "literal prefix"},
		{name: "placeholder only", given: "{id}", wantErr: "literal prefix"},
		{name: "placeholder then star", given: "{id}*", wantErr: "literal prefix"},
		{name: "no separator before star", given: "cache*", wantErr: "literal prefix"},
		{name: "glob in first segment", given: "c*:x", wantErr: "literal prefix"},
		{name: "empty prefix", given: ":x", wantErr: "literal prefix"},
		{name: "placeholder in prefix", given: "cache{id}:x", wantErr: "literal prefix"},
		{name: "no separator at all", given: "cache", wantErr: "literal prefix"},
		{name: "star after placeholder", given: "cache:{id}*", wantErr: "mixes a placeholder"},
		{name: "star before placeholder", given: "cache:*{id}", wantErr: "mixes a placeholder"},
		{name: "question mark in segment", given: "cache:x{id}?", wantErr: "mixes a placeholder"},
		{name: "class in segment", given: "cache:[a]{id}", wantErr: "mixes a placeholder"},
		{name: "adjacent placeholders", given: "cache:{a}{b}", wantErr: "literal text between"},
		{name: "empty placeholder", given: "cache:{}", wantErr: "empty placeholder"},
		{name: "unclosed brace", given: "cache:{id", wantErr: "unbalanced '{'"},
		{name: "stray close brace", given: "cache:id}", wantErr: "unbalanced '}'"},
		{name: "nested braces", given: "cache:{a{b}}", wantErr: "nested '{'"},
		{name: "bad path char", given: "cache:{a b}", wantErr: "whitespace"},
		{name: "bad path segment", given: "cache:{a..b}", wantErr: "field path"},
		{name: "bad path punctuation", given: "cache:{a:b}", wantErr: "field path"},
		{name: "backslash", given: `cache:\*`, wantErr: "backslash"},
		{name: "whitespace", given: "cache: x", wantErr: "whitespace"},
		{name: "control", given: "cache:\x01", wantErr: "control"},
		{name: "invalid utf-8", given: "cache:\xff", wantErr: "UTF-8"},
		{name: "unclosed class", given: "cache:[ab", wantErr: "unclosed '['"},
		{name: "range swallowing bracket", given: "cache:[a-]:x", wantErr: "unclosed '['"},
		{name: "empty class", given: "cache:[]", wantErr: "empty glob class"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := cachekeys.ParseTemplate(tt.given)
			if tt.wantErr != "" {
				checkRuleErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("ParseTemplate(%q) error = %v", tt.given, err)
			}
			if got.String() != tt.given || got.IsPattern() != tt.wantPattern || !slices.Equal(got.Fields(), tt.wantFields) {
				t.Errorf("ParseTemplate(%q) = %q pattern=%v fields=%q, want pattern=%v fields=%q",
					tt.given, got, got.IsPattern(), got.Fields(), tt.wantPattern, tt.wantFields)
			}
		})
	}
}

func checkRuleErr(t *testing.T, err error, want string) {
	t.Helper()
	var re *cachekeys.RuleError
	if !errors.Is(err, cachekeys.ErrInvalidRules) || !errors.As(err, &re) {
		t.Fatalf("error = %v, want a *RuleError wrapping ErrInvalidRules", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error = %q, want it to contain %q", err, want)
	}
}

func TestTemplateRender(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		template string
		given    map[string]any
		want     string
		wantErr  string // substring; empty means success
	}{
		{name: "string", template: "cache:{id}", given: map[string]any{"id": "abc"}, want: "cache:abc"},
		{name: "json integer", template: "cache:{id}", given: map[string]any{"id": json.Number("42")}, want: "cache:42"},
		{name: "json decimal kept as written", template: "cache:{id}", given: map[string]any{"id": json.Number("4.50")}, want: "cache:4.50"},
		{name: "int", template: "cache:{id}", given: map[string]any{"id": 42}, want: "cache:42"},
		{name: "negative int64", template: "cache:{id}", given: map[string]any{"id": int64(-7)}, want: "cache:-7"},
		{name: "uint8", template: "cache:{id}", given: map[string]any{"id": uint8(255)}, want: "cache:255"},
		{name: "float64", template: "cache:{id}", given: map[string]any{"id": 4.5}, want: "cache:4.5"},
		{name: "float32", template: "cache:{id}", given: map[string]any{"id": float32(0.1)}, want: "cache:0.1"},
		{name: "nested path", template: "cache:{course.id}:*", given: map[string]any{"course": map[string]any{"id": "c1"}}, want: "cache:c1:*"},
		{name: "unicode", template: "cache:{id}", given: map[string]any{"id": "café"}, want: "cache:café"},
		{name: "two fields", template: "c:{a}:{b}", given: map[string]any{"a": "1", "b": 2}, want: "c:1:2"},

		{name: "missing", template: "cache:{id}", given: map[string]any{}, wantErr: "field id: value is missing"},
		{name: "nil data", template: "cache:{id}", given: nil, wantErr: "value is missing"},
		{name: "missing nested", template: "cache:{course.id}", given: map[string]any{"course": map[string]any{}}, wantErr: "field course.id: value is missing"},
		{name: "parent not object", template: "cache:{course.id}", given: map[string]any{"course": "x"}, wantErr: "not an object"},
		{name: "star", template: "cache:{course_id}", given: map[string]any{"course_id": "*"}, wantErr: "field course_id: value holds glob metacharacter '*'"},
		{name: "separator", template: "cache:{id}", given: map[string]any{"id": "123:profile"}, wantErr: "separator"},
		{name: "space", template: "cache:{id}", given: map[string]any{"id": "a b"}, wantErr: "whitespace"},
		{name: "tab", template: "cache:{id}", given: map[string]any{"id": "a\tb"}, wantErr: "whitespace"},
		{name: "non-breaking space", template: "cache:{id}", given: map[string]any{"id": "a\u00a0b"}, wantErr: "whitespace"},
		{name: "empty string", template: "cache:{id}", given: map[string]any{"id": ""}, wantErr: "empty"},
		{name: "empty json number", template: "cache:{id}", given: map[string]any{"id": json.Number("")}, wantErr: "empty"},
		{name: "null", template: "cache:{id}", given: map[string]any{"id": nil}, wantErr: "null"},
		{name: "bool", template: "cache:{id}", given: map[string]any{"id": true}, wantErr: "boolean"},
		{name: "object", template: "cache:{id}", given: map[string]any{"id": map[string]any{"a": 1}}, wantErr: "object"},
		{name: "array", template: "cache:{id}", given: map[string]any{"id": []any{"a"}}, wantErr: "array"},
		{name: "other type", template: "cache:{id}", given: map[string]any{"id": []string{"a"}}, wantErr: "not supported"},
		{name: "too long", template: "cache:{id}", given: map[string]any{"id": strings.Repeat("a", 257)}, wantErr: "longer than 256"},
		{name: "question mark", template: "cache:{id}", given: map[string]any{"id": "a?b"}, wantErr: "glob metacharacter '?'"},
		{name: "class", template: "cache:{id}", given: map[string]any{"id": "[x]"}, wantErr: "glob metacharacter '['"},
		{name: "close bracket", template: "cache:{id}", given: map[string]any{"id": "x]"}, wantErr: "glob metacharacter ']'"},
		{name: "backslash", template: "cache:{id}", given: map[string]any{"id": `a\b`}, wantErr: `glob metacharacter '\\'`},
		{name: "nul", template: "cache:{id}", given: map[string]any{"id": "\x00"}, wantErr: "control"},
		{name: "invalid utf-8", template: "cache:{id}", given: map[string]any{"id": "\xff"}, wantErr: "UTF-8"},
		{name: "NaN", template: "cache:{id}", given: map[string]any{"id": nan()}, wantErr: "finite"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tmpl, err := cachekeys.ParseTemplate(tt.template)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tmpl.Render(tt.given)
			if tt.wantErr != "" {
				if !errors.Is(err, cachekeys.ErrRejected) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Render() = %q, %v; want ErrRejected containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Render() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

func TestValue(t *testing.T) {
	t.Parallel()
	got, err := cachekeys.Value(json.Number("42"))
	if err != nil || got != "42" {
		t.Errorf("Value(42) = %q, %v", got, err)
	}
	_, err = cachekeys.Value("*")
	if !errors.Is(err, cachekeys.ErrRejected) {
		t.Fatalf("Value(*) error = %v, want ErrRejected", err)
	}
	if want := "rejected: value holds glob metacharacter '*'"; err.Error() != want {
		t.Errorf("Value(*) error = %q, want %q", err, want)
	}
}

// FuzzRender checks that a value never widens a key: the keys of one value
// never match the keys of another.
func FuzzRender(f *testing.F) {
	for _, s := range [][2]string{{"42", "420"}, {"42", "4"}, {"42", "142"}, {"a", "*"}, {"a", "a:x"}, {"x", "[x]"}, {"é", "e"}} {
		f.Add(s[0], s[1])
	}
	pattern := mustTemplate(f, "cache:course_analytics:{id}:*")
	exact := mustTemplate(f, "cache:course_analytics:{id}")
	f.Fuzz(func(t *testing.T, a, b string) {
		if a == b || !validValue(a) || !validValue(b) {
			return
		}
		for _, tmpl := range []cachekeys.Template{pattern, exact} {
			got, err := tmpl.Render(map[string]any{"id": a})
			if err != nil {
				t.Fatalf("Render(%q) error = %v", a, err)
			}
			own, other := keysFor(tmpl, a), keysFor(tmpl, b)
			if !cachekeys.Match(got, own) {
				t.Errorf("%q does not match its own key %q", got, own)
			}
			for _, k := range []string{other, "cache:course_analytics:" + b, "cache:course_analytics:" + b + ":x"} {
				if cachekeys.Match(got, k) {
					t.Errorf("%q (value %q) matches %q (value %q)", got, a, k, b)
				}
			}
		}
	})
}

func mustTemplate(tb testing.TB, s string) cachekeys.Template {
	tb.Helper()
	tmpl, err := cachekeys.ParseTemplate(s)
	if err != nil {
		tb.Fatal(err)
	}
	return tmpl
}

func validValue(s string) bool {
	_, err := cachekeys.Value(s)
	return err == nil
}

func keysFor(tmpl cachekeys.Template, v string) string {
	if tmpl.IsPattern() {
		return "cache:course_analytics:" + v + ":x"
	}
	return "cache:course_analytics:" + v
}

// FuzzParseTemplate checks that parsing never panics and that every accepted
// template starts with a literal prefix and the separator.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{"cache:{id}", "user:{user_id}:*", "cache:{id}*", "{id}", "c:[a-z]:{x.y}", "c:{a}{b}", "c:[a-]", `c:\*`, "c:{"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tmpl, err := cachekeys.ParseTemplate(s)
		if err != nil {
			if !errors.Is(err, cachekeys.ErrInvalidRules) {
				t.Fatalf("error %v does not wrap ErrInvalidRules", err)
			}
			return
		}
		sep, stop := strings.Index(s, ":"), strings.IndexAny(s, `*?[]\{`)
		if sep <= 0 || (stop >= 0 && stop < sep) {
			t.Errorf("accepted %q without a literal prefix and separator", s)
		}
		if tmpl.String() != s {
			t.Errorf("String() = %q, want %q", tmpl.String(), s)
		}
	})
}
