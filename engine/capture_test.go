package engine_test

import (
	"reflect"
	"testing"

	"github.com/invalidator/invalidator/engine"
)

func TestCaptureMerge(t *testing.T) {
	gen := func(scope string) string { return "invalidator:gen:" + scope }
	first := &engine.Capture{Generations: true,
		Exact:   []engine.Displaced{{Scope: "user:1", Key: gen("user:1"), Previous: "old1"}, {Scope: "user:2", Key: gen("user:2")}},
		Scopes:  []engine.Displaced{{Scope: "course:", Key: gen("course:"), Previous: "old", Token: "b1"}},
		Removed: map[string][]string{"course:*": {"course:1"}}}
	// The retry finds the tokens fills wrote after the first attempt, or
	// nothing, and its own batch token.
	retry := &engine.Capture{Generations: true,
		Exact:  []engine.Displaced{{Scope: "user:1", Key: gen("user:1")}, {Scope: "user:2", Key: gen("user:2"), Previous: "fill2"}},
		Scopes: []engine.Displaced{{Scope: "course:", Key: gen("course:"), Previous: "b1", Token: "b2"}}}
	tests := []struct {
		name        string
		earlier, in *engine.Capture
		want        *engine.Capture
	}{
		{name: "no earlier attempt", earlier: nil, in: retry, want: retry},
		{name: "no capture now", earlier: first, in: nil, want: first},
		{name: "the earliest displaced token, the latest batch token", earlier: first, in: retry, want: &engine.Capture{Generations: true,
			Exact:   []engine.Displaced{{Scope: "user:1", Key: gen("user:1"), Previous: "old1"}, {Scope: "user:2", Key: gen("user:2"), Previous: "fill2"}},
			Scopes:  []engine.Displaced{{Scope: "course:", Key: gen("course:"), Previous: "old", Token: "b2"}},
			Removed: map[string][]string{"course:*": {"course:1"}}}},
		{name: "a key only the earlier attempt moved is kept", earlier: &engine.Capture{Exact: []engine.Displaced{{Scope: "a", Key: gen("a"), Previous: "x"}}},
			in: &engine.Capture{}, want: &engine.Capture{Exact: []engine.Displaced{{Scope: "a", Key: gen("a"), Previous: "x"}}, Scopes: []engine.Displaced{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.earlier.Merge(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Merge:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
