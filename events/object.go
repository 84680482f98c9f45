package events

import (
	"encoding/json"
	"unicode/utf8"
)

// maxQuickDepth is the deepest nesting parseObjectQuick takes on; deeper
// bodies go to encoding/json.
const maxQuickDepth = 32

// parseObjectQuick parses the common body at a fraction of encoding/json's
// cost: one JSON object whose strings hold no escape sequence, no control
// character and only valid UTF-8, with no key twice in one object. Its
// result is then exactly encoding/json's with UseNumber (objects as
// map[string]any, arrays as []any, numbers as json.Number). Any other body,
// valid or not, gives ok false and is left to encoding/json, which also
// words every error.
func parseObjectQuick(body []byte) (obj map[string]any, ok bool) {
	p := quickParser{b: body}
	p.space()
	if !p.peek('{') {
		return nil, false
	}
	obj, ok = p.object()
	p.space()
	return obj, ok && p.i == len(p.b)
}

// quickParser is the state of parseObjectQuick: the body and the offset
// of the next byte.
type quickParser struct {
	b     []byte
	i     int
	depth int
}

func (p *quickParser) peek(c byte) bool { return p.i < len(p.b) && p.b[p.i] == c }

// space skips JSON whitespace.
func (p *quickParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *quickParser) value() (any, bool) {
	if p.i >= len(p.b) {
		return nil, false
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		return p.string()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	case c == '-' || isDigit(c):
		return p.number()
	}
	return nil, false
}

// object parses an object at '{'.
func (p *quickParser) object() (map[string]any, bool) {
	if p.depth++; p.depth > maxQuickDepth {
		return nil, false
	}
	p.i++
	m := make(map[string]any)
	p.space()
	if p.peek('}') {
		p.i++
		p.depth--
		return m, true
	}
	for {
		p.space()
		if !p.peek('"') {
			return nil, false
		}
		k, ok := p.string()
		if _, dup := m[k]; !ok || dup {
			return nil, false
		}
		p.space()
		if !p.peek(':') {
			return nil, false
		}
		p.i++
		p.space()
		v, ok := p.value()
		if !ok {
			return nil, false
		}
		m[k] = v
		if !p.next('}') {
			return nil, false
		}
		if p.b[p.i-1] == '}' {
			p.depth--
			return m, true
		}
	}
}

// array parses an array at '['.
func (p *quickParser) array() ([]any, bool) {
	if p.depth++; p.depth > maxQuickDepth {
		return nil, false
	}
	p.i++
	a := []any{}
	p.space()
	if p.peek(']') {
		p.i++
		p.depth--
		return a, true
	}
	for {
		p.space()
		v, ok := p.value()
		if !ok {
			return nil, false
		}
		a = append(a, v)
		if !p.next(']') {
			return nil, false
		}
		if p.b[p.i-1] == ']' {
			p.depth--
			return a, true
		}
	}
}

// next skips whitespace and then a ',' or the closing byte end, reporting
// whether it found one of them.
func (p *quickParser) next(end byte) bool {
	p.space()
	if p.i < len(p.b) && (p.b[p.i] == ',' || p.b[p.i] == end) {
		p.i++
		return true
	}
	return false
}

// string parses a string at '"' that holds no escape sequence, no control
// character and only valid UTF-8: encoding/json returns such a string
// unchanged.
func (p *quickParser) string() (string, bool) {
	p.i++
	start, ascii := p.i, true
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !ascii && !utf8.Valid(s) {
				return "", false
			}
			return string(s), true
		case c == '\\' || c < ' ':
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

func (p *quickParser) literal(word string) bool {
	if len(p.b)-p.i < len(word) || string(p.b[p.i:p.i+len(word)]) != word {
		return false
	}
	p.i += len(word)
	return true
}

// number parses a number as the JSON grammar has it, as its text.
func (p *quickParser) number() (any, bool) {
	start := p.i
	if p.peek('-') {
		p.i++
	}
	switch {
	case p.peek('0'):
		p.i++
	case p.i < len(p.b) && isDigit(p.b[p.i]):
		p.digits()
	default:
		return nil, false
	}
	if p.peek('.') {
		p.i++
		if !p.digits() {
			return nil, false
		}
	}
	if p.peek('e') || p.peek('E') {
		p.i++
		if p.peek('+') || p.peek('-') {
			p.i++
		}
		if !p.digits() {
			return nil, false
		}
	}
	return json.Number(p.b[start:p.i]), true
}

// digits skips one or more digits, reporting whether there was one.
func (p *quickParser) digits() bool {
	start := p.i
	for p.i < len(p.b) && isDigit(p.b[p.i]) {
		p.i++
	}
	return p.i > start
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
