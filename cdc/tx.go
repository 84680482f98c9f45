package cdc

import (
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/jackc/pglogrepl"
)

// relation is what a Relation message said of a table, joined with its
// mapping: which columns an event carries, and under which field.
type relation struct {
	table *cachekeys.CDCTable // nil when the table is not mapped
	index int                 // the table's index in Config.Tables
	// fields[i] is the event field of column i, or "" when the column is
	// neither a key nor mapped.
	fields []string
}

// newRelation maps a Relation message through the tables and their key
// columns (keys[i] for tables[i]).
func newRelation(m *pglogrepl.RelationMessage, tables []cachekeys.CDCTable, keys [][]string) *relation {
	r := &relation{index: -1}
	for i := range tables {
		if tables[i].Schema == m.Namespace && tables[i].Name == m.RelationName {
			r.table, r.index = &tables[i], i
		}
	}
	if r.table == nil {
		return r
	}
	r.fields = make([]string, len(m.Columns))
	for i, c := range m.Columns {
		_, mapped := r.table.Columns[c.Name]
		if mapped || slices.Contains(keys[r.index], c.Name) {
			r.fields[i] = r.table.Field(c.Name)
		}
	}
	return r
}

// data returns the event data of a tuple: the key and mapped columns as
// strings; NULL and unchanged TOAST values are absent, unless fill (the
// old tuple) holds the value the new tuple left unchanged.
func (r *relation) data(t, fill *pglogrepl.TupleData) map[string]any {
	d := make(map[string]any, 2)
	if t == nil {
		return d
	}
	for i, col := range t.Columns {
		if i >= len(r.fields) || r.fields[i] == "" {
			continue
		}
		switch {
		case col.DataType == pglogrepl.TupleDataTypeText:
			d[r.fields[i]] = string(col.Data)
		case col.DataType == pglogrepl.TupleDataTypeToast && fill != nil && i < len(fill.Columns) &&
			fill.Columns[i].DataType == pglogrepl.TupleDataTypeText:
			d[r.fields[i]] = string(fill.Columns[i].Data)
		}
	}
	return d
}

// change is one event of a transaction, before it has an id.
type change struct {
	table  int    // index in Config.Tables; -1 for a logical message
	entity string // events.<entity>.<action>
	action string
	data   map[string]any // nil for bulk and truncated
	raw    []byte         // a logical message whose body is not a JSON object
}

func (c change) subject() string { return cachekeys.SubjectPrefix + "." + c.entity + "." + c.action }

// rowChange reports whether c came from a row (and so counts towards the
// per-table cap).
func (c change) rowChange() bool {
	return c.action == cachekeys.ActionCreated || c.action == cachekeys.ActionUpdated || c.action == cachekeys.ActionDeleted
}

// tx buffers the events of one transaction until its commit. A table
// with more than max row events in it keeps none of them: they become one
// bulk event, so memory stays bounded whatever the transaction's size.
type tx struct {
	xid        uint32 // BEGIN's transaction id, to tell when it is visible
	commitLSN  pglogrepl.LSN
	commitTime time.Time
	max        int
	changes    []change
	counts     map[int]int
	bulk       []int // tables over the cap, in the order they went over
	tables     []cachekeys.CDCTable
}

func newTx(b *pglogrepl.BeginMessage, max int, tables []cachekeys.CDCTable) *tx {
	return &tx{xid: b.Xid, commitLSN: b.FinalLSN, commitTime: b.CommitTime, max: max, counts: map[int]int{}, tables: tables}
}

func (t *tx) add(c change) {
	if !c.rowChange() {
		t.changes = append(t.changes, c)
		return
	}
	if slices.Contains(t.bulk, c.table) {
		return
	}
	t.counts[c.table]++
	if t.counts[c.table] <= t.max {
		t.changes = append(t.changes, c)
		return
	}
	t.bulk = append(t.bulk, c.table)
	t.changes = slices.DeleteFunc(t.changes, func(o change) bool { return o.table == c.table && o.rowChange() })
	t.changes = slices.Clip(t.changes)
}

// insert, update and del add a row's events.
func (t *tx) insert(r *relation, m *pglogrepl.InsertMessage) {
	t.add(change{table: r.index, entity: r.table.Entity, action: cachekeys.ActionCreated, data: r.data(m.Tuple, nil)})
}

// update adds the row's new values and, when the key or a mapped column
// changed (the old tuple says so), its old values first: both the old
// and the new keys must go.
func (t *tx) update(r *relation, m *pglogrepl.UpdateMessage) {
	newData := r.data(m.NewTuple, m.OldTuple)
	if m.OldTuple != nil {
		if old := r.data(m.OldTuple, nil); !maps.Equal(old, newData) {
			t.add(change{table: r.index, entity: r.table.Entity, action: cachekeys.ActionUpdated, data: old})
		}
	}
	t.add(change{table: r.index, entity: r.table.Entity, action: cachekeys.ActionUpdated, data: newData})
}

func (t *tx) del(r *relation, m *pglogrepl.DeleteMessage) {
	t.add(change{table: r.index, entity: r.table.Entity, action: cachekeys.ActionDeleted, data: r.data(m.OldTuple, nil)})
}

func (t *tx) truncate(r *relation) {
	t.add(change{table: r.index, entity: r.table.Entity, action: cachekeys.ActionTruncated})
}

// message adds a pg_logical_emit_message body as an explicit invalidation.
func (t *tx) message(content []byte) { t.changes = append(t.changes, messageChange(content)) }

func messageChange(content []byte) change {
	c := change{table: -1, entity: "cache", action: "invalidate"}
	if obj, err := decodeObject(content); err == nil {
		c.data = obj
	} else {
		c.raw = slices.Clone(content)
	}
	return c
}

// events returns the transaction's events in order, the bulk events of
// the tables over the cap last.
func (t *tx) events() []change {
	out := t.changes
	for _, i := range t.bulk {
		out = append(out, change{table: i, entity: t.tables[i].Entity, action: cachekeys.ActionBulk})
	}
	return out
}

// eventID is the id and Nats-Msg-Id of the index-th event of the
// transaction that committed at commitLSN. A change's own LSN is no id:
// the rows of one COPY share it.
func eventID(slot string, commitLSN pglogrepl.LSN, index int) string {
	b := make([]byte, 0, 32+len(slot))
	b = append(append(append(b, "cdc:"...), slot...), ':')
	b = append(appendLSN(b, commitLSN), ':')
	return string(strconv.AppendInt(b, int64(index), 10))
}
