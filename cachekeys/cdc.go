package cachekeys

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// CDC actions: the last token of the subjects `invalidator cdc` publishes,
// events.<entity>.<action>.
const (
	ActionCreated   = "created"
	ActionUpdated   = "updated"
	ActionDeleted   = "deleted"
	ActionTruncated = "truncated"
	// ActionBulk stands for "any row of the table may have changed": a
	// transaction over the per-table cap, or a lost replication slot. It
	// has no data, so its rule must invalidate the entity's namespace.
	ActionBulk = "bulk"
)

// CDCTable maps the row changes of one PostgreSQL table to events, as the
// rules file's `cdc:` section declares it.
type CDCTable struct {
	// Schema and Name name the table; Schema defaults to "public".
	Schema, Name string
	// Entity is the subject's entity token: events.<Entity>.<action>.
	Entity string
	// Columns maps a column name to the event field that carries its
	// value. The table's key columns are always sent, under their mapped
	// field or, when unmapped, under their own name.
	Columns map[string]string
}

// Table is the table's qualified name, schema.name.
func (t CDCTable) Table() string { return t.Schema + "." + t.Name }

// Subject is the event subject of action for this table's entity.
func (t CDCTable) Subject(action string) string {
	return SubjectPrefix + "." + t.Entity + "." + action
}

// Field is the event field of column: its mapping, or its own name.
func (t CDCTable) Field(column string) string {
	if f, ok := t.Columns[column]; ok {
		return f
	}
	return column
}

type cdcYAML struct {
	Tables map[string]cdcTableYAML `yaml:"tables"`
}

type cdcTableYAML struct {
	Entity  string            `yaml:"entity"`
	Columns map[string]string `yaml:"columns"`
}

// identifier is what the cdc section accepts as a schema, table or column
// name: PostgreSQL's unquoted identifiers (they are quoted when used, so
// the case is kept).
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}$`)

// entityToken is a subject token that filters and subjects both accept.
var entityToken = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// CDC returns the tables of the `cdc:` section, sorted by qualified name;
// nil when the file has none. The result is a copy.
func (r *Rules) CDC() []CDCTable {
	out := make([]CDCTable, len(r.cdc))
	for i, t := range r.cdc {
		out[i] = t
		out[i].Columns = make(map[string]string, len(t.Columns))
		for k, v := range t.Columns {
			out[i].Columns[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (r *Rules) setCDC(c *cdcYAML) error {
	if c == nil {
		return nil
	}
	if len(c.Tables) == 0 {
		return &RuleError{Reason: "cdc.tables needs at least one table"}
	}
	for name, ty := range c.Tables {
		t, err := buildCDCTable(name, ty)
		if err != nil {
			return &RuleError{Reason: fmt.Sprintf("cdc table %q: %v", name, err)}
		}
		if slices.ContainsFunc(r.cdc, func(o CDCTable) bool { return o.Table() == t.Table() }) {
			return &RuleError{Reason: fmt.Sprintf("cdc table %q: listed twice (as %s)", name, t.Table())}
		}
		r.cdc = append(r.cdc, t)
	}
	slices.SortFunc(r.cdc, func(a, b CDCTable) int { return strings.Compare(a.Table(), b.Table()) })
	return r.checkCDC()
}

func buildCDCTable(name string, ty cdcTableYAML) (CDCTable, error) {
	schema, table, ok := strings.Cut(name, ".")
	if !ok {
		schema, table = "public", name
	}
	if !identifier.MatchString(schema) || !identifier.MatchString(table) {
		return CDCTable{}, errors.New("must be schema.table (or table, in public), each an identifier of [A-Za-z0-9_$] not starting with a digit")
	}
	if !entityToken.MatchString(ty.Entity) {
		return CDCTable{}, fmt.Errorf("entity must be a subject token of [a-z0-9_-], not %q", ty.Entity)
	}
	if ty.Entity == "cache" {
		return CDCTable{}, errors.New(`entity "cache" is reserved for explicit invalidation (events.cache.invalidate)`)
	}
	t := CDCTable{Schema: schema, Name: table, Entity: ty.Entity, Columns: map[string]string{}}
	fields := map[string]string{}
	for col, field := range ty.Columns {
		if !identifier.MatchString(col) {
			return CDCTable{}, fmt.Errorf("column %q: must be an identifier of [A-Za-z0-9_$] not starting with a digit", col)
		}
		if field == "" || strings.IndexFunc(field, notPathChar) >= 0 {
			return CDCTable{}, fmt.Errorf("column %q: event field must be [A-Za-z0-9_-], not %q", col, field)
		}
		if other, dup := fields[field]; dup {
			return CDCTable{}, fmt.Errorf("columns %q and %q both map to the field %q", min(col, other), max(col, other), field)
		}
		fields[field] = col
		t.Columns[col] = field
	}
	return t, nil
}

// checkCDC requires every entity's bulk and truncated subjects to plan,
// without data, to something: those events carry no row, so a rule that
// needs a field from them would reject them, and their keys would stay.
func (r *Rules) checkCDC() error {
	seen := map[string]bool{}
	for _, t := range r.cdc {
		if seen[t.Entity] {
			continue
		}
		seen[t.Entity] = true
		for _, action := range []string{ActionBulk, ActionTruncated} {
			if err := r.checkDataless(t, action); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *Rules) checkDataless(t CDCTable, action string) error {
	subject := t.Subject(action)
	p, err := r.Plan(subject, map[string]any{})
	switch {
	case err != nil:
		return &RuleError{Reason: fmt.Sprintf("cdc table %s: %s carries no data, but the rule on %q needs some (%v); "+
			"give %s a rule of its own that invalidates the %s namespace (a pattern such as prefix:*), and let the other rules name their actions (%s.created, .updated, .deleted)",
			t.Table(), subject, lastRule(p), err, subject, t.Entity, SubjectPrefix+"."+t.Entity)}
	case p.Empty():
		return &RuleError{Reason: fmt.Sprintf("cdc table %s: %s matches no rule; add one that invalidates the %s namespace (a pattern such as prefix:*)",
			t.Table(), subject, t.Entity)}
	}
	return nil
}

// lastRule is the filter of the rule that refused a plan.
func lastRule(p Plan) string {
	if len(p.Rules) == 0 {
		return ""
	}
	return p.Rules[len(p.Rules)-1]
}
