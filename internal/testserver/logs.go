package testserver

import (
	"context"
	"log/slog"
	"strings"
	"sync"
)

// Logs is a slog.Handler that keeps every record logged through it as one
// line: the message, then each attribute as key=value. Tests read the lines
// back with Find and Containing.
type Logs struct {
	mu    sync.Mutex
	lines []string
}

// Enabled reports true: every level is kept.
func (l *Logs) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps r as one line.
func (l *Logs) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	return nil
}

// WithAttrs returns l: the attributes of a derived logger are not kept.
func (l *Logs) WithAttrs([]slog.Attr) slog.Handler { return l }

// WithGroup returns l.
func (l *Logs) WithGroup(string) slog.Handler { return l }

// Find returns the first line containing s, or "".
func (l *Logs) Find(s string) string {
	if found := l.Containing(s); len(found) > 0 {
		return found[0]
	}
	return ""
}

// Containing returns the lines containing s, in the order logged (every
// line for s == "").
func (l *Logs) Containing(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}
