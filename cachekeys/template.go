package cachekeys

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Template is a parsed key template such as "cache:course_analytics:{course_id}:*".
// Placeholders `{path}` are filled from an event's data by [Template.Render];
// the rest is literal text that may hold Redis glob metacharacters. The zero
// Template is empty and renders nothing useful; get one from [ParseTemplate].
type Template struct {
	src     string
	parts   []part
	fields  []string
	pattern bool
}

// part is either literal text or a placeholder's field path.
type part struct {
	text    string
	isField bool
}

// ParseTemplate parses and checks a key template. The error is a
// [*RuleError] wrapping [ErrInvalidRules] with the reason. A template:
//
//   - starts with at least one literal character and the [Separator] before
//     any glob metacharacter or placeholder ("cache:{id}", not "{id}" or "c*:x");
//   - writes placeholders as `{path}`, path being segments of [A-Za-z0-9_-]
//     joined by dots, with something between two placeholders;
//   - never mixes a placeholder and a glob metacharacter in one key segment,
//     so "cache:{id}*" is refused: it would let course 42 match course 420;
//   - closes every glob class `[...]`, and holds no backslash, whitespace
//     or control character.
func ParseTemplate(s string) (Template, error) {
	t, err := parseTemplate(s)
	if err != nil {
		return Template{}, &RuleError{Template: s, Reason: err.Error()}
	}
	return t, nil
}

func parseTemplate(s string) (Template, error) {
	if err := checkText(s); err != nil {
		return Template{}, err
	}
	parts, err := splitPlaceholders(s)
	if err != nil {
		return Template{}, err
	}
	if err := checkPrefix(s, globMeta+"{"); err != nil {
		return Template{}, err
	}
	if err := checkParts(parts); err != nil {
		return Template{}, err
	}
	if err := checkSegments(s); err != nil {
		return Template{}, err
	}
	return newTemplate(s, parts), nil
}

func newTemplate(s string, parts []part) Template {
	t := Template{src: s, parts: parts}
	for _, p := range parts {
		switch {
		case p.isField && !slices.Contains(t.fields, p.text):
			t.fields = append(t.fields, p.text)
		case !p.isField && strings.ContainsAny(p.text, "*?["):
			t.pattern = true
		}
	}
	return t
}

// checkText refuses empty text, invalid UTF-8, backslashes, whitespace and
// control characters.
func checkText(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case strings.Contains(s, `\`):
		return errors.New("backslash not allowed (no escapes)")
	}
	if i := strings.IndexFunc(s, isSpaceOrControl); i >= 0 {
		c, _ := utf8.DecodeRuneInString(s[i:])
		return fmt.Errorf("whitespace or control character %q not allowed", c)
	}
	return nil
}

// splitPlaceholders cuts s into literal and placeholder parts.
func splitPlaceholders(s string) ([]part, error) {
	var parts []part
	for s != "" {
		open := strings.IndexAny(s, "{}")
		if open < 0 {
			return append(parts, part{text: s}), nil
		}
		if s[open] == '}' {
			return nil, errors.New("unbalanced '}'")
		}
		if open > 0 {
			parts = append(parts, part{text: s[:open]})
		}
		p, n, err := cutPlaceholder(s[open:])
		if err != nil {
			return nil, err
		}
		parts, s = append(parts, p), s[open+n:]
	}
	return parts, nil
}

// cutPlaceholder parses the placeholder at the start of s (which starts
// with `{`) and returns it with its length.
func cutPlaceholder(s string) (part, int, error) {
	end := strings.IndexAny(s[1:], "{}")
	switch {
	case end < 0:
		return part{}, 0, errors.New("unbalanced '{'")
	case s[1+end] == '{':
		return part{}, 0, errors.New("nested '{'")
	}
	path := s[1 : 1+end]
	if err := checkPath(path); err != nil {
		return part{}, 0, err
	}
	return part{text: path, isField: true}, end + 2, nil
}

// checkPath requires segments of [A-Za-z0-9_-] joined by dots.
func checkPath(path string) error {
	if path == "" {
		return errors.New("empty placeholder '{}'")
	}
	for seg := range strings.SplitSeq(path, ".") {
		if seg == "" || strings.IndexFunc(seg, notPathChar) >= 0 {
			return fmt.Errorf("placeholder {%s}: field path must be segments of [A-Za-z0-9_-] joined by '.'", path)
		}
	}
	return nil
}

func notPathChar(c rune) bool {
	return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-')
}

// checkParts refuses adjacent placeholders and unbalanced glob classes.
func checkParts(parts []part) error {
	for i, p := range parts {
		if p.isField && i > 0 && parts[i-1].isField {
			return fmt.Errorf("placeholders {%s}{%s} need literal text between them", parts[i-1].text, p.text)
		}
		if !p.isField {
			if err := checkClasses(p.text); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkSegments refuses a key segment holding both a placeholder and a glob
// metacharacter: "cache:{id}*" would match course 420 for course 42.
func checkSegments(s string) error {
	for seg := range strings.SplitSeq(s, Separator) {
		if strings.Contains(seg, "{") && strings.ContainsAny(seg, globMeta) {
			return fmt.Errorf("segment %q mixes a placeholder with a glob metacharacter; a placeholder must fill its segment between separators %q", seg, Separator)
		}
	}
	return nil
}

// String returns the template's source text.
func (t Template) String() string { return t.src }

// IsPattern reports whether the template holds a glob metacharacter of its
// own, so its keys must be found with SCAN MATCH; otherwise it renders one
// exact key for UNLINK. Placeholder values never add metacharacters.
func (t Template) IsPattern() bool { return t.pattern }

// Fields returns the placeholder field paths, each once, in order.
func (t Template) Fields() []string { return slices.Clone(t.fields) }

// Render fills the placeholders from data. Dotted paths walk nested
// objects: {course.id} reads data["course"]["id"]. Each value goes through
// [Value]; an error wraps [ErrRejected] and names the field.
func (t Template) Render(data map[string]any) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if !p.isField {
			b.WriteString(p.text)
			continue
		}
		s, err := renderField(data, p.text)
		if err != nil {
			return "", err
		}
		b.WriteString(s)
	}
	return b.String(), nil
}

func renderField(data map[string]any, path string) (string, error) {
	v, reason := lookup(data, path)
	var s string
	if reason == "" {
		s, reason = formatValue(v)
	}
	if reason != "" {
		return "", reject(path, reason)
	}
	return s, nil
}
