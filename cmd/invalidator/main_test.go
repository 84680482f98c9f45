package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

const (
	rulesFile = "../../testdata/rules.yaml"
	warmRules = "testdata/warm-env.yaml" // headers_from_env names WARM_API_AUTH
	// neverMatches has a rule on a two-token subject, which no event has.
	neverMatches = "testdata/never-matches.yaml"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		testproc.Cleanup()
		os.Exit(code)
	}))
}

// given is how a command is called.
type given struct {
	args  []string
	env   map[string]string
	stdin string
	// stdinFile, when set, is standard input instead of stdin.
	stdinFile *os.File
}

// result is what a command did.
type result struct {
	code           int
	stdout, stderr string
}

// cli calls run in-process with a fake environment: only g.env is visible.
func cli(t *testing.T, g given) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	var stdin io.Reader = strings.NewReader(g.stdin)
	if g.stdinFile != nil {
		stdin = g.stdinFile
	}
	e := env{
		stdin:  stdin,
		stdout: &stdout,
		stderr: &stderr,
		getenv: func(k string) string { return g.env[k] },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, e, g.args)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	return slices.DeleteFunc(strings.Split(s, "\n"), func(l string) bool { return l == "" })
}

// brokenRules writes a rules file whose template is a bare glob.
func brokenRules(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broken.yaml")
	body := "rules:\n  - on: events.course.*\n    invalidate: [\"*\"]\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRun(t *testing.T) {
	t.Parallel()
	broken := brokenRules(t)
	tests := []struct {
		name  string
		given given
		want  int
		// wantStdout and wantStderr must each appear in their stream.
		wantStdout, wantStderr []string
		// wantStderrLines, when positive, is the exact number of stderr lines.
		wantStderrLines int
	}{
		{
			name:       "no arguments",
			given:      given{},
			want:       exitUsage,
			wantStderr: []string{"Usage:", "invalidator run"},
		},
		{
			name:       "top-level help",
			given:      given{args: []string{"--help"}},
			want:       exitOK,
			wantStdout: []string{"Usage:", "invalidator run", "invalidator dev", "invalidator publish", "invalidator purge", "invalidator rules", "Exit codes"},
		},
		{
			name:       "help command",
			given:      given{args: []string{"help"}},
			want:       exitOK,
			wantStdout: []string{"Usage:"},
		},
		{
			name:       "run --help",
			given:      given{args: []string{"run", "--help"}},
			want:       exitOK,
			wantStdout: []string{"Usage: invalidator run", "-redis-url", "REDIS_MAX_CONNECTIONS"},
		},
		{
			name:       "dev --help",
			given:      given{args: []string{"dev", "--help"}},
			want:       exitOK,
			wantStdout: []string{"Usage: invalidator dev", "-nats-url"},
		},
		{
			name:       "publish --help",
			given:      given{args: []string{"publish", "--help"}},
			want:       exitOK,
			wantStdout: []string{"Usage: invalidator publish", "-source"},
		},
		{
			name:       "purge --help",
			given:      given{args: []string{"purge", "--help"}},
			want:       exitOK,
			wantStdout: []string{"Usage: invalidator purge", "-dry-run"},
		},
		{
			name:       "rules --help",
			given:      given{args: []string{"rules", "--help"}},
			want:       exitOK,
			wantStdout: []string{"Usage: invalidator rules"},
		},
		{
			name:       "unknown command",
			given:      given{args: []string{"frobnicate"}},
			want:       exitUsage,
			wantStderr: []string{`unknown command "frobnicate"`},
		},
		{
			// Refused with the other settings: one line, before any connection
			// (nothing listens on port 1, so a connection would log).
			name: "run with GENERATIONS off and warm rules",
			given: given{args: []string{"run"}, env: map[string]string{"INVALIDATOR_RULES": warmRules, "GENERATIONS": "off",
				"WARM_API_AUTH": "Bearer s3cret", "REDIS_URL": "redis://127.0.0.1:1", "NATS_URL": "nats://127.0.0.1:1"}},
			want:            exitUsage,
			wantStderr:      []string{"GENERATIONS: off, but the rules file warms keys"},
			wantStderrLines: 1,
		},
		{
			name:            "run with an unknown flag",
			given:           given{args: []string{"run", "--no-such-flag"}},
			want:            exitUsage,
			wantStderr:      []string{"no-such-flag"},
			wantStderrLines: 1,
		},
		{
			name:            "run with arguments",
			given:           given{args: []string{"run", "extra"}},
			want:            exitUsage,
			wantStderr:      []string{`"extra"`},
			wantStderrLines: 1,
		},
		{
			name:            "run with a bad variable",
			given:           given{args: []string{"run"}, env: map[string]string{"REDIS_MAX_CONNECTIONS": "abc"}},
			want:            exitUsage,
			wantStderr:      []string{"REDIS_MAX_CONNECTIONS"},
			wantStderrLines: 1,
		},
		{
			name:            "run with a bad flag value names the flag",
			given:           given{args: []string{"run", "--redis-max-connections=abc"}},
			want:            exitUsage,
			wantStderr:      []string{"-redis-max-connections"},
			wantStderrLines: 1,
		},
		{
			name:            "run with a bad consistency sample",
			given:           given{args: []string{"run"}, env: map[string]string{"CONSISTENCY_SAMPLE": "2"}},
			want:            exitUsage,
			wantStderr:      []string{"CONSISTENCY_SAMPLE"},
			wantStderrLines: 1,
		},
		{
			name:            "dev with bad consistency delays",
			given:           given{args: []string{"dev", "--consistency-delays=1s,1s"}},
			want:            exitUsage,
			wantStderr:      []string{"-consistency-delays"},
			wantStderrLines: 1,
		},
		{
			name:            "dev with a bad variable",
			given:           given{args: []string{"dev"}, env: map[string]string{"LOG_FORMAT": "xml"}},
			want:            exitUsage,
			wantStderr:      []string{"LOG_FORMAT"},
			wantStderrLines: 1,
		},
		{
			name:            "run without a rules file",
			given:           given{args: []string{"run"}},
			want:            exitUsage,
			wantStderr:      []string{"INVALIDATOR_RULES", "must name the rules file"},
			wantStderrLines: 1,
		},
		{
			name: "run with a bad HTTP_ADDR stops before connecting",
			given: given{args: []string{"run"}, env: map[string]string{"INVALIDATOR_RULES": rulesFile, "HTTP_ADDR": "notaport",
				"REDIS_URL": "redis://127.0.0.1:1/0", "NATS_URL": "nats://127.0.0.1:1"}},
			want:            exitUsage,
			wantStderr:      []string{"HTTP_ADDR", `"notaport"`},
			wantStderrLines: 1,
		},
		{
			name:            "rules check of a filter that never matches",
			given:           given{args: []string{"rules", "check", neverMatches}},
			want:            exitUsage,
			wantStderr:      []string{neverMatches, `on "events.course"`, "can never match"},
			wantStderrLines: 1,
		},
		{
			name:            "run with a filter that never matches",
			given:           given{args: []string{"run"}, env: map[string]string{"INVALIDATOR_RULES": neverMatches}},
			want:            exitUsage,
			wantStderr:      []string{"can never match"},
			wantStderrLines: 1,
		},
		{
			name:            "rules check names an unset headers_from_env variable",
			given:           given{args: []string{"rules", "check", warmRules}},
			want:            exitOK,
			wantStdout:      []string{"rules, OK", "$WARM_API_AUTH"},
			wantStderr:      []string{"⚠️", "not set", "WARM_API_AUTH", "--require-env"},
			wantStderrLines: 1,
		},
		{
			name:            "rules check --require-env refuses an unset headers_from_env variable",
			given:           given{args: []string{"rules", "check", "--require-env", warmRules}},
			want:            exitUsage,
			wantStderr:      []string{"WARM_API_AUTH", "not set"},
			wantStderrLines: 1,
		},
		{
			name:       "rules check --require-env with the variable set",
			given:      given{args: []string{"rules", "check", warmRules, "--require-env"}, env: map[string]string{"WARM_API_AUTH": "Bearer s3cret"}},
			want:       exitOK,
			wantStdout: []string{"rules, OK"},
		},
		{
			name:            "run with a broken rules file",
			given:           given{args: []string{"run"}, env: map[string]string{"INVALIDATOR_RULES": broken}},
			want:            exitUsage,
			wantStderr:      []string{broken},
			wantStderrLines: 1,
		},
		{
			name:            "run with a missing rules file",
			given:           given{args: []string{"run"}, env: map[string]string{"INVALIDATOR_RULES": broken + ".missing"}},
			want:            exitUsage,
			wantStderr:      []string{broken + ".missing"},
			wantStderrLines: 1,
		},
		{
			name:       "rules check",
			given:      given{args: []string{"rules", "check", rulesFile}},
			want:       exitOK,
			wantStdout: []string{"rules, OK", "on events.course.*", "  exact   cache:course_analytics:{course_id}", "  pattern cache:course_analytics:{course_id}:*", "on events.user.>", "explicit"},
		},
		{
			name:            "rules check on a broken file",
			given:           given{args: []string{"rules", "check", broken}},
			want:            exitUsage,
			wantStderr:      []string{broken},
			wantStderrLines: 1,
		},
		{
			name:       "rules explain",
			given:      given{args: []string{"rules", "explain", rulesFile, "events.course.updated", `{"course_id":"42"}`}},
			want:       exitOK,
			wantStdout: []string{"exact   cache:course_analytics:42\n", "pattern cache:course_analytics:42:*\n", "pattern cache:system_stats:*\n"},
		},
		{
			name:       "rules explain of an event no rule matches",
			given:      given{args: []string{"rules", "explain", rulesFile, "events.invoice.paid", `{"invoice_id":"1"}`}},
			want:       exitOK,
			wantStdout: []string{"no rule matches"},
		},
		{
			name:       "rules explain of a glob value",
			given:      given{args: []string{"rules", "explain", rulesFile, "events.course.updated", `{"course_id":"*"}`}},
			want:       exitFailure,
			wantStdout: []string{"rejected"},
		},
		{
			name:       "rules explain of a missing field",
			given:      given{args: []string{"rules", "explain", rulesFile, "events.course.updated", `{}`}},
			want:       exitFailure,
			wantStdout: []string{"rejected: field course_id"},
		},
		{
			name:       "rules without a subcommand",
			given:      given{args: []string{"rules"}},
			want:       exitUsage,
			wantStderr: []string{"usage: invalidator rules"},
		},
		{
			name:            "publish to an invalid subject",
			given:           given{args: []string{"publish", "events.course.*", `{"course_id":"42"}`}},
			want:            exitUsage,
			wantStderr:      []string{"events.course.*"},
			wantStderrLines: 1,
		},
		{
			name:            "publish an array",
			given:           given{args: []string{"publish", "events.course.updated", "[1]"}},
			want:            exitUsage,
			wantStderr:      []string{"JSON object"},
			wantStderrLines: 1,
		},
		{
			name:            "publish bad JSON from stdin",
			given:           given{args: []string{"publish", "events.course.updated"}, stdin: "{nope"},
			want:            exitUsage,
			wantStderr:      []string{"JSON object"},
			wantStderrLines: 1,
		},
		{
			name:            "publish an array",
			given:           given{args: []string{"publish", "events.course.updated", "[1]"}},
			want:            exitUsage,
			wantStderr:      []string{"event data must be a JSON object: got an array"},
			wantStderrLines: 1,
		},
		{
			name:            "publish without a subject",
			given:           given{args: []string{"publish"}},
			want:            exitUsage,
			wantStderrLines: 1,
		},
		{
			name:            "purge without a pattern",
			given:           given{args: []string{"purge"}},
			want:            exitUsage,
			wantStderrLines: 1,
		},
		{
			name:            "purge of a placeholder",
			given:           given{args: []string{"purge", "user:{id}"}},
			want:            exitUsage,
			wantStderr:      []string{"{id}"},
			wantStderrLines: 1,
		},
		{
			name:            "purge reads the pool settings",
			given:           given{args: []string{"purge", "user:1"}, env: map[string]string{"REDIS_MAX_CONNECTIONS": "lots"}},
			want:            exitUsage,
			wantStderr:      []string{"REDIS_MAX_CONNECTIONS"},
			wantStderrLines: 1,
		},
		{
			name:            "purge reads SCAN_COUNT",
			given:           given{args: []string{"purge", "user:1"}, env: map[string]string{"SCAN_COUNT": "0"}},
			want:            exitUsage,
			wantStderr:      []string{"SCAN_COUNT"},
			wantStderrLines: 1,
		},
		{
			name:            "publish checks NATS_URL",
			given:           given{args: []string{"publish", "events.course.updated", "{}"}, env: map[string]string{"NATS_URL": "http://u:s3cret@x"}},
			want:            exitUsage,
			wantStderr:      []string{"NATS_URL"},
			wantStderrLines: 1,
		},
		{
			name:            "purge with a bad Redis URL hides the password",
			given:           given{args: []string{"purge", "user:1"}, env: map[string]string{"REDIS_URL": "redis://:s3cret@host:x/0"}},
			want:            exitUsage,
			wantStderr:      []string{"REDIS_URL"},
			wantStderrLines: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := cli(t, tt.given)
			if got.code != tt.want {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", got.code, tt.want, got.stdout, got.stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(got.stdout, w) {
					t.Errorf("stdout does not hold %q:\n%s", w, got.stdout)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(got.stderr, w) {
					t.Errorf("stderr does not hold %q:\n%s", w, got.stderr)
				}
			}
			if n := len(lines(got.stderr)); tt.wantStderrLines > 0 && n != tt.wantStderrLines {
				t.Errorf("stderr has %d lines, want %d:\n%s", n, tt.wantStderrLines, got.stderr)
			}
			if strings.Count(got.stdout+got.stderr, "rejected:") > 1 {
				t.Errorf("output repeats the prefix %q:\n%s%s", "rejected:", got.stdout, got.stderr)
			}
			if strings.Contains(got.stdout+got.stderr, "s3cret") {
				t.Errorf("output shows a password:\n%s%s", got.stdout, got.stderr)
			}
		})
	}
}

func TestPurge(t *testing.T) {
	t.Parallel()
	all := []string{"user:1", "user:1:a", "user:1:b", "user:10", "user:10:a"}
	tests := []struct {
		name       string
		given      []string
		want       int
		wantStdout []string
		wantKeys   []string // the keys left
	}{
		{
			name:       "pattern",
			given:      []string{"purge", "user:1:*"},
			want:       exitOK,
			wantStdout: []string{"removed 2"},
			wantKeys:   []string{"user:1", "user:10", "user:10:a"},
		},
		{
			name:       "exact key and pattern",
			given:      []string{"purge", "user:1", "user:10:*"},
			want:       exitOK,
			wantStdout: []string{"removed 2"},
			wantKeys:   []string{"user:1:a", "user:1:b", "user:10"},
		},
		{
			name:       "dry run after the pattern",
			given:      []string{"purge", "user:1:*", "--dry-run"},
			want:       exitOK,
			wantStdout: []string{"user:1:a\n", "user:1:b\n", "would remove 2"},
			wantKeys:   all,
		},
		{
			// The exact key's generation is removed (none was there), the
			// pattern scope's takes a new token.
			name:       "generations moved before removing",
			given:      []string{"purge", "user:1", "user:10:*", "--generations"},
			want:       exitOK,
			wantStdout: []string{"removed 2"},
			wantKeys:   []string{"invalidator:gen:user:10:", "user:1:a", "user:1:b", "user:10"},
		},
		{
			name:     "a bare glob is refused",
			given:    []string{"purge", "*"},
			want:     exitUsage,
			wantKeys: all,
		},
		{
			name:     "a glob before the separator is refused",
			given:    []string{"purge", "user*"},
			want:     exitUsage,
			wantKeys: all,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := testserver.Redis(t)
			rdb := testserver.RedisClient(t, r)
			ctx := context.Background()
			for _, k := range all {
				if err := rdb.Set(ctx, k, "v", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			got := cli(t, given{args: tt.given, env: map[string]string{"REDIS_URL": r.URL()}})
			if got.code != tt.want {
				t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", got.code, tt.want, got.stdout, got.stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(got.stdout, w) {
					t.Errorf("stdout does not hold %q:\n%s", w, got.stdout)
				}
			}
			keys, err := rdb.Keys(ctx, "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(keys)
			if want := slices.Sorted(slices.Values(tt.wantKeys)); !slices.Equal(keys, want) {
				t.Errorf("keys left %q, want %q", keys, tt.wantKeys)
			}
		})
	}
}

func TestPublish(t *testing.T) {
	t.Parallel()
	ns := testserver.NATS(t)
	_, js := testserver.JetStream(t, ns)
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"NATS_URL": ns.ClientURL()}
	tests := []struct {
		name      string
		given     given
		want      string // stdout: the stream sequence
		wantEvent events.Event
	}{
		{
			name:      "data from the argument",
			given:     given{args: []string{"publish", "events.course.updated", `{"course_id":"42"}`}, env: env},
			want:      "1\n",
			wantEvent: events.Event{Subject: "events.course.updated", Type: "events.course.updated", Data: map[string]any{"course_id": "42"}},
		},
		{
			name:      "data from stdin, source flag after the subject",
			given:     given{args: []string{"publish", "events.user.updated", "--source", "urn:test"}, env: env, stdin: `{"user_id": 7}`},
			want:      "2\n",
			wantEvent: events.Event{Subject: "events.user.updated", Type: "events.user.updated", Source: "urn:test", Data: map[string]any{"user_id": "7"}},
		},
	}
	// Sequential: each case expects the next sequence.
	for i, tt := range tests {
		got := cli(t, tt.given)
		if got.code != exitOK || got.stdout != tt.want {
			t.Fatalf("%s: exit code %d, stdout %q, want 0 and %q\nstderr: %s", tt.name, got.code, got.stdout, tt.want, got.stderr)
		}
		seq := uint64(i + 1)
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("%s: get message %d: %v", tt.name, seq, err)
		}
		ev, err := events.Decode(msg.Subject, msg.Header.Get(events.HeaderMsgID), msg.Data)
		if err != nil {
			t.Fatalf("%s: decode stored event: %v", tt.name, err)
		}
		if !ev.CloudEvent || ev.SpecVersion != events.SpecVersion || ev.ID == "" || ev.Time.IsZero() {
			t.Errorf("%s: not a complete CloudEvent: %+v", tt.name, ev)
		}
		if msg.Header.Get(events.HeaderMsgID) != ev.ID {
			t.Errorf("%s: %s header %q, event id %q", tt.name, events.HeaderMsgID, msg.Header.Get(events.HeaderMsgID), ev.ID)
		}
		w := tt.wantEvent
		if ev.Subject != w.Subject || ev.Type != w.Type || fmt.Sprint(ev.Data) != fmt.Sprint(w.Data) {
			t.Errorf("%s: stored %+v, want subject %s, type %s, data %v", tt.name, ev, w.Subject, w.Type, w.Data)
		}
		if w.Source != "" && ev.Source != w.Source {
			t.Errorf("%s: source %q, want %q", tt.name, ev.Source, w.Source)
		}
		if w.Source == "" && !strings.HasPrefix(ev.Source, "urn:invalidator:") {
			t.Errorf("%s: default source %q", tt.name, ev.Source)
		}
	}
}

func TestPublishFailures(t *testing.T) {
	t.Parallel()
	ns := testserver.NATS(t) // no stream: nothing listens on events.>
	down, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		given      given
		want       int
		wantStderr string
	}{
		{
			name:       "no stream",
			given:      given{args: []string{"publish", "--timeout=5s", "events.course.updated", `{"course_id":"42"}`}, env: map[string]string{"NATS_URL": ns.ClientURL()}},
			want:       exitFailure,
			wantStderr: "no stream",
		},
		{
			name:       "NATS_CREDS names a missing file",
			given:      given{args: []string{"publish", "events.course.updated", `{"course_id":"42"}`}, env: map[string]string{"NATS_URL": ns.ClientURL(), "NATS_CREDS": "/nonexistent/user.creds"}},
			want:       exitFailure,
			wantStderr: "/nonexistent/user.creds",
		},
		{
			name:       "NATS down",
			given:      given{args: []string{"publish", "events.course.updated", `{"course_id":"42"}`}, env: map[string]string{"NATS_URL": fmt.Sprintf("nats://u:s3cret@127.0.0.1:%d", down)}},
			want:       exitFailure,
			wantStderr: "connect to NATS",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := cli(t, tt.given)
			if got.code != tt.want || !strings.Contains(got.stderr, tt.wantStderr) {
				t.Errorf("exit code %d, stderr %q; want %d and %q", got.code, got.stderr, tt.want, tt.wantStderr)
			}
			if n := len(lines(got.stderr)); n != 1 {
				t.Errorf("stderr has %d lines, want 1", n)
			}
			if strings.Contains(got.stderr, "s3cret") {
				t.Errorf("stderr shows the password: %s", got.stderr)
			}
		})
	}
}

// --help prints the usage once, on stdout, and exits 0; every flag shows
// what kind of value it takes.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := cli(t, given{args: []string{c.name, "--help"}})
			if got.code != exitOK || got.stderr != "" {
				t.Errorf("exit code %d, stderr %q; want 0 and nothing", got.code, got.stderr)
			}
			usage := 0
			for _, l := range lines(got.stdout) {
				if strings.HasPrefix(l, "Usage") {
					usage++
				}
			}
			if usage != 1 {
				t.Errorf("%d Usage lines, want 1:\n%s", usage, got.stdout)
			}
			if strings.Contains(got.stdout, " string\n") {
				t.Errorf("a flag is shown as taking a string, not its kind of value:\n%s", got.stdout)
			}
		})
	}
	got := cli(t, given{args: []string{"run", "--help"}})
	for _, want := range []string{"-ack-wait duration", "-redis-url url", "-concurrency int", "-redis-retry-on-timeout bool", "-rules path", "-http-addr addr"} {
		if !strings.Contains(got.stdout, want+"\n") {
			t.Errorf("run --help lacks %q:\n%s", want, got.stdout)
		}
	}
}
