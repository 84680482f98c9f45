package cachekeys_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

const planRules = `
rules:
  - on: events.course.*
    invalidate:
      - cache:course_analytics:{course_id}
      - cache:course_analytics:{course_id}:*
      - cache:system_stats:*
  - on: events.*.updated
    invalidate:
      - cache:course_analytics:{course_id}
      - cache:system_stats:*
      - cache:updated:{course_id}
  - on: events.user.>
    invalidate:
      - user:{user_id}
      - user:{user_id}:*
explicit:
  allow: ["user:*", "cache:*", "exact:key"]
`

func mustParse(t *testing.T, src string) *cachekeys.Rules {
	t.Helper()
	r, err := cachekeys.Parse("rules.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPlan(t *testing.T) {
	t.Parallel()
	r := mustParse(t, planRules)
	tests := []struct {
		name    string
		subject string
		given   map[string]any
		want    cachekeys.Plan
		wantErr string
	}{
		{
			name: "union and dedupe across two rules", subject: "events.course.updated",
			given: map[string]any{"course_id": json.Number("42")},
			want: cachekeys.Plan{
				Exact:    []string{"cache:course_analytics:42", "cache:updated:42"},
				Patterns: []string{"cache:course_analytics:42:*", "cache:system_stats:*"},
				Rules:    []string{"events.course.*", "events.*.updated"},
			},
		},
		{
			name: "one rule", subject: "events.user.profile.changed",
			given: map[string]any{"user_id": 7},
			want:  cachekeys.Plan{Exact: []string{"user:7"}, Patterns: []string{"user:7:*"}, Rules: []string{"events.user.>"}},
		},
		{name: "unrouted", subject: "events.other.created", given: map[string]any{"course_id": 1}},
		{name: "glob value rejected", subject: "events.course.created", given: map[string]any{"course_id": "*"}, wantErr: "field course_id"},
		{
			name: "error in second rule rejects all", subject: "events.user.updated",
			given: map[string]any{"user_id": 7}, wantErr: "field course_id: value is missing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := r.Plan(tt.subject, tt.given)
			if tt.wantErr != "" {
				if !errors.Is(err, cachekeys.ErrRejected) || !strings.Contains(err.Error(), tt.wantErr) || !got.Empty() {
					t.Fatalf("Plan() = %+v, %v; want empty and ErrRejected containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkPlan(t, got, tt.want)
		})
	}
}

func TestPlanNeverReachesOtherCourses(t *testing.T) {
	t.Parallel()
	r := mustParse(t, planRules)
	p, err := r.Plan("events.course.updated", map[string]any{"course_id": json.Number("42")})
	if err != nil {
		t.Fatal(err)
	}
	others := []string{"cache:course_analytics:420", "cache:course_analytics:4", "cache:course_analytics:420:x", "cache:course_analytics:142", "cache:course_analytics:4:2"}
	for _, key := range append(p.Exact, p.Patterns...) {
		for _, other := range others {
			if cachekeys.Match(key, other) {
				t.Errorf("%q matches %q", key, other)
			}
		}
	}
}

func TestPlanExplicit(t *testing.T) {
	t.Parallel()
	r := mustParse(t, planRules)
	tests := []struct {
		name    string
		given   map[string]any
		want    cachekeys.Plan
		wantErr string
	}{
		{
			name:  "keys and patterns from JSON",
			given: decodeJSON(t, `{"keys": ["user:1", "user:1", "cache:x", "user:[odd]"], "patterns": ["cache:course_analytics:4*", "exact:key"]}`),
			want: cachekeys.Plan{
				Exact:    []string{"user:1", "cache:x", "user:[odd]"},
				Patterns: []string{"cache:course_analytics:4*", "exact:key"},
				Rules:    []string{cachekeys.InvalidateSubject},
			},
		},
		{
			name:  "Go string slices",
			given: map[string]any{"keys": []string{"exact:key"}},
			want:  cachekeys.Plan{Exact: []string{"exact:key"}, Rules: []string{cachekeys.InvalidateSubject}},
		},
		{name: "key not allowed", given: map[string]any{"keys": []any{"session:1"}}, wantErr: "not allowed by explicit.allow"},
		{name: "pattern not allowed", given: map[string]any{"patterns": []any{"session:*"}}, wantErr: "not allowed"},
		{name: "pattern outside exact entry", given: map[string]any{"patterns": []any{"exact:k*"}}, wantErr: "not allowed"},
		{name: "pattern without prefix", given: map[string]any{"patterns": []any{"*"}}, wantErr: "literal prefix"},
		{name: "pattern glob before separator", given: map[string]any{"patterns": []any{"user*:1"}}, wantErr: "literal prefix"},
		{name: "pattern with backslash", given: map[string]any{"patterns": []any{`user:\*`}}, wantErr: "backslash"},
		{name: "pattern unclosed class", given: map[string]any{"patterns": []any{"user:[a"}}, wantErr: "unclosed"},
		{name: "key with space", given: map[string]any{"keys": []any{"user:a b"}}, wantErr: "whitespace"},
		{name: "empty key", given: map[string]any{"keys": []any{""}}, wantErr: "empty"},
		{name: "key too long", given: map[string]any{"keys": []any{"user:" + strings.Repeat("a", 1020)}}, wantErr: "longer than 1024"},
		{name: "non-string key", given: map[string]any{"keys": []any{1}}, wantErr: "field keys: element 0 is not a string"},
		{name: "keys not an array", given: map[string]any{"keys": "user:1"}, wantErr: "array of strings"},
		{name: "nothing named", given: map[string]any{"keys": []any{}}, wantErr: `needs "keys" or "patterns"`},
		{name: "nil data", given: nil, wantErr: `needs "keys" or "patterns"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := r.Plan(cachekeys.InvalidateSubject, tt.given)
			if tt.wantErr != "" {
				if !errors.Is(err, cachekeys.ErrRejected) || !strings.Contains(err.Error(), tt.wantErr) || !got.Empty() {
					t.Fatalf("Plan() = %+v, %v; want empty and ErrRejected containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkPlan(t, got, tt.want)
		})
	}
}

func TestPlanExplicitWithoutSection(t *testing.T) {
	t.Parallel()
	r := mustParse(t, "rules:\n  - on: events.cache.>\n    invalidate: [\"cache:{id}\"]\n")
	_, err := r.Plan(cachekeys.InvalidateSubject, map[string]any{"keys": []any{"cache:1"}, "id": "1"})
	if !errors.Is(err, cachekeys.ErrRejected) || !strings.Contains(err.Error(), "explicit invalidation not allowed by the rules file") {
		t.Errorf("Plan() error = %v, want rejection", err)
	}
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}
