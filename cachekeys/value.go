package cachekeys

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxValueLen is the longest placeholder value accepted, in bytes.
const MaxValueLen = 256

// Value formats one placeholder value for a key, or refuses it with an error
// wrapping [ErrRejected].
//
// Accepted are strings, [json.Number] (as written, so "4.50" stays "4.50"),
// every int and uint kind, and finite float32/float64 (shortest decimal
// form). Refused are nil, booleans, objects, arrays, other types, and any
// text that is empty, longer than [MaxValueLen] bytes, not valid UTF-8, or
// that holds whitespace, a control character, the [Separator] or a glob
// metacharacter (`* ? [ ] \`). So a value can never widen a pattern.
func Value(v any) (string, error) {
	s, reason := formatValue(v)
	if reason != "" {
		return "", reject("", reason)
	}
	return s, nil
}

// formatValue returns the formatted value, or a non-empty reason to refuse it.
func formatValue(v any) (s, reason string) {
	s, reason = toText(v)
	if reason != "" {
		return "", reason
	}
	if reason = checkValueText(s); reason != "" {
		return "", reason
	}
	return s, ""
}

func toText(v any) (string, string) {
	switch v := v.(type) {
	case string:
		return v, ""
	case json.Number:
		return string(v), ""
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(v), ""
	case float64:
		return formatFloat(v, 64)
	case float32:
		return formatFloat(float64(v), 32)
	case nil:
		return "", "value is null"
	case bool:
		return "", "value is a boolean"
	case map[string]any:
		return "", "value is an object"
	case []any:
		return "", "value is an array"
	default:
		return "", fmt.Sprintf("value of type %T is not supported", v)
	}
}

func formatFloat(f float64, bits int) (string, string) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", "value is not a finite number"
	}
	return strconv.FormatFloat(f, 'f', -1, bits), ""
}

func checkValueText(s string) string {
	switch {
	case s == "":
		return "value is empty"
	case len(s) > MaxValueLen:
		return fmt.Sprintf("value is %d bytes, longer than %d", len(s), MaxValueLen)
	case !utf8.ValidString(s):
		return "value is not valid UTF-8"
	}
	for _, c := range s {
		if reason := checkValueRune(c); reason != "" {
			return reason
		}
	}
	return ""
}

func checkValueRune(c rune) string {
	switch {
	case unicode.IsSpace(c):
		return fmt.Sprintf("value holds whitespace %q", c)
	case unicode.IsControl(c):
		return fmt.Sprintf("value holds control character %q", c)
	case string(c) == Separator:
		return fmt.Sprintf("value holds the separator %q", Separator)
	case strings.ContainsRune(globMeta, c):
		return fmt.Sprintf("value holds glob metacharacter %q", c)
	}
	return ""
}

// lookup follows a dotted path ("course.id") through nested objects.
func lookup(data map[string]any, path string) (any, string) {
	var cur any = data
	for seg := range strings.SplitSeq(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, "parent of " + strconv.Quote(seg) + " is not an object"
		}
		if cur, ok = obj[seg]; !ok {
			return nil, "value is missing"
		}
	}
	return cur, ""
}
