package events_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/events"
)

const subject = "events.course.updated"

func TestDecode(t *testing.T) {
	t.Parallel()
	when := time.Date(2024, 5, 1, 12, 30, 0, 500_000_000, time.UTC)
	tests := []struct {
		name        string
		givenSubj   string
		givenMsgID  string
		givenBody   string
		want        events.Event
		wantErr     error
		wantErrText string
	}{
		{
			name:      "cloudevent with time",
			givenBody: `{"specversion":"1.0","id":"e1","source":"urn:svc","type":"course.updated","time":"2024-05-01T12:30:00.5Z","datacontenttype":"application/json","data":{"course_id":42,"price":4.50}}`,
			want: events.Event{ID: "e1", Source: "urn:svc", Type: "course.updated", Subject: subject, SpecVersion: "1.0",
				Time: when, Data: map[string]any{"course_id": json.Number("42"), "price": json.Number("4.50")}, CloudEvent: true},
		},
		{
			name:       "cloudevent without time ignores header id",
			givenMsgID: "header-id",
			givenBody:  `{"specversion":"1.0","id":"e2","source":"s","type":"t","data":{}}`,
			want:       events.Event{ID: "e2", Source: "s", Type: "t", Subject: subject, SpecVersion: "1.0", Data: map[string]any{}, CloudEvent: true},
		},
		{
			name:      "cloudevent with extensions and null optionals",
			givenBody: `{"specversion":"1.0","id":"e3","source":"s","type":"t","time":null,"datacontenttype":null,"traceparent":"00-ab","partitionkey":7,"data":{"tags":["a",1],"nested":{"x":null}}}`,
			want: events.Event{ID: "e3", Source: "s", Type: "t", Subject: subject, SpecVersion: "1.0", CloudEvent: true,
				Data: map[string]any{"tags": []any{"a", json.Number("1")}, "nested": map[string]any{"x": nil}}},
		},
		{
			name:      "cloudevent time with offset",
			givenBody: `{"specversion":"1.0","id":"e4","source":"s","type":"t","time":"2024-05-01T14:30:00.5+02:00","data":{}}`,
			want:      events.Event{ID: "e4", Source: "s", Type: "t", Subject: subject, SpecVersion: "1.0", Time: when, Data: map[string]any{}, CloudEvent: true},
		},
		{
			name:       "bare object with msg id",
			givenMsgID: "m1",
			givenBody:  " {\"course_id\": 42, \"price\": 4.50}\n",
			want:       events.Event{ID: "m1", Type: subject, Subject: subject, Data: map[string]any{"course_id": json.Number("42"), "price": json.Number("4.50")}},
		},
		{
			name:      "bare object with SpecVersion key in other case",
			givenBody: `{"SpecVersion":"1.0","id":"x"}`,
			want:      events.Event{ID: "generated", Type: subject, Subject: subject, Data: map[string]any{"SpecVersion": "1.0", "id": "x"}},
		},
		{name: "invalid subject", givenSubj: "events.Course.x", givenBody: `{}`, wantErr: events.ErrInvalidSubject,
			wantErrText: `events: malformed event: invalid subject "events.Course.x": token "Course" must match [a-z0-9_-]+`},
		{name: "empty body", givenBody: ``, wantErrText: "events: malformed event: empty body"},
		{name: "whitespace body", givenBody: " \n", wantErrText: "events: malformed event: empty body"},
		{name: "invalid json", givenBody: `{"a":}`, wantErrText: "invalid JSON"},
		{name: "truncated json", givenBody: `{"a":1`, wantErrText: "invalid JSON"},
		{name: "trailing garbage", givenBody: `{"a":1} x`, wantErrText: "trailing data"},
		{name: "two objects", givenBody: `{"a":1}{"b":2}`, wantErrText: "trailing data"},
		{name: "array", givenBody: `[{"a":1}]`, wantErrText: "body must be a JSON object, got array"},
		{name: "string", givenBody: `"hello"`, wantErrText: "got string"},
		{name: "number", givenBody: `42`, wantErrText: "got number"},
		{name: "boolean", givenBody: `true`, wantErrText: "got boolean"},
		{name: "null", givenBody: `null`, wantErrText: "got null"},
		{name: "too large", givenBody: `{"a":"` + strings.Repeat("x", events.MaxBodySize) + `"}`, wantErrText: "exceeds the limit"},
		{name: "cloudevent without data", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"t"}`,
			wantErrText: "events: malformed event: cloudevent without data"},
		{name: "cloudevent data_base64", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"t","data_base64":"e30="}`, wantErrText: "data_base64 is not supported"},
		{name: "cloudevent data null", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"t","data":null}`, wantErrText: "data must be a JSON object, got null"},
		{name: "cloudevent data array", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"t","data":[1]}`, wantErrText: "got array"},
		{name: "cloudevent data string", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"t","data":"{}"}`, wantErrText: "got string"},
		{name: "unknown specversion", givenBody: `{"specversion":"0.3","id":"e","source":"s","type":"t","data":{}}`, wantErrText: `unsupported cloudevent specversion "0.3"`},
		{name: "specversion number", givenBody: `{"specversion":1.0,"id":"e","source":"s","type":"t","data":{}}`, wantErrText: "specversion must be a string, got number"},
		{name: "specversion null", givenBody: `{"specversion":null,"id":"e","source":"s","type":"t","data":{}}`, wantErrText: "cloudevent without specversion"},
		{name: "missing id", givenBody: `{"specversion":"1.0","source":"s","type":"t","data":{}}`, wantErrText: "cloudevent without id"},
		{name: "empty id", givenBody: `{"specversion":"1.0","id":"","source":"s","type":"t","data":{}}`, wantErrText: "cloudevent without id"},
		{name: "number id", givenBody: `{"specversion":"1.0","id":7,"source":"s","type":"t","data":{}}`, wantErrText: "cloudevent id must be a string, got number"},
		{name: "missing source", givenBody: `{"specversion":"1.0","id":"e","type":"t","data":{}}`, wantErrText: "cloudevent without source"},
		{name: "object source", givenBody: `{"specversion":"1.0","id":"e","source":{},"type":"t","data":{}}`, wantErrText: "source must be a string, got object"},
		{name: "missing type", givenBody: `{"specversion":"1.0","id":"e","source":"s","data":{}}`, wantErrText: "cloudevent without type"},
		{name: "empty type", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"","data":{}}`, wantErrText: "cloudevent without type"},
		{name: "bad time", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"t","time":"yesterday","data":{}}`, wantErrText: "time is not RFC 3339"},
		{name: "empty time", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"t","time":"","data":{}}`, wantErrText: "time is not RFC 3339"},
		{name: "time without zone", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"t","time":"2024-05-01T12:30:00","data":{}}`, wantErrText: "time is not RFC 3339"},
		{name: "number time", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"t","time":1714566600,"data":{}}`, wantErrText: "time must be a string"},
		{name: "bool datacontenttype", givenBody: `{"specversion":"1.0","id":"e","source":"s","type":"t","datacontenttype":true,"data":{}}`, wantErrText: "datacontenttype must be a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			subj := tt.givenSubj
			if subj == "" {
				subj = subject
			}
			got, err := events.Decode(subj, tt.givenMsgID, []byte(tt.givenBody))
			if tt.wantErrText != "" {
				checkDecodeErr(t, err, tt.wantErr, tt.wantErrText)
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if tt.want.ID == "generated" && got.ID != "" {
				tt.want.ID = got.ID
			}
			assertEventEqual(t, got, tt.want)
		})
	}
}

func checkDecodeErr(t *testing.T, err, wantErr error, wantText string) {
	t.Helper()
	if !errors.Is(err, events.ErrMalformed) {
		t.Fatalf("error = %v, want ErrMalformed", err)
	}
	if wantErr != nil && !errors.Is(err, wantErr) {
		t.Fatalf("error = %v, want %v", err, wantErr)
	}
	if !strings.Contains(err.Error(), wantText) {
		t.Errorf("error = %q, want it to contain %q", err, wantText)
	}
}

func TestDecodeGeneratesDistinctIDs(t *testing.T) {
	t.Parallel()
	a, errA := events.Decode(subject, "", []byte(`{}`))
	b, errB := events.Decode(subject, "", []byte(`{}`))
	if err := errors.Join(errA, errB); err != nil {
		t.Fatal(err)
	}
	if a.ID == "" || a.ID == b.ID {
		t.Errorf("generated IDs %q and %q, want distinct and non-empty", a.ID, b.ID)
	}
}

func TestDecodeAcceptsMaxBodySize(t *testing.T) {
	t.Parallel()
	pad := events.MaxBodySize - len(`{"a":""}`)
	body := `{"a":"` + strings.Repeat("x", pad) + `"}`
	if _, err := events.Decode(subject, "m", []byte(body)); err != nil {
		t.Fatalf("Decode of exactly %d bytes: %v", len(body), err)
	}
}

func TestEncode(t *testing.T) {
	t.Parallel()
	when := time.Date(2024, 5, 1, 12, 30, 0, 0, time.UTC)
	tests := []struct {
		name    string
		given   events.Event
		want    string
		wantErr error
	}{
		{
			name:  "full",
			given: events.Event{ID: "e1", Source: "s", Type: "t", Time: when, Data: map[string]any{"n": json.Number("4.50")}},
			want:  `{"specversion":"1.0","id":"e1","source":"s","type":"t","time":"2024-05-01T12:30:00Z","datacontenttype":"application/json","data":{"n":4.50}}`,
		},
		{
			name:  "no time nil data",
			given: events.Event{ID: "e1", Source: "s", Type: "t", SpecVersion: "1.0"},
			want:  `{"specversion":"1.0","id":"e1","source":"s","type":"t","datacontenttype":"application/json","data":{}}`,
		},
		{name: "missing id", given: events.Event{Source: "s", Type: "t"}, wantErr: events.ErrMalformed},
		{name: "missing source", given: events.Event{ID: "e", Type: "t"}, wantErr: events.ErrMalformed},
		{name: "missing type", given: events.Event{ID: "e", Source: "s"}, wantErr: events.ErrMalformed},
		{name: "bad specversion", given: events.Event{ID: "e", Source: "s", Type: "t", SpecVersion: "0.3"}, wantErr: events.ErrMalformed},
		{name: "unmarshalable data", given: events.Event{ID: "e", Source: "s", Type: "t", Data: map[string]any{"c": make(chan int)}}, wantErr: events.ErrMalformed},
		{name: "time out of range", given: events.Event{ID: "e", Source: "s", Type: "t", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, wantErr: events.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := events.Encode(tt.given)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Encode error = %v, want %v", err, tt.wantErr)
			}
			if string(got) != tt.want {
				t.Errorf("Encode =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	t.Parallel()
	ev := events.NewEvent(subject, map[string]any{"course_id": json.Number("42"), "tags": []any{"a"}})
	ev.Source = "urn:test"
	body, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(subject, "", body)
	if err != nil {
		t.Fatal(err)
	}
	assertEventEqual(t, got, ev)
}

// assertEventEqual compares events, times by instant.
func assertEventEqual(t *testing.T, got, want events.Event) {
	t.Helper()
	if !got.Time.Equal(want.Time) {
		t.Errorf("Time = %v, want %v", got.Time, want.Time)
	}
	got.Time, want.Time = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event =\n%#v\nwant\n%#v", got, want)
	}
}
