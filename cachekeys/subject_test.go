package cachekeys_test

import (
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

func TestMatchSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		filter string
		given  string
		want   bool
	}{
		{name: "literal", filter: "events.course.created", given: "events.course.created", want: true},
		{name: "literal differs", filter: "events.course.created", given: "events.course.deleted", want: false},
		{name: "star", filter: "events.course.*", given: "events.course.created", want: true},
		{name: "star is one token", filter: "events.course.*", given: "events.course.a.b", want: false},
		{name: "star needs a token", filter: "events.course.*", given: "events.course", want: false},
		{name: "star in the middle", filter: "events.*.created", given: "events.user.created", want: true},
		{name: "gt one token", filter: "events.user.>", given: "events.user.created", want: true},
		{name: "gt many tokens", filter: "events.user.>", given: "events.user.profile.updated", want: true},
		{name: "gt needs a token", filter: "events.user.>", given: "events.user", want: false},
		{name: "gt alone", filter: ">", given: "a.b", want: true},
		{name: "longer filter", filter: "events.course.created", given: "events.course", want: false},
		{name: "longer subject", filter: "events.course", given: "events.course.created", want: false},
		{name: "prefix is not a match", filter: "events.course.*", given: "events.courses.created", want: false},
		{name: "empty token", filter: "events.*.x", given: "events..x", want: false},
		{name: "empty trailing token", filter: "events.>", given: "events.a.", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := cachekeys.MatchSubject(tt.filter, tt.given); got != tt.want {
				t.Errorf("MatchSubject(%q, %q) = %v, want %v", tt.filter, tt.given, got, tt.want)
			}
		})
	}
}
