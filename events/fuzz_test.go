package events_test

import (
	"testing"

	"github.com/invalidator/invalidator/events"
)

func FuzzDecode(f *testing.F) {
	seeds := []string{
		`{"specversion":"1.0","id":"e1","source":"s","type":"t","time":"2024-05-01T12:30:00.5+02:00","data":{"n":4.50,"a":[1,"x",null,true]}}`,
		`{"specversion":"1.0","id":"e","source":"s","type":"t","data_base64":"e30="}`,
		`{"specversion":"0.3","id":"e","source":"s","type":"t","data":{}}`,
		`{"course_id":42}`,
		`{"a":1} x`,
		`[1]`, `null`, `"s"`, ``, `{`,
	}
	for _, s := range seeds {
		f.Add(subject, "m1", []byte(s))
	}
	f.Add("events.Course.x", "", []byte(`{}`))
	f.Fuzz(func(t *testing.T, subj, msgID string, body []byte) {
		ev, err := events.Decode(subj, msgID, body)
		if err != nil {
			return
		}
		if ev.Data == nil || ev.ID == "" {
			t.Fatalf("Decode succeeded with Data %v and ID %q", ev.Data, ev.ID)
		}
		if !ev.CloudEvent {
			return
		}
		again, err := events.Encode(ev)
		if err != nil {
			t.Fatalf("Encode of decoded event: %v", err)
		}
		got, err := events.Decode(subj, msgID, again)
		if err != nil {
			t.Fatalf("Decode(Encode(ev)): %v\n%s", err, again)
		}
		assertEventEqual(t, got, ev)
	})
}
