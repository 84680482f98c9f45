package events_test

import (
	"errors"
	"testing"

	"github.com/invalidator/invalidator/events"
)

func TestValidateSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   string
		wantErr string
	}{
		{name: "course updated", given: "events.course.updated"},
		{name: "enrollment created", given: "events.enrollment.created"},
		{name: "cache invalidate", given: "events.cache.invalidate"},
		{name: "digits dash underscore", given: "events.user_2.soft-deleted"},
		{name: "empty", given: "", wantErr: `events: invalid subject "": has 1 tokens, want 3 (events.<entity>.<action>)`},
		{name: "two tokens", given: "events.course", wantErr: `events: invalid subject "events.course": has 2 tokens, want 3 (events.<entity>.<action>)`},
		{name: "four tokens", given: "events.course.updated.x", wantErr: `events: invalid subject "events.course.updated.x": has 4 tokens, want 3 (events.<entity>.<action>)`},
		{name: "wrong prefix", given: "event.course.updated", wantErr: `events: invalid subject "event.course.updated": first token "event" must be "events"`},
		{name: "upper case", given: "events.Course.x", wantErr: `events: invalid subject "events.Course.x": token "Course" must match [a-z0-9_-]+`},
		{name: "empty token", given: "events..updated", wantErr: `events: invalid subject "events..updated": token "" must match [a-z0-9_-]+`},
		{name: "trailing dot", given: "events.course.", wantErr: `events: invalid subject "events.course.": token "" must match [a-z0-9_-]+`},
		{name: "star wildcard", given: "events.*.updated", wantErr: `events: invalid subject "events.*.updated": token "*" must match [a-z0-9_-]+`},
		{name: "tail wildcard", given: "events.course.>", wantErr: `events: invalid subject "events.course.>": token ">" must match [a-z0-9_-]+`},
		{name: "space", given: "events.course.up dated", wantErr: `events: invalid subject "events.course.up dated": token "up dated" must match [a-z0-9_-]+`},
		{name: "non ascii", given: "events.cours\u00e9.updated", wantErr: `events: invalid subject "events.coursé.updated": token "coursé" must match [a-z0-9_-]+`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := events.ValidateSubject(tt.given)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateSubject(%q) = %v, want nil", tt.given, err)
				}
				return
			}
			if !errors.Is(err, events.ErrInvalidSubject) {
				t.Fatalf("ValidateSubject(%q) = %v, want ErrInvalidSubject", tt.given, err)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("error = %s\nwant    %s", err, tt.wantErr)
			}
		})
	}
}
