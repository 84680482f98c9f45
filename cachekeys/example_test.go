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
