// Package logging builds the service's slog.Logger: tint's coloured "pretty"
// format with the original guide's emoji at the start of messages, or JSON
// with the same fields and no emoji. Both formats scrub secrets (passwords,
// tokens, URL credentials) from every message and attribute.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lmittmann/tint"
)

// The emoji that open log messages, as in the original app's Redis guide.
const (
	Config  = "🔧"
	Connect = "🔌"
	OK      = "✅"
	Fail    = "❌"
	Lookup  = "🔍"
	Write   = "💾"
	Delete  = "🗑️"
	Stats   = "📊"
	Warn    = "⚠️"
)

// Format is a log output format.
type Format string

// The formats LOG_FORMAT accepts.
const (
	Pretty Format = "pretty"
	JSON   Format = "json"
)

// Options configures New.
type Options struct {
	// Format is pretty or json. Defaults to pretty when w is a terminal, json otherwise.
	Format Format
	// Level is the minimum level. Defaults to info.
	Level slog.Level
	// Secrets are strings (passwords, tokens) that never appear in output.
	Secrets []string
}

// ParseFormat checks a LOG_FORMAT value; "" means "choose by terminal".
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case "", Pretty, JSON:
		return f, nil
	}
	return "", fmt.Errorf("must be pretty or json, not %q", s)
}

// ParseLevel checks a LOG_LEVEL value (debug, info, warn, error).
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("must be debug, info, warn or error, not %q", s)
	}
	return l, nil
}

// New returns a logger writing to w.
func New(w io.Writer, o Options) *slog.Logger {
	if o.Format == "" {
		o.Format = JSON
		if isTerminal(w) {
			o.Format = Pretty
		}
	}
	r := newRedactor(o.Secrets)
	var h slog.Handler
	if o.Format == Pretty {
		h = tint.NewTextHandler(w, &tint.Options{Level: o.Level, ReplaceAttr: r.attr, NoColor: !isTerminal(w)})
	} else {
		h = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: o.Level, ReplaceAttr: r.attr})
	}
	return slog.New(&handler{next: h, r: r, stripEmoji: o.Format == JSON})
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// handler scrubs the message (attributes are scrubbed by ReplaceAttr) and,
// for JSON, removes the leading emoji.
type handler struct {
	next       slog.Handler
	r          *redactor
	stripEmoji bool
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	msg := h.r.scrub(rec.Message)
	if h.stripEmoji {
		msg = StripEmoji(msg)
	}
	out := slog.NewRecord(rec.Time, rec.Level, msg, rec.PC)
	rec.Attrs(func(a slog.Attr) bool { out.AddAttrs(a); return true })
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &handler{next: h.next.WithAttrs(as), r: h.r, stripEmoji: h.stripEmoji}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), r: h.r, stripEmoji: h.stripEmoji}
}

// StripEmoji removes leading symbols (emoji, variation selectors) and spaces.
func StripEmoji(s string) string {
	for s != "" {
		r, n := utf8.DecodeRuneInString(s)
		if unicode.IsLetter(r) || unicode.IsDigit(r) || r < 0x80 && r != ' ' {
			break
		}
		s = s[n:]
	}
	return s
}

// redactor replaces secrets and URL credentials in text.
type redactor struct{ secrets []string }

// Redacted is what stands where a secret was.
const Redacted = "xxxxx"

func newRedactor(secrets []string) *redactor {
	r := &redactor{}
	for _, s := range secrets {
		if s != "" {
			r.secrets = append(r.secrets, s, url.QueryEscape(s), url.PathEscape(s))
		}
	}
	// Longest first, so a secret that holds another is replaced whole.
	slices.SortFunc(r.secrets, func(a, b string) int { return len(b) - len(a) })
	return r
}

// userinfo matches the credentials part of scheme://user:pass@host.
var userinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@\s]+)@`)

func (r *redactor) scrub(s string) string {
	for _, sec := range r.secrets {
		if sec != "" && strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, Redacted)
		}
	}
	return userinfo.ReplaceAllString(s, "${1}"+Redacted+"@")
}

func (r *redactor) attr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindDuration:
		a.Value = slog.StringValue(a.Value.Duration().String()) // "5s", not nanoseconds
	case slog.KindString:
		a.Value = slog.StringValue(r.scrub(a.Value.String()))
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case error:
			a.Value = slog.StringValue(r.scrub(v.Error()))
		case fmt.Stringer:
			a.Value = slog.StringValue(r.scrub(v.String()))
		default:
			// Maps, slices and structs: printed as text when that hides something.
			if s := fmt.Sprintf("%+v", v); r.scrub(s) != s {
				a.Value = slog.StringValue(r.scrub(s))
			}
		}
	}
	return a
}

// RedactURL returns u with any password replaced, for printing.
func RedactURL(u string) string { return newRedactor(nil).scrub(u) }
