package explain_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/internal/explain"
)

// What course 42's update invalidates, and the refusal of a glob value.
func ExampleWrite() {
	rules, err := cachekeys.Load("../../testdata/rules.yaml")
	if err != nil {
		panic(err)
	}
	_ = explain.Write(os.Stdout, rules, "events.course.updated", `{"course_id": "42"}`)
	err = explain.Write(os.Stdout, rules, "events.course.updated", `{"course_id": "4*"}`)
	fmt.Println(errors.Is(err, explain.ErrRejected))
	// Output:
	// rules: [events.course.*]
	// exact   cache:course_analytics:42
	// pattern cache:course_analytics:42:*
	// pattern cache:system_stats:*
	// rejected: field course_id: value holds glob metacharacter '*'
	// true
}

func ExampleHeaderNames() {
	fmt.Printf("%q\n", explain.HeaderNames(map[string]string{"Accept": "application/json"}, map[string]string{"Authorization": "WARM_TOKEN"}))
	// Output:
	// " [Accept: application/json, Authorization: $WARM_TOKEN]"
}
