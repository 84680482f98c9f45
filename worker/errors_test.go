package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

func TestTruncateKeepsUTF8(t *testing.T) {
	tests := []struct {
		name, given string
		n           int
		want        string
	}{
		{"short", "abc", 10, "abc"},
		{"ascii", "abcdef", 3, "abc"},
		{"inside a rune", "ab€cd", 4, "ab"}, // € is 3 bytes at 2..4
		{"after a rune", "ab€cd", 5, "ab€"},
		{"emoji", "❌❌", 4, "❌"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := truncate(tt.given, tt.n)
			if got != tt.want || !utf8.ValidString(got) {
				t.Errorf("truncate(%q, %d) = %q, want %q", tt.given, tt.n, got, tt.want)
			}
		})
	}
}

func TestAtLeast(t *testing.T) {
	tests := []struct {
		given string
		want  bool
	}{
		{"2.9.10", false}, {"2.10.3", false}, {"2.10.4", true}, {"2.10.10", true}, {"2.11.0", true},
		{"v2.15.2", true}, {"3.0.0", true}, {"2.10.4-beta.1", true}, {"", false}, {"garbage", false},
	}
	for _, tt := range tests {
		if got := atLeast(tt.given, termWithReasonSince); got != tt.want {
			t.Errorf("atLeast(%q) = %v, want %v", tt.given, got, tt.want)
		}
	}
}

func TestTransient(t *testing.T) {
	tests := []struct {
		name  string
		given error
		want  bool
	}{
		{"nil", nil, false},
		{"eof", fmt.Errorf("unlink: %w", io.EOF), true},
		{"deadline", context.DeadlineExceeded, true},
		{"pool timeout", redis.ErrPoolTimeout, true},
		{"nil reply", redis.Nil, false},
		{"plain", errors.New("boom"), false},
	}
	for _, tt := range tests {
		if got := transient(tt.given); got != tt.want {
			t.Errorf("%s: transient(%v) = %v, want %v", tt.name, tt.given, got, tt.want)
		}
	}
}

// While Redis is down the gate pings at least once a second, so the worker
// resumes within a second of Redis answering (a schedule, not a clock).
func TestDownWaitIsAtMostOneSecond(t *testing.T) {
	prev := time.Duration(0)
	for failures := 1; failures <= 100; failures++ {
		d := downWait(failures)
		if d < prev || d > time.Second || d < 100*time.Millisecond {
			t.Fatalf("downWait(%d) = %s after %s: want non-decreasing, in [100ms, 1s]", failures, d, prev)
		}
		prev = d
	}
	if downWait(1) != 100*time.Millisecond || downWait(100) != time.Second {
		t.Errorf("downWait runs %s … %s, want 100ms … 1s", downWait(1), downWait(100))
	}
}
