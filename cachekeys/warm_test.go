package cachekeys_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
)

const warmRules = `
rules:
  - on: events.course.*
    invalidate:
      - cache:course_analytics:{course_id}
      - cache:course_analytics:{course_id}:*
      - cache:system_stats:*
    warm:
      - key: cache:course_analytics:{course_id}
        from: http://api:8000/api/v3/analytics/courses/{course_id}
        ttl: 60s
        headers: {X-Cache-Bypass: "1"}
        headers_from_env: {Authorization: WARM_API_AUTH}
      - from: http://api:8000/api/v3/system/stats
  - on: events.*.updated
    invalidate:
      - cache:course_analytics:{course_id}
    warm:
      - key: cache:course_analytics:{course_id}
        from: http://api:8000/api/v3/analytics/courses/{course_id}
        ttl: 30s # same (key, from) as above: dropped from a plan holding both
      - from: http://api:8000/api/v3/system/stats
      - from: http://api:8000/api/v3/courses/{course_id}?fresh=1
  - on: events.user.>
    invalidate: ["user:{user_id}"]
schedule:
  - key: cache:system_stats:global
    from: http://api:8000/api/v3/system/stats
    every: 25s
    ttl: 30s
    headers_from_env: {Authorization: STATS_AUTH, X-Api-Key: WARM_API_AUTH}
explicit:
  allow: ["cache:*"]
`

// warmRule is a rules file whose one rule has the given warm entries, each
// a YAML flow mapping.
func warmRule(entries ...string) string {
	return "rules:\n  - on: events.course.*\n    invalidate: [\"cache:c:{course_id}\", \"cache:s:*\", \"cache:n:{course.id}\"]\n    warm:\n      - " +
		strings.Join(entries, "\n      - ") + "\n"
}

// scheduleFile is a rules file with the given schedule entries.
func scheduleFile(entries ...string) string {
	return "rules:\n  - on: events.a.b\n    invalidate: [a:1]\nschedule:\n  - " + strings.Join(entries, "\n  - ") + "\n"
}

const goodSchedule = `{key: "cache:s:g", from: "http://api/s", every: 25s, ttl: 30s}`

func TestParseWarm(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   string
		want    []string // substrings of the error; nil means accepted
		wantErr bool
	}{
		{name: "store", given: warmRule(`{key: "cache:c:{course_id}", from: "http://api/c/{course_id}", ttl: 60s}`)},
		{name: "trigger", given: warmRule(`{from: "http://api/s"}`)},
		{name: "nested field", given: warmRule(`{from: "http://api/n?id={course.id}"}`)},
		{name: "minute ttl", given: warmRule(`{key: "cache:c:1", from: "http://api/c", ttl: 1m}`)},
		{name: "headers", given: warmRule(`{from: "http://api/s", headers: {X-A: "1", "X-B!#$%&'*+.^_|~": "tab\tok"}, headers_from_env: {Authorization: _Tok_1}}`)},
		{name: "empty header value", given: warmRule(`{from: "http://api/s", headers: {X-A: ""}}`)},
		{name: "schedule", given: scheduleFile(goodSchedule)},
		{name: "schedule one second", given: scheduleFile(`{key: "cache:s:g", from: "http://api/s", every: 1s, ttl: 1s}`)},
		{name: "schedule only", given: "schedule:\n  - " + goodSchedule + "\n"},
		{name: "empty warm list", given: "rules:\n  - on: events.a.b\n    invalidate: [a:1]\n    warm: []\n"},

		{
			name: "ttl missing", wantErr: true,
			given: warmRule(`{key: "cache:c:{course_id}", from: "http://api/c/{course_id}"}`),
			want:  []string{`rules.yaml: rule 1 (on "events.course.*"): warm 1: "ttl" is required`},
		},
		{name: "ttl zero", given: warmRule(`{key: "cache:c:1", from: "http://api/c", ttl: 0s}`), wantErr: true, want: []string{`"ttl" "0s" must be greater than zero`}},
		{name: "ttl negative", given: warmRule(`{key: "cache:c:1", from: "http://api/c", ttl: -5s}`), wantErr: true, want: []string{`"ttl" "-5s" must be greater than zero`}},
		{name: "ttl without unit", given: warmRule(`{key: "cache:c:1", from: "http://api/c", ttl: 60}`), wantErr: true, want: []string{`"ttl" "60" is not a duration`, `"60s"`}},
		{name: "ttl in trigger mode", given: warmRule(`{from: "http://api/c", ttl: 60s}`), wantErr: true, want: []string{`warm 1: "ttl" without "key" does nothing`}},
		{name: "from missing", given: warmRule(`{key: "cache:c:1", ttl: 60s}`), wantErr: true, want: []string{`warm 1: "from" is required`}},
		{
			name: "second target", wantErr: true,
			given: warmRule(`{from: "http://api/s"}`, `{from: "http://api/x#y"}`),
			want:  []string{`rule 1 (on "events.course.*"): warm 2: template "http://api/x#y": a fragment`},
		},
		{
			name: "url placeholder not in rule's data", wantErr: true,
			given: warmRule(`{from: "http://api/u/{user_id}"}`),
			want:  []string{`warm 1: template "http://api/u/{user_id}": placeholder {user_id} is not present in the rule's data`},
		},
		{
			name: "key placeholder not in rule's data", wantErr: true,
			given: warmRule(`{key: "cache:u:{user_id}", from: "http://api/c/{course_id}", ttl: 1s}`),
			want:  []string{`template "cache:u:{user_id}": placeholder {user_id} is not present`},
		},
		{name: "parent path not in rule's data", given: warmRule(`{from: "http://api/n?id={course}"}`), wantErr: true, want: []string{"placeholder {course} is not present"}},
		{name: "pattern key", given: warmRule(`{key: "cache:c:{course_id}:*", from: "http://api/c", ttl: 1s}`), wantErr: true, want: []string{"must be an exact key, not a pattern"}},
		{name: "bad key", given: warmRule(`{key: "cache{course_id}", from: "http://api/c", ttl: 1s}`), wantErr: true, want: []string{`template "cache{course_id}"`, "literal prefix"}},
		{name: "credentials in URL", given: warmRule(`{from: "http://warm:s3cret@api/s"}`), wantErr: true, want: []string{"put credentials in headers_from_env"}},
		{name: "placeholder in host", given: warmRule(`{from: "http://{course_id}/s"}`), wantErr: true, want: []string{"scheme, host or port"}},
		{name: "bad header name", given: warmRule(`{from: "http://api/s", headers: {"X Bad": "1"}}`), wantErr: true, want: []string{`warm 1: header name "X Bad" is not an HTTP token`}},
		{name: "header name with colon", given: warmRule(`{from: "http://api/s", headers: {"X:A": "1"}}`), wantErr: true, want: []string{"not an HTTP token"}},
		{name: "empty header name", given: warmRule(`{from: "http://api/s", headers: {"": "1"}}`), wantErr: true, want: []string{"not an HTTP token"}},
		{name: "header value CRLF", given: warmRule(`{from: "http://api/s", headers: {X-A: "a\r\nX-B: b"}}`), wantErr: true, want: []string{`header "X-A": value holds control character '\r'`}},
		{name: "header value NUL", given: warmRule(`{from: "http://api/s", headers: {X-A: "a\0"}}`), wantErr: true, want: []string{"control character"}},
		{name: "bad env header name", given: warmRule(`{from: "http://api/s", headers_from_env: {"X(A)": TOKEN}}`), wantErr: true, want: []string{"not an HTTP token"}},
		{name: "bad env name", given: warmRule(`{from: "http://api/s", headers_from_env: {Authorization: 1TOKEN}}`), wantErr: true, want: []string{`headers_from_env "Authorization": "1TOKEN" is not an environment variable name`}},
		{name: "env name with dash", given: warmRule(`{from: "http://api/s", headers_from_env: {Authorization: WARM-AUTH}}`), wantErr: true, want: []string{"not an environment variable name"}},
		{name: "empty env name", given: warmRule(`{from: "http://api/s", headers_from_env: {Authorization: ""}}`), wantErr: true, want: []string{"not an environment variable name"}},
		{name: "header in both", given: warmRule(`{from: "http://api/s", headers: {authorization: x}, headers_from_env: {Authorization: TOKEN}}`), wantErr: true, want: []string{`header "Authorization" is set twice`}},
		{name: "header spelled twice", given: warmRule(`{from: "http://api/s", headers: {X-A: "1", x-a: "2"}}`), wantErr: true, want: []string{"set twice"}},
		{name: "unknown warm field", given: warmRule(`{from: "http://api/s", tll: 1s}`), wantErr: true, want: []string{`unknown field "tll"`}},

		{name: "schedule key missing", given: scheduleFile(`{from: "http://api/s", every: 25s, ttl: 30s}`), wantErr: true, want: []string{`rules.yaml: schedule 1: "key" is required`}},
		{name: "schedule from missing", given: scheduleFile(`{key: "cache:s:g", every: 25s, ttl: 30s}`), wantErr: true, want: []string{`schedule 1: "from" is required`}},
		{name: "schedule ttl missing", given: scheduleFile(`{key: "cache:s:g", from: "http://api/s", every: 25s}`), wantErr: true, want: []string{`schedule 1: "ttl" is required`}},
		{name: "schedule ttl zero", given: scheduleFile(`{key: "cache:s:g", from: "http://api/s", every: 25s, ttl: 0s}`), wantErr: true, want: []string{"greater than zero"}},
		{name: "every missing", given: scheduleFile(`{key: "cache:s:g", from: "http://api/s", ttl: 30s}`), wantErr: true, want: []string{`schedule 1: "every" is required`}},
		{name: "every 0", given: scheduleFile(`{key: "cache:s:g", from: "http://api/s", every: 0, ttl: 30s}`), wantErr: true, want: []string{`"every" "0" must be greater than zero`}},
		{name: "every 500ms", given: scheduleFile(`{key: "cache:s:g", from: "http://api/s", every: 500ms, ttl: 30s}`), wantErr: true, want: []string{`schedule 1: "every" 500ms is shorter than 1s`}},
		{name: "every not a duration", given: scheduleFile(`{key: "cache:s:g", from: "http://api/s", every: often, ttl: 30s}`), wantErr: true, want: []string{"not a duration"}},
		{name: "placeholder in schedule key", given: scheduleFile(`{key: "cache:s:{id}", from: "http://api/s", every: 25s, ttl: 30s}`), wantErr: true, want: []string{`schedule 1: template "cache:s:{id}": placeholder {id} not allowed`}},
		{name: "placeholder in schedule from", given: scheduleFile(`{key: "cache:s:g", from: "http://api/s/{id}", every: 25s, ttl: 30s}`), wantErr: true, want: []string{`template "http://api/s/{id}": placeholder {id} not allowed`}},
		{name: "schedule pattern key", given: scheduleFile(`{key: "cache:s:*", from: "http://api/s", every: 25s, ttl: 30s}`), wantErr: true, want: []string{"exact key"}},
		{name: "schedule credentials", given: scheduleFile(`{key: "cache:s:g", from: "https://a:b@api/s", every: 25s, ttl: 30s}`), wantErr: true, want: []string{"credentials"}},
		{name: "schedule bad env name", given: scheduleFile(`{key: "cache:s:g", from: "http://api/s", every: 25s, ttl: 30s, headers_from_env: {X-A: "$TOKEN"}}`), wantErr: true, want: []string{"not an environment variable name"}},
		{name: "schedule second entry", given: scheduleFile(goodSchedule, `{key: "cache:s:h", from: "http://api/s"}`), wantErr: true, want: []string{"schedule 2:"}},
		{name: "schedule duplicate key", given: scheduleFile(goodSchedule, goodSchedule), wantErr: true, want: []string{`schedule 2: template "cache:s:g": key already scheduled`}},
		{name: "schedule unknown field", given: scheduleFile(`{key: "cache:s:g", from: "http://api/s", every: 25s, ttl: 30s, evry: 1s}`), wantErr: true, want: []string{`unknown field "evry"`}},
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

func TestRuleErrorWarmFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given string
		want  cachekeys.RuleError // Reason is not compared
	}{
		{
			name:  "warm",
			given: warmRule(`{from: "http://api/s"}`, `{from: "http://api/u/{user_id}"}`),
			want:  cachekeys.RuleError{File: "r.yaml", Rule: 1, On: "events.course.*", Warm: 2, Template: "http://api/u/{user_id}"},
		},
		{
			name:  "schedule",
			given: scheduleFile(goodSchedule, `{key: "cache:s:h", from: "http://api/s", every: 1ms, ttl: 1s}`),
			want:  cachekeys.RuleError{File: "r.yaml", Schedule: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := cachekeys.Parse("r.yaml", []byte(tt.given))
			var re *cachekeys.RuleError
			if !errors.As(err, &re) {
				t.Fatalf("error = %v, want *RuleError", err)
			}
			got := *re
			got.Reason = ""
			if got != tt.want || re.Reason == "" {
				t.Errorf("RuleError = %+v, want %+v and a reason", *re, tt.want)
			}
		})
	}
}

func TestPlanWarm(t *testing.T) {
	t.Parallel()
	r := mustParse(t, warmRules)
	course := cachekeys.WarmRequest{
		Key: "cache:course_analytics:42", URL: "http://api:8000/api/v3/analytics/courses/42", Host: "api:8000", TTL: time.Minute,
		Headers: map[string]string{"X-Cache-Bypass": "1"}, HeadersFromEnv: map[string]string{"Authorization": "WARM_API_AUTH"},
	}
	stats := cachekeys.WarmRequest{URL: "http://api:8000/api/v3/system/stats", Host: "api:8000"}
	tests := []struct {
		name    string
		subject string
		given   map[string]any
		want    []cachekeys.WarmRequest
		wantErr string
		// wantSkipped is the number of targets left out, each for a
		// relative path segment, while the keys are still planned.
		wantSkipped int
	}{
		{name: "store and trigger", subject: "events.course.created", given: map[string]any{"course_id": 42}, want: []cachekeys.WarmRequest{course, stats}},
		{
			name: "deduplicated across rules, first wins", subject: "events.course.updated", given: map[string]any{"course_id": json.Number("42")},
			want: []cachekeys.WarmRequest{course, stats, {URL: "http://api:8000/api/v3/courses/42?fresh=1", Host: "api:8000"}},
		},
		{
			name: "second rule alone", subject: "events.student.updated", given: map[string]any{"course_id": "a&b"},
			want: []cachekeys.WarmRequest{
				{Key: "cache:course_analytics:a&b", URL: "http://api:8000/api/v3/analytics/courses/a%26b", Host: "api:8000", TTL: 30 * time.Second},
				stats,
				{URL: "http://api:8000/api/v3/courses/a%26b?fresh=1", Host: "api:8000"},
			},
		},
		{name: "rule without warm", subject: "events.user.created", given: map[string]any{"user_id": 1}},
		{
			// ".." is a fine key value but no URL path segment: only the
			// targets with it in their URL are left out, not the keys.
			name: "path traversal skips only its warm targets", subject: "events.course.updated", given: map[string]any{"course_id": ".."},
			want: []cachekeys.WarmRequest{stats}, wantSkipped: 2,
		},
		{name: "explicit plan has no warm", subject: cachekeys.InvalidateSubject, given: map[string]any{"keys": []any{"cache:course_analytics:42"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := r.Plan(tt.subject, tt.given)
			if tt.wantErr != "" {
				if !errors.Is(err, cachekeys.ErrRejected) || !strings.Contains(err.Error(), tt.wantErr) || !got.Empty() || got.Warm != nil {
					t.Fatalf("Plan() = %+v, %v; want empty and ErrRejected containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Warm, tt.want) {
				t.Errorf("Plan().Warm =\n  %+v\nwant\n  %+v", got.Warm, tt.want)
			}
			if len(got.WarmSkipped) != tt.wantSkipped {
				t.Errorf("Plan().WarmSkipped = %+v, want %d", got.WarmSkipped, tt.wantSkipped)
			}
			for _, s := range got.WarmSkipped {
				if !errors.Is(s.Err, cachekeys.ErrRejected) || !strings.Contains(s.Err.Error(), "relative path segment") || s.From == "" {
					t.Errorf("skipped %+v", s)
				}
			}
			if tt.wantSkipped > 0 && (len(got.Exact) == 0 || len(got.Patterns) == 0) {
				t.Errorf("keys not planned with warm targets skipped: %+v", got)
			}
		})
	}
}

func TestPlanWarmIsACopy(t *testing.T) {
	t.Parallel()
	r := mustParse(t, warmRules)
	data := map[string]any{"course_id": 1}
	p, err := r.Plan("events.course.created", data)
	if err != nil {
		t.Fatal(err)
	}
	p.Warm[0].Headers["X-Cache-Bypass"] = "0"
	p.Warm[0].HeadersFromEnv["Authorization"] = "OTHER"
	r.List()[0].Warm[0].Headers["X-Cache-Bypass"] = "0"
	r.Schedules()[0].HeadersFromEnv["Authorization"] = "OTHER"
	p, err = r.Plan("events.course.created", data)
	if err != nil {
		t.Fatal(err)
	}
	if p.Warm[0].Headers["X-Cache-Bypass"] != "1" || p.Warm[0].HeadersFromEnv["Authorization"] != "WARM_API_AUTH" {
		t.Errorf("Plan() leaked internal state: %+v", p.Warm[0])
	}
	if got := r.Schedules()[0].HeadersFromEnv["Authorization"]; got != "STATS_AUTH" {
		t.Errorf("Schedules() leaked internal state: %q", got)
	}
}

func TestWarmTargets(t *testing.T) {
	t.Parallel()
	r := mustParse(t, warmRules)
	warm := r.List()[0].Warm
	if len(warm) != 2 {
		t.Fatalf("List()[0].Warm = %+v, want 2 targets", warm)
	}
	store, trigger := warm[0], warm[1]
	if !store.Store() || store.Key.String() != "cache:course_analytics:{course_id}" || store.TTL != time.Minute ||
		store.From.String() != "http://api:8000/api/v3/analytics/courses/{course_id}" {
		t.Errorf("store target = %+v", store)
	}
	if trigger.Store() || trigger.Key.String() != "" || trigger.TTL != 0 || trigger.Headers != nil {
		t.Errorf("trigger target = %+v", trigger)
	}
}

func TestSchedules(t *testing.T) {
	t.Parallel()
	s := mustParse(t, warmRules).Schedules()
	if len(s) != 1 {
		t.Fatalf("Schedules() = %+v, want one entry", s)
	}
	if s[0].Every != 25*time.Second || !s[0].Store() {
		t.Errorf("Schedules()[0] = %+v", s[0])
	}
	want := cachekeys.WarmRequest{
		Key: "cache:system_stats:global", URL: "http://api:8000/api/v3/system/stats", Host: "api:8000", TTL: 30 * time.Second,
		HeadersFromEnv: map[string]string{"Authorization": "STATS_AUTH", "X-Api-Key": "WARM_API_AUTH"},
	}
	if got := s[0].Request(); !reflect.DeepEqual(got, want) {
		t.Errorf("Request() =\n  %+v\nwant\n  %+v", got, want)
	}
}

func TestEnvNamesAndWarms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		given     string
		wantEnv   []string
		wantWarms bool
	}{
		{name: "rules and schedule", given: warmRules, wantEnv: []string{"STATS_AUTH", "WARM_API_AUTH"}, wantWarms: true},
		{name: "no warming", given: planRules},
		{name: "trigger only", given: warmRule(`{from: "http://api/s"}`), wantWarms: true},
		{name: "rule env only", given: warmRule(`{from: "http://api/s", headers_from_env: {B: Z_ENV, A: A_ENV}}`, `{from: "http://api/t", headers_from_env: {C: Z_ENV}}`), wantEnv: []string{"A_ENV", "Z_ENV"}, wantWarms: true},
		{name: "schedule only", given: "schedule:\n  - " + goodSchedule + "\n", wantWarms: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := mustParse(t, tt.given)
			if got := r.EnvNames(); !slices.Equal(got, tt.wantEnv) {
				t.Errorf("EnvNames() = %q, want %q", got, tt.wantEnv)
			}
			if got := r.Warms(); got != tt.wantWarms {
				t.Errorf("Warms() = %v, want %v", got, tt.wantWarms)
			}
		})
	}
}

func TestLoadWarm(t *testing.T) {
	t.Parallel()
	r, err := cachekeys.Load("../testdata/rules-warm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := cachekeys.Load("../testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(r.List(), plain.List(), sameInvalidation) || !slices.Equal(r.Allow(), plain.Allow()) {
		t.Errorf("rules-warm.yaml invalidates differently from rules.yaml")
	}
	got, err := r.Plan("events.enrollment.created", map[string]any{"course_id": 42, "student_id": "s-7"})
	if err != nil {
		t.Fatal(err)
	}
	want := []cachekeys.WarmRequest{
		{Key: "cache:course_analytics:42", URL: "http://api:8000/api/v3/analytics/courses/42", Host: "api:8000", TTL: 60 * time.Second},
		{Key: "cache:student_risk:s-7", URL: "http://api:8000/api/v3/analytics/students/s-7", Host: "api:8000", TTL: 45 * time.Second},
		{URL: "http://api:8000/api/v3/system/stats", Host: "api:8000"},
	}
	if !reflect.DeepEqual(got.Warm, want) {
		t.Errorf("Plan().Warm =\n  %+v\nwant\n  %+v", got.Warm, want)
	}
	s := r.Schedules()
	wantReq := cachekeys.WarmRequest{Key: "cache:system_stats:global", URL: "http://api:8000/api/v3/system/stats", Host: "api:8000", TTL: 30 * time.Second}
	if len(s) != 1 || s[0].Every != 25*time.Second || !reflect.DeepEqual(s[0].Request(), wantReq) {
		t.Errorf("Schedules() = %+v", s)
	}
	if !r.Warms() || plain.Warms() || len(r.EnvNames()) != 0 {
		t.Errorf("Warms() = %v / %v, EnvNames() = %q", r.Warms(), plain.Warms(), r.EnvNames())
	}
}

func sameInvalidation(a, b cachekeys.Rule) bool {
	return a.On == b.On && slices.EqualFunc(a.Invalidate, b.Invalidate, func(x, y cachekeys.Template) bool { return x.String() == y.String() })
}
