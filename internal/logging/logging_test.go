package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/internal/logging"
)

// record logs with a fresh logger of the given format and returns the output.
func record(t *testing.T, o logging.Options, log func(*slog.Logger)) string {
	t.Helper()
	var buf bytes.Buffer
	log(logging.New(&buf, o))
	return buf.String()
}

// decodeJSON returns the one JSON record in out.
func decodeJSON(t *testing.T, out string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("not one JSON record: %v\n%s", err, out)
	}
	return m
}

func TestJSONDropsTheEmojiAndKeepsTheAttributes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given string
		want  string
	}{
		{"tool", logging.Config + " configuration loaded", "configuration loaded"},
		{"variation selector", logging.Delete + " keys removed", "keys removed"},
		{"warning sign", logging.Warn + " Redis unreachable", "Redis unreachable"},
		{"no emoji", "plain message", "plain message"},
		{"digits first", "42 keys removed", "42 keys removed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := record(t, logging.Options{Format: logging.JSON}, func(l *slog.Logger) {
				l.Info(tt.given, slog.String("rules", "testdata/rules.yaml"), slog.Int("rule_count", 4))
			})
			m := decodeJSON(t, out)
			if m["msg"] != tt.want {
				t.Errorf("msg = %q, want %q", m["msg"], tt.want)
			}
			if m["rules"] != "testdata/rules.yaml" || m["rule_count"] != float64(4) || m["level"] != "INFO" {
				t.Errorf("attributes lost: %v", m)
			}
		})
	}
}

func TestPrettyStartsWithTheEmoji(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given string
		want  string
	}{
		{"tool", logging.Config + " configuration loaded", "INFO " + logging.Config + " configuration loaded"},
		{"plug", logging.Connect + " connected to Redis", "INFO " + logging.Connect + " connected to Redis"},
		{"variation selector", logging.Delete + " keys removed", "INFO " + logging.Delete + " keys removed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := record(t, logging.Options{Format: logging.Pretty}, func(l *slog.Logger) {
				l.Info(tt.given, slog.String("rules", "testdata/rules.yaml"))
			})
			if !strings.Contains(out, tt.want) || !strings.Contains(out, "rules=testdata/rules.yaml") {
				t.Errorf("output %q does not hold %q and the attribute", out, tt.want)
			}
			if strings.Count(out, "\n") != 1 {
				t.Errorf("want one line, got %q", out)
			}
		})
	}
}

// An empty Format on a writer that is not a terminal is JSON.
func TestDefaultFormatOffTerminalIsJSON(t *testing.T) {
	t.Parallel()
	out := record(t, logging.Options{}, func(l *slog.Logger) { l.Info(logging.OK + " worker started") })
	if m := decodeJSON(t, out); m["msg"] != "worker started" {
		t.Errorf("msg = %q", m["msg"])
	}
}

func TestLevelFilters(t *testing.T) {
	t.Parallel()
	out := record(t, logging.Options{Format: logging.JSON, Level: slog.LevelWarn}, func(l *slog.Logger) {
		l.Info("hidden")
		l.Warn("shown")
	})
	if strings.Contains(out, "hidden") || !strings.Contains(out, "shown") {
		t.Errorf("level warn wrote %q", out)
	}
}

type stringer string

func (s stringer) String() string { return string(s) }

func TestSecretsAreScrubbed(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-secret"
	const escaped = "p@ss/w0rd" // appears URL-escaped
	tests := []struct {
		name  string
		given func(*slog.Logger)
		want  string // what must be there instead
	}{
		{
			name:  "message",
			given: func(l *slog.Logger) { l.Info("login with " + secret) },
			want:  "login with " + logging.Redacted,
		},
		{
			name:  "string attribute",
			given: func(l *slog.Logger) { l.Info("login", slog.String("password", secret)) },
			want:  logging.Redacted,
		},
		{
			name: "error attribute",
			given: func(l *slog.Logger) {
				l.Warn("failed", slog.Any("error", fmt.Errorf("auth %s: %w", secret, errors.New("denied"))))
			},
			want: "auth " + logging.Redacted + ": denied",
		},
		{
			name:  "stringer attribute",
			given: func(l *slog.Logger) { l.Info("opts", slog.Any("opts", stringer("token="+secret))) },
			want:  "token=" + logging.Redacted,
		},
		{
			name:  "WithAttrs",
			given: func(l *slog.Logger) { l.With(slog.String("token", secret)).Info("request") },
			want:  logging.Redacted,
		},
		{
			name:  "WithAttrs error",
			given: func(l *slog.Logger) { l.With(slog.Any("error", errors.New(secret))).Info("request") },
			want:  logging.Redacted,
		},
		{
			name:  "group",
			given: func(l *slog.Logger) { l.Info("conn", slog.Group("redis", slog.String("password", secret))) },
			want:  logging.Redacted,
		},
		{
			name:  "WithGroup",
			given: func(l *slog.Logger) { l.WithGroup("nats").Info("conn", slog.Any("error", errors.New("bad "+secret))) },
			want:  "bad " + logging.Redacted,
		},
		{
			name:  "query-escaped form",
			given: func(l *slog.Logger) { l.Info("sent", slog.String("body", "token="+url.QueryEscape(escaped))) },
			want:  "token=" + logging.Redacted,
		},
		{
			name: "redis logger",
			given: func(l *slog.Logger) {
				logging.RedisLogger{Log: l}.Printf(context.Background(), "auth %s failed", secret)
			},
			want: "auth " + logging.Redacted + " failed",
		},
	}
	for _, format := range []logging.Format{logging.JSON, logging.Pretty} {
		for _, tt := range tests {
			t.Run(string(format)+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				o := logging.Options{Format: format, Level: slog.LevelDebug, Secrets: []string{"", secret, escaped}}
				out := record(t, o, tt.given)
				if strings.Contains(out, "hunter2") || strings.Contains(out, "w0rd") {
					t.Errorf("secret in output: %s", out)
				}
				if !strings.Contains(out, tt.want) {
					t.Errorf("output does not hold %q: %s", tt.want, out)
				}
			})
		}
	}
}

func TestURLCredentialsAreScrubbedUnlisted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given func(*slog.Logger)
		want  string
	}{
		{
			name:  "message",
			given: func(l *slog.Logger) { l.Info("dial redis://user:pw-unlisted@cache:6379/0 failed") },
			want:  "redis://" + logging.Redacted + "@cache:6379/0",
		},
		{
			name:  "string attribute",
			given: func(l *slog.Logger) { l.Info("dial", slog.String("url", "rediss://:pw-unlisted@cache:6380")) },
			want:  "rediss://" + logging.Redacted + "@cache:6380",
		},
		{
			name: "error attribute",
			given: func(l *slog.Logger) {
				l.Info("dial", slog.Any("error", errors.New("nats://tok-pw-unlisted@nats:4222: refused")))
			},
			want: "nats://" + logging.Redacted + "@nats:4222",
		},
		{
			name: "second URL of a list",
			given: func(l *slog.Logger) {
				l.Info("servers", slog.String("url", "nats://a:4222,nats://u:pw-unlisted@b:4222"))
			},
			want: "nats://a:4222,nats://" + logging.Redacted + "@b:4222",
		},
	}
	for _, format := range []logging.Format{logging.JSON, logging.Pretty} {
		for _, tt := range tests {
			t.Run(string(format)+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				out := record(t, logging.Options{Format: format}, tt.given)
				if strings.Contains(out, "pw-unlisted") {
					t.Errorf("credentials in output: %s", out)
				}
				if !strings.Contains(out, tt.want) {
					t.Errorf("output does not hold %q: %s", tt.want, out)
				}
			})
		}
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given string
		want  string
	}{
		{"user and password", "redis://user:pw@host:6379/0", "redis://xxxxx@host:6379/0"},
		{"password only", "redis://:pw@host", "redis://xxxxx@host"},
		{"token", "nats://tok@host:4222", "nats://xxxxx@host:4222"},
		{"no credentials", "redis://host:6379/0", "redis://host:6379/0"},
		{"at sign in the path", "http://host/a@b", "http://host/a@b"},
		{"not a URL", "localhost:6379", "localhost:6379"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := logging.RedactURL(tt.given); got != tt.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tt.given, got, tt.want)
			}
		})
	}
}

func TestStripEmoji(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given string
		want  string
	}{
		{"emoji", "🔧 configuration loaded", "configuration loaded"},
		{"emoji with variation selector", "⚠️ careful", "careful"},
		{"two emoji", "✅🗑️ done", "done"},
		{"leading spaces", "  text", "text"},
		{"plain", "text", "text"},
		{"punctuation kept", "(x)", "(x)"},
		{"non-ASCII letter kept", "émoji", "émoji"},
		{"empty", "", ""},
		{"only emoji", "🔧", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := logging.StripEmoji(tt.given); got != tt.want {
				t.Errorf("StripEmoji(%q) = %q, want %q", tt.given, got, tt.want)
			}
		})
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   string
		want    slog.Level
		wantErr bool
	}{
		{"empty is info", "", slog.LevelInfo, false},
		{"debug", "debug", slog.LevelDebug, false},
		{"info", "info", slog.LevelInfo, false},
		{"warn", "warn", slog.LevelWarn, false},
		{"error", "error", slog.LevelError, false},
		{"upper case", "DEBUG", slog.LevelDebug, false},
		{"unknown", "loud", 0, true},
		{"number", "3", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := logging.ParseLevel(tt.given)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseLevel(%q) error = %v, wantErr %v", tt.given, err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.given)) {
					t.Errorf("error %q does not quote the value", err)
				}
				return
			}
			if got != tt.want {
				t.Errorf("ParseLevel(%q) = %v, want %v", tt.given, got, tt.want)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   string
		want    logging.Format
		wantErr bool
	}{
		{"empty chooses by terminal", "", "", false},
		{"pretty", "pretty", logging.Pretty, false},
		{"json", "json", logging.JSON, false},
		{"upper case", "JSON", logging.JSON, false},
		{"unknown", "xml", "", true},
		{"text is not a format", "text", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := logging.ParseFormat(tt.given)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseFormat(%q) error = %v, wantErr %v", tt.given, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseFormat(%q) = %q, want %q", tt.given, got, tt.want)
			}
		})
	}
}

// A secret that holds another is replaced whole, and secrets inside maps,
// slices and structs are scrubbed too.
func TestSecretsNestedAndInComposites(t *testing.T) {
	for _, format := range []logging.Format{logging.JSON, logging.Pretty} {
		var buf bytes.Buffer
		log := logging.New(&buf, logging.Options{Format: format, Secrets: []string{"tok", "tok-longer-secret"}})
		log.Info("x", slog.String("a", "tok-longer-secret"),
			slog.Any("m", map[string]string{"pw": "tok-longer-secret"}),
			slog.Any("s", []string{"tok"}),
			slog.Any("st", struct{ P string }{"tok-longer-secret"}))
		out := buf.String()
		if strings.Contains(out, "tok") || strings.Contains(out, "longer-secret") {
			t.Errorf("%s output shows a secret: %s", format, out)
		}
	}
}
