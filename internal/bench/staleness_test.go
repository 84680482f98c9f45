package main

import (
	"strings"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
)

// The warming scenario's rules warm the item's exact key from the source
// endpoint on created and updated, and invalidate as the other scenarios do.
func TestWarmRules(t *testing.T) {
	rules, err := cachekeys.Parse("warm.yaml", []byte(warmRules("http://127.0.0.1:1")))
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{"events.item.created", "events.item.updated"} {
		plan, err := rules.Plan(subject, map[string]any{"item_id": "7"})
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Warm) != 1 || plan.Warm[0].Key != "cache:item:7" || plan.Warm[0].URL != "http://127.0.0.1:1/items/7" {
			t.Errorf("%s: warm %+v, want cache:item:7 from http://127.0.0.1:1/items/7", subject, plan.Warm)
		}
		if got := strings.Join(append(plan.Exact, plan.Patterns...), " "); got != "cache:item:7 cache:item:7:*" {
			t.Errorf("%s: invalidates %q", subject, got)
		}
	}
}

// Every case can be picked alone by its whole name.
func TestSelectCases(t *testing.T) {
	for _, c := range stalenessCases {
		got, err := selectCases(c.name)
		if err != nil || len(got) == 0 || got[0].name != c.name {
			t.Errorf("selectCases(%q) = %v, %v", c.name, got, err)
		}
	}
	if _, err := selectCases("no such case"); err == nil {
		t.Error("a name no case holds is not an error")
	}
}
