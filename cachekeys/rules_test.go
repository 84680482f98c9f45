package cachekeys_test

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   string
		want    []string // substrings of the error; nil means accepted
		wantErr bool
	}{
		{name: "rules only", given: "rules:\n  - on: events.a.*\n    invalidate: [\"a:{id}\"]\n"},
		{name: "explicit only", given: "explicit:\n  allow: [\"user:*\"]\n"},
		{name: "exact allow entry", given: "explicit:\n  allow: [\"user:1\", \"cache:x*\"]\n"},
		{name: "duplicate on", given: "rules:\n  - on: events.a.b\n    invalidate: [a:1]\n  - on: events.a.b\n    invalidate: [a:2]\n"},
		{
			name: "unknown rule field", wantErr: true,
			given: "rules:\n  - on: events.a.*\n    invalidate: [\"a:{id}\"]\n    wram: [\"a:{id}\"]\n",
			want:  []string{"rules.yaml", "line 4", `unknown field "wram"`},
		},
		{
			name: "unknown top-level field", wantErr: true,
			given: "rules:\n  - on: events.a.b\n    invalidate: [a:1]\nschedules: []\n",
			want:  []string{`unknown field "schedules"`},
		},
		{name: "no rules", given: "rules: []\n", wantErr: true, want: []string{"rules.yaml: no rules"}},
		{name: "no rules, empty schedule", given: "rules: []\nschedule: []\n", wantErr: true, want: []string{"rules.yaml: no rules"}},
		{name: "warm is a known field", given: "rules:\n  - on: events.a.*\n    invalidate: [\"a:{id}\"]\n    warm: [{from: \"http://api/a/{id}\"}]\n"},
		{name: "schedule is a known field", given: "rules:\n  - on: events.a.b\n    invalidate: [a:1]\nschedule: []\n"},
		{name: "empty file", given: "# nothing\n", wantErr: true, want: []string{"empty rules file"}},
		{name: "two documents", given: "rules: []\n---\nrules: []\n", wantErr: true, want: []string{"more than one YAML document"}},
		{name: "not yaml", given: "rules: [\n", wantErr: true, want: []string{"rules.yaml"}},
		{name: "missing on", given: "rules:\n  - invalidate: [a:1]\n", wantErr: true, want: []string{"rule 1", `missing "on"`}},
		{
			name: "bad on filter", wantErr: true,
			given: "rules:\n  - on: events.a.b\n    invalidate: [a:1]\n  - on: events.Course.*\n    invalidate: [a:1]\n",
			want:  []string{`rule 2 (on "events.Course.*")`, "invalid subject filter", `'C'`},
		},
		{name: "empty token", given: "rules:\n  - on: events..x\n    invalidate: [a:1]\n", wantErr: true, want: []string{"empty token"}},
		{name: "gt not last", given: "rules:\n  - on: events.>.x\n    invalidate: [a:1]\n", wantErr: true, want: []string{"last token"}},
		{name: "every event", given: "rules:\n  - on: \">\"\n    invalidate: [a:1]\n"},
		{name: "every event of the stream", given: "rules:\n  - on: events.>\n    invalidate: [a:1]\n"},
		{name: "any prefix, any entity", given: "rules:\n  - on: \"*.*.updated\"\n    invalidate: [a:1]\n"},
		{name: "entity, then gt", given: "rules:\n  - on: events.*.>\n    invalidate: [a:1]\n"},
		{
			name: "two tokens never match", wantErr: true,
			given: "rules:\n  - on: events.course\n    invalidate: [a:1]\n",
			want:  []string{`rule 1 (on "events.course")`, "can never match", "events.<entity>.<action>", "has 2", "events.course.*"},
		},
		{
			name: "another prefix never matches", wantErr: true,
			given: "rules:\n  - on: foo.>\n    invalidate: [a:1]\n",
			want:  []string{`rule 1 (on "foo.>")`, "can never match", `must be "events", not "foo"`},
		},
		{
			name: "four tokens never match", wantErr: true,
			given: "rules:\n  - on: events.course.a.b\n    invalidate: [a:1]\n",
			want:  []string{"can never match", "has 4"},
		},
		{
			name: "gt after three tokens never matches", wantErr: true,
			given: "rules:\n  - on: events.course.*.>\n    invalidate: [a:1]\n",
			want:  []string{"can never match", "at least 4"},
		},
		{
			name: "one token never matches", wantErr: true,
			given: "rules:\n  - on: events\n    invalidate: [a:1]\n",
			want:  []string{"can never match", "has 1"},
		},
		{name: "reserved subject", given: "rules:\n  - on: events.cache.invalidate\n    invalidate: [a:1]\n", wantErr: true, want: []string{"reserved"}},
		{name: "missing invalidate", given: "rules:\n  - on: events.a.b\n", wantErr: true, want: []string{"rule 1", "at least one template"}},
		{
			name: "bad template", wantErr: true,
			given: "rules:\n  - on: events.a.b\n    invalidate: [a:1]\n  - on: events.course.*\n    invalidate: [\"cache:{id}*\"]\n",
			want:  []string{`rules.yaml: rule 2 (on "events.course.*"): template "cache:{id}*": segment`},
		},
		{name: "empty allow", given: "explicit:\n  allow: []\n", wantErr: true, want: []string{"at least one entry"}},
		{name: "allow star only", given: "explicit:\n  allow: [\"*\"]\n", wantErr: true, want: []string{`entry "*"`, "separator"}},
		{name: "allow prefix without separator", given: "explicit:\n  allow: [\"user*\"]\n", wantErr: true, want: []string{"separator"}},
		{name: "allow inner glob", given: "explicit:\n  allow: [\"user:*:x\"]\n", wantErr: true, want: []string{"literal prefix"}},
		{name: "allow question", given: "explicit:\n  allow: [\"user:?\"]\n", wantErr: true, want: []string{"literal prefix"}},
		{name: "allow double star", given: "explicit:\n  allow: [\"user:**\"]\n", wantErr: true, want: []string{"literal prefix"}},
		{name: "allow empty", given: "explicit:\n  allow: [\"\"]\n", wantErr: true, want: []string{"empty"}},
		{name: "allow unknown field", given: "explicit:\n  allow: [\"a:*\"]\n  deny: []\n", wantErr: true, want: []string{`unknown field "deny"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := cachekeys.Parse("rules.yaml", []byte(tt.given))
			if !tt.wantErr {
				if err != nil || r == nil {
					t.Fatalf("Parse() error = %v", err)
				}
				return
			}
			if !errors.Is(err, cachekeys.ErrInvalidRules) {
				t.Fatalf("Parse() error = %v, want ErrInvalidRules", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse() error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestRuleErrorFields(t *testing.T) {
	t.Parallel()
	_, err := cachekeys.Parse("r.yaml", []byte("rules:\n  - on: events.a.b\n    invalidate: [a:1]\n  - on: events.course.*\n    invalidate: [\"{id}\"]\n"))
	var re *cachekeys.RuleError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v, want *RuleError", err)
	}
	want := cachekeys.RuleError{File: "r.yaml", Rule: 2, On: "events.course.*", Template: "{id}", Reason: re.Reason}
	if *re != want || re.Reason == "" {
		t.Errorf("RuleError = %+v, want %+v", *re, want)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	r, err := cachekeys.Load("../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Allow(), []string{"user:*", "cache:*"}; !slices.Equal(got, want) {
		t.Errorf("Allow() = %q, want %q", got, want)
	}
	got, err := r.Plan("events.enrollment.created", map[string]any{"course_id": 42, "student_id": "s-7"})
	if err != nil {
		t.Fatal(err)
	}
	want := cachekeys.Plan{
		Exact:    []string{"cache:course_analytics:42", "cache:student_risk:s-7"},
		Patterns: []string{"cache:course_analytics:42:*", "cache:student_risk:s-7:*", "cache:system_stats:*"},
		Rules:    []string{"events.enrollment.*"},
	}
	checkPlan(t, got, want)
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := cachekeys.Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load() error = %v, want fs.ErrNotExist", err)
	}
}

func TestListIsACopy(t *testing.T) {
	t.Parallel()
	r, err := cachekeys.Parse("r.yaml", []byte("rules:\n  - on: events.a.b\n    invalidate: [a:1]\nexplicit:\n  allow: [\"a:*\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	r.List()[0].Invalidate[0] = cachekeys.Template{}
	r.Allow()[0] = "x"
	if got := r.List()[0].Invalidate[0].String(); got != "a:1" {
		t.Errorf("List() leaked internal state: template now %q", got)
	}
	if got := r.Allow()[0]; got != "a:*" {
		t.Errorf("Allow() leaked internal state: entry now %q", got)
	}
}

func checkPlan(t *testing.T, got, want cachekeys.Plan) {
	t.Helper()
	if !slices.Equal(got.Exact, want.Exact) || !slices.Equal(got.Patterns, want.Patterns) || !slices.Equal(got.Rules, want.Rules) {
		t.Errorf("Plan =\n  %+v\nwant\n  %+v", got, want)
	}
}

// FuzzParseRules feeds arbitrary bytes to the rules loader: it never
// panics, and a file it accepts plans any event without panicking and
// never yields a pattern without a literal prefix.
func FuzzParseRules(f *testing.F) {
	if seed, err := os.ReadFile("../testdata/rules.yaml"); err == nil {
		f.Add(seed)
	}
	f.Add([]byte("rules:\n  - on: events.course.*\n    invalidate: [\"cache:course_analytics:{course_id}:*\"]\n"))
	f.Add([]byte("rules:\n  - on: events.user.>\n    invalidate: [\"user:{user_id}\"]\nexplicit:\n  allow: [\"user:*\"]\n"))
	f.Add([]byte("rules: []\n"))
	f.Add([]byte("rules:\n  - on: events.a.b\n    invalidate: [\"*\"]\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := cachekeys.Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		for _, subject := range []string{"events.course.updated", "events.user.created", "events.cache.invalidate"} {
			plan, err := r.Plan(subject, map[string]any{"course_id": "42", "user_id": "7", "keys": []any{"user:1"}, "patterns": []any{"user:1:*"}})
			if err != nil {
				continue
			}
			for _, p := range plan.Patterns {
				if cachekeys.LiteralPrefix(p) == "" {
					t.Fatalf("pattern %q without a literal prefix from an accepted file:\n%s", p, data)
				}
			}
		}
	})
}
