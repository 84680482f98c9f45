package cachekeys_test

import (
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

func TestParseURLTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		given      string
		wantHost   string
		wantFields []string
		wantErr    string // substring of the reason; empty means accepted
	}{
		{name: "path placeholder", given: "http://api:8000/api/v3/analytics/courses/{course_id}", wantHost: "api:8000", wantFields: []string{"course_id"}},
		{name: "no placeholder", given: "http://api:8000/api/v3/system/stats", wantHost: "api:8000"},
		{name: "no path", given: "http://api:8000", wantHost: "api:8000"},
		{name: "https default port", given: "https://API.example.com/x", wantHost: "api.example.com:443"},
		{name: "http default port", given: "http://api/x/{a.b}", wantHost: "api:80", wantFields: []string{"a.b"}},
		{name: "ipv6 host", given: "http://[::1]:8000/x", wantHost: "[::1]:8000"},
		{name: "query value", given: "http://api/x?course={id}&week={w}", wantHost: "api:80", wantFields: []string{"id", "w"}},
		{name: "query value after literal", given: "http://api/x?c=v{id}", wantHost: "api:80", wantFields: []string{"id"}},
		{name: "query right after host", given: "http://api?c={id}", wantHost: "api:80", wantFields: []string{"id"}},
		{name: "placeholder within a path segment", given: "http://api/c-{id}.json", wantHost: "api:80", wantFields: []string{"id"}},
		{name: "repeated field listed once", given: "http://api/{id}/{id}", wantHost: "api:80", wantFields: []string{"id"}},
		{name: "escaped literal", given: "http://api/a%20b/{id}", wantHost: "api:80", wantFields: []string{"id"}},

		{name: "empty", given: "", wantErr: "empty"},
		{name: "relative", given: "/api/v3/{id}", wantErr: "absolute http or https"},
		{name: "other scheme", given: "ftp://api/x", wantErr: "absolute http or https"},
		{name: "no scheme", given: "api:8000/x", wantErr: "absolute http or https"},
		{name: "no host", given: "http:///x", wantErr: "needs a host"},
		{name: "opaque", given: "http:api/x", wantErr: "needs a host"},
		{name: "port only", given: "http://:80/x", wantErr: "needs a host"},
		{name: "credentials", given: "http://user:secret@api/x", wantErr: "put credentials in headers_from_env"},
		{name: "user only", given: "http://user@api/x", wantErr: "credentials"},
		{name: "fragment", given: "http://api/x#top", wantErr: "fragment"},
		{name: "empty fragment", given: "http://api/x#", wantErr: "fragment"},
		{name: "placeholder in host", given: "http://{host}/x", wantErr: "scheme, host or port"},
		{name: "placeholder in host part", given: "http://api-{env}.local/x", wantErr: "scheme, host or port"},
		{name: "placeholder in port", given: "http://api:{port}/x", wantErr: "scheme, host or port"},
		{name: "placeholder in scheme", given: "{scheme}://api/x", wantErr: "scheme, host or port"},
		{name: "placeholder as userinfo", given: "http://{u}@api/x", wantErr: "scheme, host or port"},
		{name: "placeholder in query name", given: "http://api/x?{k}=1", wantErr: "query parameter name"},
		{name: "placeholder in second query name", given: "http://api/x?a=1&{k}=1", wantErr: "query parameter name"},
		{name: "adjacent placeholders", given: "http://api/{a}{b}", wantErr: "literal text between"},
		{name: "empty placeholder", given: "http://api/{}", wantErr: "empty placeholder"},
		{name: "unclosed placeholder", given: "http://api/{id", wantErr: "unbalanced '{'"},
		{name: "bad path", given: "http://api/{a/b}", wantErr: "field path"},
		{name: "space", given: "http://api/a b", wantErr: "whitespace"},
		{name: "tab", given: "http://api/a\tb", wantErr: "whitespace"},
		{name: "control", given: "http://api/a\x7f", wantErr: "control"},
		{name: "backslash", given: `http://api\x`, wantErr: "backslash"},
		{name: "bad escape", given: "http://api/%zz", wantErr: "not a valid URL"},
		{name: "bad port", given: "http://api:80x/", wantErr: "not a valid URL"},
		{name: "invalid utf-8", given: "http://api/\xff", wantErr: "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := cachekeys.ParseURLTemplate(tt.given)
			if tt.wantErr != "" {
				checkRuleErr(t, err, tt.wantErr)
				var re *cachekeys.RuleError
				if errors.As(err, &re) && re.Template != tt.given {
					t.Errorf("RuleError.Template = %q, want %q", re.Template, tt.given)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURLTemplate(%q) error = %v", tt.given, err)
			}
			if got.String() != tt.given || got.Host() != tt.wantHost || !slices.Equal(got.Fields(), tt.wantFields) {
				t.Errorf("ParseURLTemplate(%q) = %q host=%q fields=%q, want host=%q fields=%q",
					tt.given, got, got.Host(), got.Fields(), tt.wantHost, tt.wantFields)
			}
		})
	}
}

func TestURLTemplateRender(t *testing.T) {
	t.Parallel()
	tmpl := mustURL(t, "http://api:8000/c/{id}?q={id}")
	tests := []struct {
		name    string
		given   any
		want    string // the escaped value; empty when wantErr is set
		wantErr string
	}{
		{name: "number", given: json.Number("42"), want: "42"},
		{name: "int", given: 7, want: "7"},
		{name: "unreserved kept", given: "Az09-._~", want: "Az09-._~"},
		{name: "slash", given: "../x", want: "..%2Fx"},
		{name: "percent", given: "50%", want: "50%25"},
		{name: "hash", given: "a#b", want: "a%23b"},
		{name: "query delimiters", given: "a&b=c", want: "a%26b%3Dc"},
		{name: "plus", given: "1+1", want: "1%2B1"},
		{name: "question mark refused as glob", given: "a?b", wantErr: "glob metacharacter"},
		{name: "unicode", given: "café", want: "caf%C3%A9"},
		{name: "at and comma", given: "a@b,c", want: "a%40b%2Cc"},
		{name: "triple dot is a name", given: "...", want: "..."},

		{name: "dot", given: ".", wantErr: `field id: value "." is a relative path segment`},
		{name: "dot dot", given: "..", wantErr: `field id: value ".." is a relative path segment`},
		{name: "separator", given: "a:b", wantErr: "field id: value holds the separator"},
		{name: "space", given: "a b", wantErr: "whitespace"},
		{name: "star", given: "*", wantErr: "glob metacharacter '*'"},
		{name: "empty", given: "", wantErr: "empty"},
		{name: "null", given: nil, wantErr: "null"},
		{name: "too long", given: strings.Repeat("a", 257), wantErr: "longer than 256"},
		{name: "control", given: "a\x00", wantErr: "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tmpl.Render(map[string]any{"id": tt.given})
			if tt.wantErr != "" {
				if !errors.Is(err, cachekeys.ErrRejected) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Render() = %q, %v; want ErrRejected containing %q", got, err, tt.wantErr)
				}
				return
			}
			if want := "http://api:8000/c/" + tt.want + "?q=" + tt.want; err != nil || got != want {
				t.Errorf("Render() = %q, %v; want %q", got, err, want)
			}
		})
	}
}

func TestURLTemplateRenderMissing(t *testing.T) {
	t.Parallel()
	_, err := mustURL(t, "http://api/c/{course.id}").Render(map[string]any{"course": map[string]any{}})
	if !errors.Is(err, cachekeys.ErrRejected) || !strings.Contains(err.Error(), "field course.id: value is missing") {
		t.Errorf("Render() error = %v, want a rejection naming course.id", err)
	}
}

func mustURL(tb testing.TB, s string) cachekeys.URLTemplate {
	tb.Helper()
	u, err := cachekeys.ParseURLTemplate(s)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// FuzzURLRender checks that a value accepted by Render stays inside its own
// path segment and query value: the URL parses, keeps its host, gains no
// '/', '#', '&' or whitespace, and decodes back to the value.
func FuzzURLRender(f *testing.F) {
	for _, s := range []string{"42", "../x", "50%", "a#b", "a&b=c", "1+1", ".", "..", "%2F", "é", "a/b", "~", "@x", "a;b"} {
		f.Add(s)
	}
	tmpl := mustURL(f, "http://api:8000/api/v3/courses/{id}?q={id}&x=1")
	plain, err := tmpl.Render(map[string]any{"id": "v"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, err := tmpl.Render(map[string]any{"id": v})
		if err != nil {
			if !errors.Is(err, cachekeys.ErrRejected) {
				t.Fatalf("Render(%q) error %v does not wrap ErrRejected", v, err)
			}
			return
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("Render(%q) = %q does not parse: %v", v, got, err)
		}
		if u.Host != "api:8000" || u.Scheme != "http" || u.User != nil {
			t.Errorf("Render(%q) = %q changed scheme, host or userinfo", v, got)
		}
		if strings.ContainsAny(got, "# \t\r\n") || strings.IndexFunc(got, isSpaceOrControl) >= 0 {
			t.Errorf("Render(%q) = %q holds '#', whitespace or a control character", v, got)
		}
		if delimiters(got) != delimiters(plain) {
			t.Errorf("Render(%q) = %q: the value added '/', '&' or '='", v, got)
		}
		if want := "/api/v3/courses/" + v; u.Path != want {
			t.Errorf("Render(%q): path decodes to %q, want %q", v, u.Path, want)
		}
		if q := u.Query(); q.Get("q") != v || q.Get("x") != "1" || len(q) != 2 {
			t.Errorf("Render(%q): query decodes to %v", v, q)
		}
	})
}

// FuzzParseURLTemplate checks that parsing never panics and that an accepted
// template is an http(s) URL with a host, no userinfo and no fragment.
func FuzzParseURLTemplate(f *testing.F) {
	for _, s := range []string{"http://api:8000/x/{id}", "http://{h}/x", "http://u:p@h/x", "http://h/x#y", "http://h/x?{k}=1", "https://h?q={a.b}&r=1", "http://[::1]/{x}", "ftp://h/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tmpl, err := cachekeys.ParseURLTemplate(s)
		if err != nil {
			if !errors.Is(err, cachekeys.ErrInvalidRules) {
				t.Fatalf("error %v does not wrap ErrInvalidRules", err)
			}
			return
		}
		data := map[string]any{}
		for _, f := range tmpl.Fields() {
			setPath(data, f, "v")
		}
		got, err := tmpl.Render(data)
		if err != nil {
			return // fields such as {a} and {a.b} cannot both be set
		}
		u, err := url.Parse(got)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil || strings.Contains(got, "#") {
			t.Errorf("accepted %q renders %q (%v)", s, got, err)
		}
	})
}

// delimiters counts the bytes that split a URL into parts.
func delimiters(s string) [4]int {
	return [4]int{strings.Count(s, "/"), strings.Count(s, "&"), strings.Count(s, "="), strings.Count(s, "?")}
}

// setPath sets a dotted path in nested maps.
func setPath(data map[string]any, path string, v any) {
	segs := strings.Split(path, ".")
	for _, seg := range segs[:len(segs)-1] {
		next, ok := data[seg].(map[string]any)
		if !ok {
			next = map[string]any{}
			data[seg] = next
		}
		data = next
	}
	data[segs[len(segs)-1]] = v
}

func isSpaceOrControl(c rune) bool { return c <= ' ' || c == 0x7f || (c >= 0x80 && c <= 0xa0) }
