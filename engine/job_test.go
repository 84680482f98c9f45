package engine_test

import (
	"fmt"
	"testing"

	"github.com/invalidator/invalidator/engine"
)

func TestParseJob(t *testing.T) {
	tests := []struct {
		name    string
		given   []string
		want    string
		wantErr bool
	}{
		{name: "exact and pattern", given: []string{"user:42", "cache:course_analytics:*"}, want: "[user:42] [cache:course_analytics:*]"},
		{name: "nothing", given: nil, want: "[] []"},
		{name: "a bare glob", given: []string{"*"}, wantErr: true},
		{name: "a glob before the first ':'", given: []string{"user*:1"}, wantErr: true},
		{name: "a placeholder", given: []string{"user:{id}"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, err := engine.ParseJob(tt.given)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got := fmt.Sprint(job.Exact, job.Patterns); err == nil && got != tt.want {
				t.Errorf("job %s, want %s", got, tt.want)
			}
		})
	}
}
