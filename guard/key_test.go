package guard_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/guard"
)

func ExampleKeys() {
	for _, k := range guard.Keys("cache:course_analytics:42:weekly") {
		fmt.Println(k)
	}
	// Output:
	// invalidator:gen:cache:course_analytics:42:weekly
	// invalidator:gen:cache:
	// invalidator:gen:cache:course_analytics:
	// invalidator:gen:cache:course_analytics:42:
}

func TestClusterKeys(t *testing.T) {
	for _, key := range []string{"cache:user:7", "k", "cache:{x}:y", "a:b:c:d:"} {
		got, want := guard.ClusterKeys(key), guard.Keys(key)
		if cachekeys.Slot(got[0]) != cachekeys.Slot(key) {
			t.Errorf("ClusterKeys(%q)[0] = %q: slot %d, not the key's %d", key, got[0], cachekeys.Slot(got[0]), cachekeys.Slot(key))
		}
		if !slices.Equal(got[1:], want[1:]) {
			t.Errorf("ClusterKeys(%q)[1:] = %q, want the scopes of Keys %q", key, got[1:], want[1:])
		}
	}
}

func TestMemberKey(t *testing.T) {
	if got := guard.MemberKey(guard.Member(guard.NewToken(), "cache:a|b")); got != "cache:a|b" {
		t.Fatalf("MemberKey(Member(t, %q)) = %q", "cache:a|b", got)
	}
}

func TestStamp(t *testing.T) {
	if got := guard.Stamp([]string{"t1", "0"}); got != "@gen t1 0\n" {
		t.Fatalf("Stamp = %q", got)
	}
}
