package cdc

import (
	"maps"
	"slices"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/jackc/pglogrepl"
)

func text(s string) *pglogrepl.TupleDataColumn {
	return &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Data: []byte(s)}
}

var (
	null  = &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeNull}
	toast = &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeToast}
)

func tuple(cols ...*pglogrepl.TupleDataColumn) *pglogrepl.TupleData {
	return &pglogrepl.TupleData{ColumnNum: uint16(len(cols)), Columns: cols}
}

func usersRelation() *relation {
	tables := []cachekeys.CDCTable{{Schema: "public", Name: "users", Entity: "user", Columns: map[string]string{"id": "user_id", "email": "email"}}}
	m := &pglogrepl.RelationMessage{Namespace: "public", RelationName: "users", Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "id"}, {Name: "email"}, {Name: "bio"}, {Name: "tenant"}}}
	return newRelation(m, tables, [][]string{{"id", "tenant"}})
}

func TestRelationData(t *testing.T) {
	r := usersRelation()
	tests := []struct {
		name      string
		row, fill *pglogrepl.TupleData
		want      map[string]any
	}{
		{"key, mapped and unmapped-key columns; bio is neither", tuple(text("7"), text("a@b"), text("long"), text("t1")),
			nil, map[string]any{"user_id": "7", "email": "a@b", "tenant": "t1"}},
		{"NULL is absent", tuple(text("7"), null, null, text("t1")), nil, map[string]any{"user_id": "7", "tenant": "t1"}},
		{"unchanged TOAST is absent", tuple(text("7"), toast, toast, text("t1")), nil, map[string]any{"user_id": "7", "tenant": "t1"}},
		{"unchanged TOAST is taken from the old row", tuple(text("7"), toast, toast, text("t1")),
			tuple(text("7"), text("a@b"), text("long"), text("t1")), map[string]any{"user_id": "7", "email": "a@b", "tenant": "t1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.data(tt.row, tt.fill); !maps.Equal(got, tt.want) {
				t.Errorf("data = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTxUpdateEmitsOldValuesWhenAMappedColumnMoves(t *testing.T) {
	r := usersRelation()
	tx := newTx(&pglogrepl.BeginMessage{FinalLSN: 100}, 10, []cachekeys.CDCTable{*r.table})
	tx.update(r, &pglogrepl.UpdateMessage{OldTupleType: 'O',
		OldTuple: tuple(text("7"), text("old@x"), text("b"), text("t1")), NewTuple: tuple(text("7"), text("new@x"), toast, text("t1"))})
	tx.update(r, &pglogrepl.UpdateMessage{OldTupleType: 'O',
		OldTuple: tuple(text("8"), text("same@x"), text("b"), text("t1")), NewTuple: tuple(text("8"), text("same@x"), text("c"), text("t1"))})
	tx.update(r, &pglogrepl.UpdateMessage{NewTuple: tuple(text("9"), text("n@x"), null, text("t1"))})
	got := tx.events()
	want := []string{"old@x", "new@x", "same@x", "n@x"}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].data["email"] != w || got[i].action != cachekeys.ActionUpdated {
			t.Errorf("event %d = %+v, want an update with email %s", i, got[i], w)
		}
	}
}

func TestTxOverTheCapKeepsOneBulkEvent(t *testing.T) {
	r := usersRelation()
	tx := newTx(&pglogrepl.BeginMessage{FinalLSN: 100}, 3, []cachekeys.CDCTable{*r.table})
	tx.message([]byte(`{"keys": ["user:1"]}`))
	for i := range 10 {
		tx.insert(r, &pglogrepl.InsertMessage{Tuple: tuple(text(string(rune('0'+i))), null, null, null)})
	}
	tx.truncate(r)
	tx.message([]byte(`not json`))
	got := tx.events()
	subjects := make([]string, len(got))
	for i, c := range got {
		subjects[i] = c.subject()
	}
	want := []string{"events.cache.invalidate", "events.user.truncated", "events.cache.invalidate", "events.user.bulk"}
	if !slices.Equal(subjects, want) {
		t.Errorf("events %v, want %v", subjects, want)
	}
	if got[0].data == nil || got[2].raw == nil || string(got[2].raw) != "not json" {
		t.Errorf("messages: a JSON object is data, anything else raw: %+v %+v", got[0], got[2])
	}
	if id := eventID("s", 0x16B3748, 3); id != "cdc:s:0/16B3748:3" {
		t.Errorf("eventID = %q", id)
	}
}
