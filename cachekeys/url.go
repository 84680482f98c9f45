package cachekeys

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// URLTemplate is a parsed warm URL template such as
// "http://api:8000/api/v3/analytics/courses/{course_id}". Placeholders use
// the path syntax of [Template] and may only stand in the path or in query
// values, so the scheme, host and port are fixed when the rules file is
// loaded. The zero URLTemplate is empty; get one from [ParseURLTemplate].
type URLTemplate struct {
	src    string
	parts  []part
	fields []string
	host   string
}

// ParseURLTemplate parses and checks a warm URL template. The error is a
// [*RuleError] with Template set to s, wrapping [ErrInvalidRules]. A URL
// template:
//
//   - is an absolute http or https URL with a host, and parses with
//     [net/url] once every placeholder is replaced by "x";
//   - holds no userinfo (credentials belong in headers_from_env, never in
//     the rules file), no fragment, no backslash, whitespace or control
//     character;
//   - writes placeholders as `{path}`, path being segments of [A-Za-z0-9_-]
//     joined by dots, with literal text between two placeholders, and only
//     after the host: in the path or in a query value, never in the scheme,
//     host, port or a query parameter name.
func ParseURLTemplate(s string) (URLTemplate, error) {
	u, err := parseURLTemplate(s)
	if err != nil {
		return URLTemplate{}, &RuleError{Template: s, Reason: err.Error()}
	}
	return u, nil
}

func parseURLTemplate(s string) (URLTemplate, error) {
	if err := checkText(s); err != nil {
		return URLTemplate{}, err
	}
	parts, err := splitPlaceholders(s)
	if err != nil {
		return URLTemplate{}, err
	}
	if err := checkAdjacent(parts); err != nil {
		return URLTemplate{}, err
	}
	if err := checkPlaces(s, parts); err != nil {
		return URLTemplate{}, err
	}
	u, err := parseFilled(parts)
	if err != nil {
		return URLTemplate{}, err
	}
	return newURLTemplate(s, parts, u), nil
}

func newURLTemplate(s string, parts []part, u *url.URL) URLTemplate {
	t := URLTemplate{src: s, parts: parts, host: hostPort(u)}
	for _, p := range parts {
		if p.isField && !slices.Contains(t.fields, p.text) {
			t.fields = append(t.fields, p.text)
		}
	}
	return t
}

// checkAdjacent refuses two placeholders with nothing between them.
func checkAdjacent(parts []part) error {
	for i, p := range parts {
		if p.isField && i > 0 && parts[i-1].isField {
			return fmt.Errorf("placeholders {%s}{%s} need literal text between them", parts[i-1].text, p.text)
		}
	}
	return nil
}

// parseFilled parses the URL with every placeholder replaced by "x" and
// checks its scheme, host, userinfo and fragment.
func parseFilled(parts []part) (*url.URL, error) {
	var b strings.Builder
	for _, p := range parts {
		if p.isField {
			b.WriteString("x")
		} else {
			b.WriteString(p.text)
		}
	}
	u, err := url.Parse(b.String())
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("not a valid URL: %v", err)
	}
	return u, checkURL(u, b.String())
}

func checkURL(u *url.URL, filled string) error {
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must be an absolute http or https URL")
	case u.Opaque != "" || u.Hostname() == "":
		return errors.New(`needs a host, as in "http://host:port/path"`)
	case u.User != nil:
		return errors.New("credentials in the URL are refused: put credentials in headers_from_env")
	case strings.Contains(filled, "#"):
		return errors.New("a fragment '#' is not allowed")
	}
	return nil
}

// checkPlaces allows placeholders only after the host: in the path or in a
// query value. Text without "://" is left to parseFilled, which refuses it
// for want of a host.
func checkPlaces(s string, parts []part) error {
	if !strings.Contains(s, "://") {
		return nil
	}
	var seen strings.Builder
	inQuery, inValue := false, false
	for _, p := range parts {
		if !p.isField {
			seen.WriteString(p.text)
			inQuery, inValue = scanQuery(p.text, inQuery, inValue)
			continue
		}
		if !pastHost(seen.String()) {
			return fmt.Errorf("placeholder {%s} in the scheme, host or port; placeholders may only stand in the path or a query value", p.text)
		}
		if inQuery && !inValue {
			return fmt.Errorf("placeholder {%s} in a query parameter name; placeholders may only stand in the path or a query value", p.text)
		}
	}
	return nil
}

// pastHost reports whether head, the URL text before a placeholder, already
// ends its authority with '/' or '?'.
func pastHost(head string) bool {
	_, rest, ok := strings.Cut(head, "://")
	return ok && strings.ContainsAny(rest, "/?")
}

// scanQuery tracks, through literal text, whether we are in the query and
// within a parameter's value.
func scanQuery(text string, inQuery, inValue bool) (bool, bool) {
	for i := 0; i < len(text); i++ {
		switch {
		case text[i] == '?' && !inQuery:
			inQuery, inValue = true, false
		case text[i] == '&' && inQuery:
			inValue = false
		case text[i] == '=' && inQuery:
			inValue = true
		}
	}
	return inQuery, inValue
}

// hostPort returns the lower-cased host with its port, the scheme's default
// port when none is written.
func hostPort(u *url.URL) string {
	port := u.Port()
	switch {
	case port != "":
	case u.Scheme == "https":
		port = "443"
	default:
		port = "80"
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// String returns the template's source text.
func (u URLTemplate) String() string { return u.src }

// Fields returns the placeholder field paths, each once, in order.
func (u URLTemplate) Fields() []string { return slices.Clone(u.fields) }

// Host returns the URL's host and port, for per-host limits and circuit
// breakers: the host lower-cased, with the scheme's default port (80 or
// 443) when the URL names none, as in "api:8000" or "[::1]:80". It is fixed
// by the template, since placeholders never stand in the host.
func (u URLTemplate) Host() string { return u.host }

// Render fills the placeholders from data. Each value is checked as by
// [Value] (so it never holds the separator, whitespace, a control character
// or a glob metacharacter), and "." and ".." are refused as path traversal.
// The value is then percent-encoded strictly: every byte outside the RFC
// 3986 unreserved set `A-Z a-z 0-9 - . _ ~` becomes %XX, so a value can
// never add a path segment, a query parameter or a fragment. An error wraps
// [ErrRejected] and names the field.
func (u URLTemplate) Render(data map[string]any) (string, error) {
	var b strings.Builder
	for _, p := range u.parts {
		if !p.isField {
			b.WriteString(p.text)
			continue
		}
		s, err := renderField(data, p.text)
		if err != nil {
			return "", err
		}
		if s == "." || s == ".." {
			return "", reject(p.text, fmt.Sprintf("value %q is a relative path segment", s))
		}
		writeEscaped(&b, s)
	}
	return b.String(), nil
}

// writeEscaped writes s with every byte outside the unreserved set
// percent-encoded in upper-case hex.
func writeEscaped(b *strings.Builder, s string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xF])
	}
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
