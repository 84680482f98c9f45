package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/invalidator/invalidator/events"
)

// schemaSet validates JSON values against the JSON Schemas under
// testdata/schema, with the subset of the 2020-12 keywords they use: $ref
// (to #/$defs/... or a sibling file), type, const, required, properties,
// items, minItems, minLength, maxLength, pattern, oneOf, anyOf, allOf,
// not. format is an annotation (the pattern next to it checks RFC 3339).
type schemaSet map[string]map[string]any

func loadSchemas(t *testing.T) schemaSet {
	t.Helper()
	files, err := filepath.Glob("../testdata/schema/*.schema.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no schemas: %v", err)
	}
	set := schemaSet{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var s map[string]any
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		set[filepath.Base(f)] = s
	}
	return set
}

// validate returns nil if v is valid against the schema in file.
func (set schemaSet) validate(file string, v any) error {
	return set.check(file, set[file], v, "")
}

func (set schemaSet) check(file string, s map[string]any, v any, at string) error {
	if ref, ok := s["$ref"].(string); ok {
		f, ptr, _ := strings.Cut(ref, "#")
		if f == "" {
			f = file
		}
		target := set[f]
		for _, p := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
			if p != "" {
				target, _ = target[p].(map[string]any)
			}
		}
		if target == nil {
			return fmt.Errorf("%s: unresolved $ref %q", at, ref)
		}
		if err := set.check(f, target, v, at); err != nil {
			return err
		}
	}
	checks := []func() error{
		func() error { return checkType(s, v, at) },
		func() error {
			if c, ok := s["const"]; ok && !jsonEqual(c, v) {
				return fmt.Errorf("%s: %v is not %v", at, v, c)
			}
			return nil
		},
		func() error { return set.checkObject(file, s, v, at) },
		func() error { return set.checkArray(file, s, v, at) },
		func() error { return checkString(s, v, at) },
		func() error { return set.checkCombinators(file, s, v, at) },
	}
	for _, c := range checks {
		if err := c(); err != nil {
			return err
		}
	}
	return nil
}

func checkType(s map[string]any, v any, at string) error {
	var types []any
	switch t := s["type"].(type) {
	case nil:
		return nil
	case string:
		types = []any{t}
	case []any:
		types = t
	}
	for _, t := range types {
		if typeOf(v) == t || t == "number" && typeOf(v) == "integer" {
			return nil
		}
	}
	return fmt.Errorf("%s: a %s, want %v", at, typeOf(v), s["type"])
}

func typeOf(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case float64:
		if x == float64(int64(x)) {
			return "integer"
		}
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func (set schemaSet) checkObject(file string, s map[string]any, v any, at string) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	for _, r := range asSlice(s["required"]) {
		if _, ok := obj[r.(string)]; !ok {
			return fmt.Errorf("%s: %q is required", at, r)
		}
	}
	props, _ := s["properties"].(map[string]any)
	for name, ps := range props {
		if pv, ok := obj[name]; ok {
			if err := set.check(file, ps.(map[string]any), pv, at+"/"+name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (set schemaSet) checkArray(file string, s map[string]any, v any, at string) error {
	arr, ok := v.([]any)
	if !ok {
		return nil
	}
	if m, ok := s["minItems"].(float64); ok && float64(len(arr)) < m {
		return fmt.Errorf("%s: %d items, want at least %v", at, len(arr), m)
	}
	if is, ok := s["items"].(map[string]any); ok {
		for i, e := range arr {
			if err := set.check(file, is, e, fmt.Sprintf("%s/%d", at, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkString(s map[string]any, v any, at string) error {
	str, ok := v.(string)
	if !ok {
		return nil
	}
	n := float64(utf8.RuneCountInString(str))
	if m, ok := s["minLength"].(float64); ok && n < m {
		return fmt.Errorf("%s: %q is shorter than %v", at, str, m)
	}
	if m, ok := s["maxLength"].(float64); ok && n > m {
		return fmt.Errorf("%s: longer than %v", at, m)
	}
	if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(str) {
		return fmt.Errorf("%s: %q does not match %s", at, str, p)
	}
	return nil
}

func (set schemaSet) checkCombinators(file string, s map[string]any, v any, at string) error {
	count := func(key string) (int, int, error) {
		list := asSlice(s[key])
		valid := 0
		var first error
		for _, sub := range list {
			if err := set.check(file, sub.(map[string]any), v, at); err == nil {
				valid++
			} else if first == nil {
				first = err
			}
		}
		return valid, len(list), first
	}
	if valid, n, err := count("allOf"); valid != n {
		return err
	}
	if valid, n, err := count("anyOf"); n > 0 && valid == 0 {
		return fmt.Errorf("%s: no schema of anyOf matches: %w", at, err)
	}
	if valid, n, err := count("oneOf"); n > 0 && valid != 1 {
		return fmt.Errorf("%s: %d schemas of oneOf match, want 1 (%v)", at, valid, err)
	}
	if not, ok := s["not"].(map[string]any); ok && set.check(file, not, v, at) == nil {
		return fmt.Errorf("%s: matches a schema it must not", at)
	}
	return nil
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// TestSchemasAgreeWithDecode: the event schema accepts exactly what
// events.Decode accepts, on a table of bodies.
func TestSchemasAgreeWithDecode(t *testing.T) {
	t.Parallel()
	set := loadSchemas(t)
	for _, body := range []string{
		`{"course_id": "42"}`,
		`{}`,
		`{"specversion":"1.0","id":"1","source":"urn:s","type":"t","data":{}}`,
		`{"specversion":"1.0","id":"1","source":"urn:s","type":"t","time":"2026-11-25T10:00:00Z","data":{"a":1},"ext":true}`,
		`{"specversion":"1.0","id":"1","source":"urn:s","type":"t","time":null,"datacontenttype":null,"data":{}}`,
		`{"specversion":"1.0","id":"1","source":"urn:s","type":"t","time":"yesterday","data":{}}`,
		`{"specversion":"0.3","id":"1","source":"urn:s","type":"t","data":{}}`,
		`{"specversion":"1.0","id":"","source":"urn:s","type":"t","data":{}}`,
		`{"specversion":"1.0","source":"urn:s","type":"t","data":{}}`,
		`{"specversion":"1.0","id":"1","source":"urn:s","type":"t"}`,
		`{"specversion":"1.0","id":"1","source":"urn:s","type":"t","data":[1]}`,
		`{"specversion":"1.0","id":"1","source":"urn:s","type":"t","data":{},"data_base64":"eA=="}`,
		`{"specversion":null,"id":"1","source":"urn:s","type":"t","data":{}}`,
		`[1]`, `"x"`, `null`,
	} {
		var v any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		_, decodeErr := events.Decode("events.course.updated", "", []byte(body))
		schemaErr := set.validate("event.schema.json", v)
		if (decodeErr == nil) != (schemaErr == nil) {
			t.Errorf("%s: Decode error %v, schema error %v", body, decodeErr, schemaErr)
		}
	}
	for body, valid := range map[string]bool{
		`{"keys":["user:123"],"patterns":["user:123:*"]}`: true,
		`{"patterns":["user:*"]}`:                         true,
		`{"keys":[],"patterns":null}`:                     false,
		`{"keys":[1]}`:                                    false,
		`{"keys":"user:1"}`:                               false,
		`{"specversion":"1.0","id":"1","source":"urn:s","type":"events.cache.invalidate","data":{"keys":["user:1"]}}`: true,
		`{"specversion":"1.0","id":"1","source":"urn:s","type":"events.cache.invalidate","data":{}}`:                  false,
	} {
		var v any
		_ = json.Unmarshal([]byte(body), &v)
		if err := set.validate("cache-invalidate.schema.json", v); (err == nil) != valid {
			t.Errorf("%s: cache-invalidate schema error %v, want valid %v", body, err, valid)
		}
	}
}

// TestReadmeEventExamples validates the README's JSON examples of events:
// every json block of "The event contract" against event.schema.json, and
// those of "For services: the cache package" against
// cache-invalidate.schema.json (and the event schema).
func TestReadmeEventExamples(t *testing.T) {
	t.Parallel()
	set := loadSchemas(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for section, schemas := range map[string][]string{
		"## The event contract":              {"event.schema.json"},
		"## For services: the cache package": {"event.schema.json", "cache-invalidate.schema.json"},
	} {
		blocks := jsonBlocks(string(readme), section)
		if len(blocks) == 0 {
			t.Errorf("no json block in %q", section)
		}
		for _, b := range blocks {
			var v any
			if err := json.Unmarshal([]byte(b), &v); err != nil {
				t.Errorf("%s: invalid JSON %s: %v", section, b, err)
				continue
			}
			for _, s := range schemas {
				if err := set.validate(s, v); err != nil {
					t.Errorf("%s: %s does not match %s: %v", section, b, s, err)
				}
			}
		}
	}
}

// jsonBlocks returns the ```json blocks of the README section that starts
// with heading (up to the next heading of its level).
func jsonBlocks(readme, heading string) []string {
	_, rest, ok := strings.Cut(readme, "\n"+heading+"\n")
	if !ok {
		return nil
	}
	level := heading[:strings.Index(heading, " ")+1]
	if i := strings.Index(rest, "\n"+level); i >= 0 {
		rest = rest[:i]
	}
	var out []string
	for {
		_, after, ok := strings.Cut(rest, "```json\n")
		if !ok {
			return out
		}
		block, tail, _ := strings.Cut(after, "```")
		out = append(out, block)
		rest = tail
	}
}
