package cachekeys_test

import (
	"encoding/json"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

func BenchmarkPlan(b *testing.B) {
	r, err := cachekeys.Load("../testdata/rules.yaml")
	if err != nil {
		b.Fatal(err)
	}
	data := map[string]any{"course_id": json.Number("42"), "student_id": json.Number("7")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Plan("events.enrollment.created", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		cachekeys.Match("cache:course_analytics:42:*", "cache:course_analytics:42:weekly:2024")
	}
}
