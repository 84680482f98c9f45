package cdc

import (
	"math"
	"testing"
	"time"

	"github.com/invalidator/invalidator/events"
	"github.com/jackc/pglogrepl"
)

// rowMessage writes what events.Encode writes, byte for byte, and the
// headers events.Publisher sets.
func TestEncodeMatchesEvents(t *testing.T) {
	at := time.Date(2026, 12, 6, 11, 58, 3, 123456000, time.UTC)
	for _, data := range []map[string]any{
		{},
		{"course_id": "42"},
		{"user_id": "7", "email": "a@b.example", "name": "Zoë <x> & \"y\" \\ \t\n\r\b\f\x01 \u2028\u2029 \xff end"},
	} {
		want, err := events.Encode(events.Event{ID: "cdc:s:0/16B3748:3", Source: "urn:invalidator:cdc:7/db/s", Type: "events.user.updated",
			SpecVersion: events.SpecVersion, Time: at, Data: data})
		if err != nil {
			t.Fatal(err)
		}
		m, ok := rowMessage("events.user.updated", "cdc:s:0/16B3748:3", "urn:invalidator:cdc:7/db/s", at, data)
		if !ok {
			t.Fatal("rowMessage refused string data")
		}
		if string(m.Data) != string(want) {
			t.Errorf("rowMessage wrote\n%s\nevents.Encode writes\n%s", m.Data, want)
		}
		if m.Header.Get(events.HeaderMsgID) != "cdc:s:0/16B3748:3" || m.Header.Get("Content-Type") != events.ContentType {
			t.Errorf("headers = %v", m.Header)
		}
	}
	if _, ok := rowMessage("events.cache.invalidate", "x", "y", at, map[string]any{"keys": []any{"a"}}); ok {
		t.Error("rowMessage took data that is not all strings")
	}
}

func FuzzEncodeMatchesEvents(f *testing.F) {
	f.Add("course_id", "42")
	f.Add("k\x00", "<\xff\u2028>")
	f.Fuzz(func(t *testing.T, k, v string) {
		data := map[string]any{k: v, "id": v + k}
		want, err := events.Encode(events.Event{ID: "i", Source: "s", Type: "t", Data: data})
		if err != nil {
			t.Skip()
		}
		m, _ := rowMessage("t", "i", "s", time.Time{}, data)
		if string(m.Data) != string(want) {
			t.Errorf("rowMessage %s, events.Encode %s", m.Data, want)
		}
	})
}

func TestEventIDFormatsTheLSNAsPglogrepl(t *testing.T) {
	for _, lsn := range []pglogrepl.LSN{0, 1, 0x16B3748, 0xABCDEF0012345678, math.MaxUint64} {
		if got, want := eventID("slot", lsn, 12), "cdc:slot:"+lsn.String()+":12"; got != want {
			t.Errorf("eventID(%v) = %q, want %q", uint64(lsn), got, want)
		}
	}
}
