package events

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// quickSeeds are bodies for parseObjectQuick: those it takes and those it
// leaves to encoding/json, valid or not.
var quickSeeds = []string{
	`{}`, ` {"a":1} `, "\t{\r\n\"a\" : 1 ,\n\"b\":[ ]}\n",
	`{"user_id": "42"}`, `{"n":4.50,"e":-1.5E+3,"z":0,"m":-0,"x":1e5,"y":2E-2}`,
	`{"a":[1,"x",null,true,false,{"b":{}},[[]]]}`, `{"s":"héllo ☃ 😀"}`,
	`{"specversion":"1.0","id":"e1","source":"s","type":"t","time":"2024-05-01T12:30:00Z","data":{"course_id":42}}`,
	// Left to encoding/json.
	`{"a":"x\"y"}`, `{"a":"\u00e9"}`, "{\"a\":\"\xff\"}", "{\"a\":\"\x01\"}", `{"a":1,"a":2}`,
	`{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`, `{"a":1e}`, `{"a":+1}`, `{"a":1,}`, `{"a":[1,]}`,
	`{"a":tru}`, `{"a":truex}`, `{"a":nul}`, `{"a" 1}`, `{a:1}`, `{"a":1} x`, `{"a":1}{}`, `[1]`, `"s"`,
	``, ` `, `{`, `{"a"`, `{"a":`, `{"a":[`, `{"a":"`, "\ufeff{}", `{"a":NaN}`,
	strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40),
	strings.Repeat(`[`, 40) + strings.Repeat(`]`, 40),
}

// slowObject is decodeObject's encoding/json path.
func slowObject(body []byte) (map[string]any, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil, false
	}
	if _, err := dec.Token(); err == nil || err.Error() != "EOF" {
		return nil, false
	}
	m, ok := v.(map[string]any)
	return m, ok
}

// checkQuick fails when parseObjectQuick takes a body and its result is not
// encoding/json's.
func checkQuick(t *testing.T, body []byte) bool {
	t.Helper()
	got, ok := parseObjectQuick(body)
	if !ok {
		return false
	}
	want, wantOK := slowObject(body)
	if !wantOK {
		t.Fatalf("parseObjectQuick took %q, which encoding/json refuses", body)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseObjectQuick(%q) = %#v, encoding/json gives %#v", body, got, want)
	}
	return true
}

func TestParseObjectQuick(t *testing.T) {
	t.Parallel()
	took := 0
	for _, s := range quickSeeds {
		if checkQuick(t, []byte(s)) {
			took++
		}
	}
	if took != 8 {
		t.Errorf("parseObjectQuick took %d of the 8 seeds it should take", took)
	}
}

func FuzzParseObjectQuick(f *testing.F) {
	for _, s := range quickSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkQuick(t, body) })
}
