package cachekeys_test

import (
	"encoding/json"
	"fmt"

	"github.com/invalidator/invalidator/cachekeys"
)

func Example() {
	rules, err := cachekeys.Parse("rules.yaml", []byte(`
rules:
  - on: events.course.*
    invalidate:
      - cache:course_analytics:{course_id}
      - cache:course_analytics:{course_id}:*
      - cache:system_stats:*
`))
	if err != nil {
		panic(err)
	}
	plan, err := rules.Plan("events.course.updated", map[string]any{"course_id": json.Number("42")})
	fmt.Println(plan.Exact, plan.Patterns, plan.Rules, err)

	_, err = rules.Plan("events.course.updated", map[string]any{"course_id": "*"})
	fmt.Println(err)
	// Output:
	// [cache:course_analytics:42] [cache:course_analytics:42:* cache:system_stats:*] [events.course.*] <nil>
	// rejected: field course_id: value holds glob metacharacter '*'
}

// Example_warm renders the warm targets of a rules file: after deleting a
// course's keys, the warmer stores a fresh copy of its analytics and asks the
// statistics endpoint to refill its own cache.
func Example_warm() {
	rules, err := cachekeys.Parse("rules.yaml", []byte(`
rules:
  - on: events.course.*
    invalidate:
      - cache:course_analytics:{course_id}
      - cache:system_stats:*
    warm:
      - key: cache:course_analytics:{course_id}
        from: http://api:8000/api/v3/analytics/courses/{course_id}
        ttl: 60s
        headers_from_env: {Authorization: WARM_API_AUTH}
      - from: http://api:8000/api/v3/system/stats
schedule:
  - key: cache:system_stats:global
    from: http://api:8000/api/v3/system/stats
    every: 25s
    ttl: 30s
`))
	if err != nil {
		panic(err)
	}
	plan, err := rules.Plan("events.course.updated", map[string]any{"course_id": "c&42"})
	if err != nil {
		panic(err)
	}
	for _, w := range plan.Warm {
		fmt.Printf("key=%q url=%s host=%s ttl=%s env=%v\n", w.Key, w.URL, w.Host, w.TTL, w.HeadersFromEnv)
	}
	for _, s := range rules.Schedules() {
		req := s.Request()
		fmt.Printf("every %s: key=%q url=%s ttl=%s\n", s.Every, req.Key, req.URL, req.TTL)
	}
	fmt.Println(rules.EnvNames())
	// Output:
	// key="cache:course_analytics:c&42" url=http://api:8000/api/v3/analytics/courses/c%2642 host=api:8000 ttl=1m0s env=map[Authorization:WARM_API_AUTH]
	// key="" url=http://api:8000/api/v3/system/stats host=api:8000 ttl=0s env=map[]
	// every 25s: key="cache:system_stats:global" url=http://api:8000/api/v3/system/stats ttl=30s
	// [WARM_API_AUTH]
}

func ExampleURLTemplate_Render() {
	u, err := cachekeys.ParseURLTemplate("http://api:8000/api/v3/analytics/courses/{course_id}?week={week}")
	if err != nil {
		panic(err)
	}
	url, err := u.Render(map[string]any{"course_id": "../admin", "week": "1+1"})
	fmt.Println(url, u.Host(), err)
	_, err = u.Render(map[string]any{"course_id": "..", "week": 1})
	fmt.Println(err)
	// Output:
	// http://api:8000/api/v3/analytics/courses/..%2Fadmin?week=1%2B1 api:8000 <nil>
	// rejected: field course_id: value ".." is a relative path segment
}

func ExampleSegmentPrefixes() {
	key := "cache:course_analytics:42"
	fmt.Println(cachekeys.SegmentPrefixes(key))
	for _, p := range []string{"cache:course_analytics:42:*", "cache:sys*", "cache:course_analytics:*"} {
		fmt.Println(p, "->", cachekeys.PatternScope(p))
	}
	// Output:
	// [cache: cache:course_analytics:]
	// cache:course_analytics:42:* -> cache:course_analytics:42:
	// cache:sys* -> cache:
	// cache:course_analytics:* -> cache:course_analytics:
}

func ExampleParse_error() {
	_, err := cachekeys.Parse("rules.yaml", []byte(`
rules:
  - on: events.course.*
    invalidate: ["cache:{id}*"]
`))
	fmt.Println(err)
	// Output:
	// rules.yaml: rule 1 (on "events.course.*"): template "cache:{id}*": segment "{id}*" mixes a placeholder with a glob metacharacter; a placeholder must fill its segment between separators ":"
}

func ExampleTemplate_Render() {
	t, err := cachekeys.ParseTemplate("user:{user.id}:*")
	if err != nil {
		panic(err)
	}
	key, err := t.Render(map[string]any{"user": map[string]any{"id": 7}})
	fmt.Println(key, t.IsPattern(), t.Fields(), err)
	// Output:
	// user:7:* true [user.id] <nil>
}

func ExampleMatch() {
	fmt.Println(cachekeys.Match("cache:course_analytics:42:*", "cache:course_analytics:42:weekly"))
	fmt.Println(cachekeys.Match("cache:course_analytics:42:*", "cache:course_analytics:420:weekly"))
	fmt.Println(cachekeys.Match("user:[0-9]?", "user:7a"))
	// Output:
	// true
	// false
	// true
}

func ExampleMatchSubject() {
	fmt.Println(cachekeys.MatchSubject("events.user.>", "events.user.profile.updated"))
	fmt.Println(cachekeys.MatchSubject("events.course.*", "events.course.a.b"))
	// Output:
	// true
	// false
}

func ExampleValue() {
	for _, v := range []any{json.Number("4.50"), 42, "123:profile"} {
		s, err := cachekeys.Value(v)
		fmt.Printf("%q %v\n", s, err)
	}
	// Output:
	// "4.50" <nil>
	// "42" <nil>
	// "" rejected: value holds the separator ":"
}
