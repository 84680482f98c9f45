package cachekeys_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

// cdcRules is a rules file whose course rules name their actions, so the
// dataless bulk and truncated events have a rule of their own.
const cdcRules = `
rules:
  - on: events.course.created
    invalidate: &course ["cache:course_analytics:{course_id}", "cache:course_analytics:{course_id}:*"]
  - on: events.course.updated
    invalidate: *course
  - on: events.course.deleted
    invalidate: *course
  - on: events.course.bulk
    invalidate: ["cache:course_analytics:*"]
  - on: events.course.truncated
    invalidate: ["cache:course_analytics:*"]
`

func TestParseCDC(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   string
		want    []cachekeys.CDCTable
		wantErr []string // substrings of the error
	}{
		{
			name:  "qualified and unqualified tables",
			given: cdcRules + "cdc:\n  tables:\n    public.courses: {entity: course, columns: {id: course_id}}\n    archive: {entity: course}\n",
			want: []cachekeys.CDCTable{
				{Schema: "public", Name: "archive", Entity: "course", Columns: map[string]string{}},
				{Schema: "public", Name: "courses", Entity: "course", Columns: map[string]string{"id": "course_id"}},
			},
		},
		{
			name:    "bulk needs data",
			given:   "rules:\n  - on: events.course.*\n    invalidate: [\"cache:course_analytics:{course_id}\"]\ncdc:\n  tables:\n    courses: {entity: course}\n",
			wantErr: []string{"cdc table public.courses", "events.course.bulk carries no data", `rule on "events.course.*"`, "course_id"},
		},
		{
			name:    "truncated matches no rule",
			given:   "rules:\n  - on: events.course.bulk\n    invalidate: [\"cache:course_analytics:*\"]\ncdc:\n  tables:\n    courses: {entity: course}\n",
			wantErr: []string{"events.course.truncated matches no rule"},
		},
		{
			name:    "entity not a token",
			given:   cdcRules + "cdc:\n  tables:\n    courses: {entity: Course}\n",
			wantErr: []string{`cdc table "courses"`, "entity must be a subject token"},
		},
		{
			name:    "entity cache is reserved",
			given:   cdcRules + "cdc:\n  tables:\n    courses: {entity: cache}\n",
			wantErr: []string{"reserved"},
		},
		{
			name:    "bad table name",
			given:   cdcRules + "cdc:\n  tables:\n    \"a.b.c\": {entity: course}\n",
			wantErr: []string{`cdc table "a.b.c"`, "schema.table"},
		},
		{
			name:    "bad field",
			given:   cdcRules + "cdc:\n  tables:\n    courses: {entity: course, columns: {id: \"course id\"}}\n",
			wantErr: []string{`column "id"`, "event field"},
		},
		{
			name:    "two columns, one field",
			given:   cdcRules + "cdc:\n  tables:\n    courses: {entity: course, columns: {id: course_id, code: course_id}}\n",
			wantErr: []string{`columns "code" and "id" both map to the field "course_id"`},
		},
		{
			name:    "the same table twice",
			given:   cdcRules + "cdc:\n  tables:\n    courses: {entity: course}\n    public.courses: {entity: course}\n",
			wantErr: []string{"listed twice"},
		},
		{
			name:    "no tables",
			given:   cdcRules + "cdc:\n  tables: {}\n",
			wantErr: []string{"cdc.tables needs at least one table"},
		},
		{
			name:    "unknown field",
			given:   cdcRules + "cdc:\n  tables:\n    courses: {entity: course, colums: {}}\n",
			wantErr: []string{`unknown field "colums"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := cachekeys.Parse("rules.yaml", []byte(tt.given))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Parse accepted the file; want an error with %q", tt.wantErr)
				}
				if !errors.Is(err, cachekeys.ErrInvalidRules) {
					t.Errorf("error %v does not wrap ErrInvalidRules", err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := r.CDC()
			if len(got) != len(tt.want) {
				t.Fatalf("CDC() = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.Table() != w.Table() || g.Entity != w.Entity || len(g.Columns) != len(w.Columns) {
					t.Errorf("table %d = %+v, want %+v", i, g, w)
				}
				for c, f := range w.Columns {
					if g.Columns[c] != f {
						t.Errorf("table %d column %s = %q, want %q", i, c, g.Columns[c], f)
					}
				}
			}
		})
	}
}

func TestCDCTableField(t *testing.T) {
	t.Parallel()
	tab := cachekeys.CDCTable{Schema: "public", Name: "users", Entity: "user", Columns: map[string]string{"id": "user_id"}}
	if got := tab.Field("id"); got != "user_id" {
		t.Errorf("Field(id) = %q, want user_id", got)
	}
	if got := tab.Field("tenant"); got != "tenant" {
		t.Errorf("Field(tenant) = %q, want the column's own name", got)
	}
	if got := tab.Subject(cachekeys.ActionBulk); got != "events.user.bulk" {
		t.Errorf("Subject(bulk) = %q", got)
	}
}

func TestRulesWithoutCDC(t *testing.T) {
	t.Parallel()
	r, err := cachekeys.Load("../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.CDC(); got != nil {
		t.Errorf("CDC() = %+v for a file without a cdc section, want nil", got)
	}
}
