package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats-server/v2/server"
)

// natsWithoutJetStream starts an in-process NATS server with JetStream off.
func natsWithoutJetStream(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("NATS without JetStream not ready after 10s")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// errorLines are the lines of stderr that the command itself printed (its
// final error), as opposed to log records.
func errorLines(stderr string) []string {
	var out []string
	for _, l := range lines(stderr) {
		if strings.HasPrefix(l, "invalidator: ") {
			out = append(out, l)
		}
	}
	return out
}

// failsWithOneErrorLine waits for p to exit with exitFailure, having
// printed one error line that says each of want (in any case).
func failsWithOneErrorLine(t *testing.T, p *testproc.Proc, want []string) {
	t.Helper()
	if code := p.Wait(t, 20*time.Second); code != exitFailure {
		t.Fatalf("exit code %d, want %d", code, exitFailure)
	}
	errs := errorLines(p.Stderr.String())
	if len(errs) != 1 {
		t.Fatalf("%d error lines, want 1:\n%s", len(errs), p.Stderr)
	}
	for _, w := range want {
		if !strings.Contains(strings.ToLower(errs[0]), strings.ToLower(w)) {
			t.Errorf("error line %q does not say %q", errs[0], w)
		}
	}
}

// Mistakes that waiting cannot heal stop the worker at start with exit 1
// and one line that says what to do, instead of waiting forever.
func TestStartFailsFastOnMistakes(t *testing.T) {
	t.Parallel()
	testproc.Binary(t)
	const password = "r1ght-Pa55"
	r := testserver.Redis(t, testserver.WithPassword(password))
	ns := testserver.NATSWith(t, servers.NATSOptions{Username: "svc", Password: password})
	natsHost := strings.TrimPrefix(ns.ClientURL(), "nats://")
	goodRedis, goodNATS := r.URL(), fmt.Sprintf("nats://svc:%s@%s", password, natsHost)
	noJS := natsWithoutJetStream(t)
	tests := []struct {
		name       string
		redis, nat string
		want       []string // what the one error line holds
	}{
		{
			name:  "wrong Redis password",
			redis: strings.Replace(goodRedis, password, "wr0ng-Pa55", 1), nat: goodNATS,
			want: []string{"Redis", "refused", "password", "REDIS_URL"},
		},
		{
			name:  "no Redis password",
			redis: strings.Replace(goodRedis, ":"+password+"@", "", 1), nat: goodNATS,
			want: []string{"Redis", "REDIS_URL"},
		},
		{
			name:  "wrong NATS password",
			redis: goodRedis, nat: fmt.Sprintf("nats://svc:wr0ng-Pa55@%s", natsHost),
			want: []string{"NATS", "authorization", "NATS_URL"},
		},
		{
			name:  "NATS without JetStream",
			redis: goodRedis, nat: noJS.ClientURL(),
			want: []string{"JetStream", "-js"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testproc.Start(t, []string{"REDIS_URL=" + tt.redis, "NATS_URL=" + tt.nat, "INVALIDATOR_RULES=" + absRules(t),
				"HTTP_ADDR=", "LOG_FORMAT=json"}, "run")
			failsWithOneErrorLine(t, p, tt.want)
			if strings.Contains(p.Stderr.String(), "wr0ng-Pa55") || strings.Contains(p.Stderr.String(), password) {
				t.Errorf("stderr shows a password:\n%s", p.Stderr)
			}
		})
	}
}

// A server that is down at start is waited for, as before: only mistakes
// fail fast.
func TestStartWaitsForServersThatAreDown(t *testing.T) {
	t.Parallel()
	testproc.Binary(t)
	r := testserver.Redis(t)
	ns := testserver.NATS(t)
	down := freePort(t)
	tests := []struct {
		name, redis, nat, want string
	}{
		{"Redis down", fmt.Sprintf("redis://127.0.0.1:%d/0", down), ns.ClientURL(), "Redis not reachable yet"},
		{"NATS down", r.URL(), fmt.Sprintf("nats://127.0.0.1:%d", down), "NATS not reachable yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testproc.Start(t, []string{"REDIS_URL=" + tt.redis, "NATS_URL=" + tt.nat, "INVALIDATOR_RULES=" + absRules(t),
				"HTTP_ADDR=", "LOG_FORMAT=json", "REDIS_SOCKET_CONNECT_TIMEOUT=500ms"}, "run")
			p.WaitLog(t, tt.want, 20*time.Second)
			time.Sleep(2 * time.Second) // still waiting, not failed
			select {
			case <-p.Exited():
				t.Fatalf("exited with %d, want it to wait for the server", p.ExitCode())
			default:
			}
			p.Signal(t, syscall.SIGTERM)
			if code := p.Wait(t, 30*time.Second); code != exitOK {
				t.Errorf("exit code after SIGTERM %d, want 0", code)
			}
		})
	}
}

// purge and publish with the server down print their own error, one line,
// and no go-redis or NATS client log lines before it.
func TestClientCommandsPrintOneLineWhenTheServerIsDown(t *testing.T) {
	t.Parallel()
	testproc.Binary(t)
	down := freePort(t)
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"purge", []string{fmt.Sprintf("REDIS_URL=redis://:s3cret@127.0.0.1:%d/0", down)}, []string{"purge", "user:1:*"}, "purge"},
		{"purge --dry-run", []string{fmt.Sprintf("REDIS_URL=redis://127.0.0.1:%d/0", down)}, []string{"purge", "--dry-run", "user:*"}, "purge --dry-run"},
		{"publish", []string{fmt.Sprintf("NATS_URL=nats://127.0.0.1:%d", down)}, []string{"publish", "events.course.updated", `{"course_id":"1"}`}, "connect to NATS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testproc.Start(t, tt.env, tt.args...)
			if code := p.Wait(t, 60*time.Second); code != exitFailure {
				t.Errorf("exit code %d, want %d", code, exitFailure)
			}
			got := lines(p.Stderr.String())
			if len(got) != 1 || !strings.HasPrefix(got[0], "invalidator: "+tt.want) {
				t.Errorf("stderr is not one line starting %q:\n%s", "invalidator: "+tt.want, p.Stderr)
			}
			if strings.Contains(p.Stderr.String(), "s3cret") {
				t.Errorf("stderr shows the password:\n%s", p.Stderr)
			}
		})
	}
}
