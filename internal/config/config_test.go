package config_test

import (
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/internal/logging"
	"github.com/invalidator/invalidator/worker"
)

// given is what a command line and an environment say.
type given struct {
	env  map[string]string
	args []string
}

// load resolves g the way `invalidator dev` does: flags on a fresh flag set,
// the environment through a fake getenv. (dev and run differ only in the
// default of the rules file; see TestRunNeedsRules.)
func load(t *testing.T, g given) (*config.Run, error) {
	t.Helper()
	return loadWith(t, config.DevFlags, g)
}

// loadWith resolves g with one of the Flags functions.
func loadWith[C any](t *testing.T, flags func(*flag.FlagSet, func(string) string) func() (C, error), g given) (C, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	build := flags(fs, func(k string) string { return g.env[k] })
	if err := fs.Parse(g.args); err != nil {
		t.Fatalf("parse %q: %v", g.args, err)
	}
	return build()
}

func env(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// redisConn is the part of the Redis options a URL decides.
type redisConn struct {
	Addr, Username, Password string
	DB                       int
	TLS                      bool
}

func redisConnOf(c *config.Run) any {
	return redisConn{Addr: c.Redis.Addr, Username: c.Redis.Username, Password: c.Redis.Password, DB: c.Redis.DB, TLS: c.Redis.TLSConfig != nil}
}

func TestFlagsDefaults(t *testing.T) {
	t.Parallel()
	c, err := load(t, given{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"RedisURL", c.RedisURL, config.DefaultRedisURL},
		{"Redis connection", redisConnOf(c), redisConn{Addr: "localhost:6379"}},
		{"Redis.PoolSize", c.Redis.PoolSize, config.DefaultMaxConnections},
		{"Redis.ReadTimeout", c.Redis.ReadTimeout, config.DefaultSocketTimeout},
		{"Redis.WriteTimeout", c.Redis.WriteTimeout, config.DefaultSocketTimeout},
		{"Redis.DialTimeout", c.Redis.DialTimeout, config.DefaultSocketTimeout},
		{"Redis.MaxRetries", c.Redis.MaxRetries, 3},
		{"Redis.ClientName", c.Redis.ClientName, "invalidator"},
		{"NATSURL", c.NATSURL, config.DefaultNATSURL},
		{"NATSCreds", c.NATSCreds, ""},
		{"RulesPath", c.RulesPath, config.DefaultRules},
		{"Worker.Stream", c.Worker.Stream, worker.DefaultStream},
		{"Worker.Consumer", c.Worker.Consumer, worker.DefaultConsumer},
		{"Worker.DeadLetterStream", c.Worker.DeadLetterStream, worker.DefaultDeadLetterStream},
		{"Worker.Concurrency", c.Worker.Concurrency, worker.DefaultConcurrency},
		{"Worker.MaxDeliver", c.Worker.MaxDeliver, worker.DefaultMaxDeliver},
		{"Worker.AckWait", c.Worker.AckWait, worker.DefaultAckWait},
		{"Worker.ShutdownTimeout", c.Worker.ShutdownTimeout, worker.DefaultShutdownTimeout},
		{"Worker.FailoverReplayWindow", c.Worker.FailoverReplayWindow, worker.DefaultFailoverReplayWindow},
		{"Worker.Consistency.Sample", c.Worker.Consistency.Sample, consistency.DefaultSample},
		{"Worker.Consistency.Delays", fmt.Sprint(c.Worker.Consistency.Delays), "[1s 10s 1m0s]"},
		{"Worker.Consistency.Enabled", c.Worker.Consistency.Enabled(), true},
		{"ScanCount", c.ScanCount, engine.DefaultScanCount},
		{"HTTPAddr", c.HTTPAddr, config.DefaultHTTPAddr},
		{"OpsToken", c.OpsToken, ""},
		{"UIReadOnly", c.UIReadOnly, false},
		{"UIPathPrefix", c.UIPathPrefix, ""},
		{"LogLevel", c.LogLevel, slog.LevelInfo},
		{"LogFormat", c.LogFormat, logging.Format("")},
		{"Secrets", c.Secrets(), []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !equal(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
}

// equal compares values, treating nil and empty string slices alike.
func equal(a, b any) bool {
	as, aok := a.([]string)
	bs, bok := b.([]string)
	if aok && bok {
		return slices.Equal(as, bs)
	}
	return a == b
}

func TestFlagsApplyEachSetting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given given
		got   func(*config.Run) any
		want  any
	}{
		{
			name:  "REDIS_URL with password and db",
			given: given{env: env("REDIS_URL", "redis://:pw@127.0.0.1:6380/2")},
			got:   redisConnOf,
			want:  redisConn{Addr: "127.0.0.1:6380", Password: "pw", DB: 2},
		},
		{
			name:  "REDIS_URL with user and password",
			given: given{env: env("REDIS_URL", "redis://app:pw@cache:6379/0")},
			got:   redisConnOf,
			want:  redisConn{Addr: "cache:6379", Username: "app", Password: "pw"},
		},
		{
			name:  "REDIS_URL rediss turns on TLS",
			given: given{env: env("REDIS_URL", "rediss://:pw@cache.example:6380/0")},
			got:   redisConnOf,
			want:  redisConn{Addr: "cache.example:6380", Password: "pw", TLS: true},
		},
		{
			name:  "REDIS_URL is kept as given",
			given: given{env: env("REDIS_URL", "redis://127.0.0.1:6380/2")},
			got:   func(c *config.Run) any { return c.RedisURL },
			want:  "redis://127.0.0.1:6380/2",
		},
		{
			name:  "REDIS_MAX_CONNECTIONS sets the pool size",
			given: given{env: env("REDIS_MAX_CONNECTIONS", "7")},
			got:   func(c *config.Run) any { return c.Redis.PoolSize },
			want:  7,
		},
		{
			name:  "REDIS_SOCKET_TIMEOUT sets read and write timeouts",
			given: given{env: env("REDIS_SOCKET_TIMEOUT", "250ms")},
			got:   func(c *config.Run) any { return [2]time.Duration{c.Redis.ReadTimeout, c.Redis.WriteTimeout} },
			want:  [2]time.Duration{250 * time.Millisecond, 250 * time.Millisecond},
		},
		{
			name:  "REDIS_SOCKET_TIMEOUT bare number is seconds",
			given: given{env: env("REDIS_SOCKET_TIMEOUT", "2.5")},
			got:   func(c *config.Run) any { return c.Redis.ReadTimeout },
			want:  2500 * time.Millisecond,
		},
		{
			name:  "REDIS_SOCKET_CONNECT_TIMEOUT sets the dial timeout",
			given: given{env: env("REDIS_SOCKET_CONNECT_TIMEOUT", "3")},
			got:   func(c *config.Run) any { return c.Redis.DialTimeout },
			want:  3 * time.Second,
		},
		{
			name:  "REDIS_RETRY_ON_TIMEOUT false turns retries off",
			given: given{env: env("REDIS_RETRY_ON_TIMEOUT", "false")},
			got:   func(c *config.Run) any { return c.Redis.MaxRetries },
			want:  -1,
		},
		{
			name:  "REDIS_RETRY_ON_TIMEOUT true retries three times",
			given: given{env: env("REDIS_RETRY_ON_TIMEOUT", "true")},
			got:   func(c *config.Run) any { return c.Redis.MaxRetries },
			want:  3,
		},
		{
			name:  "NATS_URL",
			given: given{env: env("NATS_URL", "nats://10.0.0.1:4222,nats://10.0.0.2:4222")},
			got:   func(c *config.Run) any { return c.NATSURL },
			want:  "nats://10.0.0.1:4222,nats://10.0.0.2:4222",
		},
		{
			name:  "NATS_STREAM, NATS_CONSUMER, NATS_DLQ_STREAM",
			given: given{env: env("NATS_STREAM", "S", "NATS_CONSUMER", "C", "NATS_DLQ_STREAM", "D")},
			got: func(c *config.Run) any {
				return [3]string{c.Worker.Stream, c.Worker.Consumer, c.Worker.DeadLetterStream}
			},
			want: [3]string{"S", "C", "D"},
		},
		{
			name:  "WORKER_CONCURRENCY",
			given: given{env: env("WORKER_CONCURRENCY", "4")},
			got:   func(c *config.Run) any { return c.Worker.Concurrency },
			want:  4,
		},
		{
			name:  "SCAN_COUNT",
			given: given{env: env("SCAN_COUNT", "5000")},
			got:   func(c *config.Run) any { return c.ScanCount },
			want:  5000,
		},
		{
			name:  "SCAN_BUDGET",
			given: given{env: env("SCAN_BUDGET", "200000")},
			got:   func(c *config.Run) any { return c.ScanBudget },
			want:  200000,
		},
		{
			name:  "SHUTDOWN_TIMEOUT",
			given: given{env: env("SHUTDOWN_TIMEOUT", "45s")},
			got:   func(c *config.Run) any { return c.Worker.ShutdownTimeout },
			want:  45 * time.Second,
		},
		{
			name:  "SHUTDOWN_TIMEOUT bare number is seconds",
			given: given{env: env("SHUTDOWN_TIMEOUT", "2.5")},
			got:   func(c *config.Run) any { return c.Worker.ShutdownTimeout },
			want:  2500 * time.Millisecond,
		},
		{
			name:  "FAILOVER_REPLAY_WINDOW",
			given: given{env: env("FAILOVER_REPLAY_WINDOW", "30s")},
			got:   func(c *config.Run) any { return c.Worker.FailoverReplayWindow },
			want:  30 * time.Second,
		},
		{
			name:  "FAILOVER_REPLAY_WINDOW 0 turns the replay off",
			given: given{env: env("FAILOVER_REPLAY_WINDOW", "0")},
			got:   func(c *config.Run) any { return c.Worker.FailoverReplayWindow },
			want:  time.Duration(-1),
		},
		{
			name:  "CONSISTENCY_SAMPLE",
			given: given{env: env("CONSISTENCY_SAMPLE", "0.25")},
			got:   func(c *config.Run) any { return c.Worker.Consistency.Sample },
			want:  0.25,
		},
		{
			name:  "CONSISTENCY_SAMPLE 0 turns the checker off",
			given: given{env: env("CONSISTENCY_SAMPLE", "0")},
			got:   func(c *config.Run) any { return c.Worker.Consistency.Enabled() },
			want:  false,
		},
		{
			name:  "CONSISTENCY_SAMPLE 1 checks every event",
			given: given{args: []string{"-consistency-sample=1"}},
			got:   func(c *config.Run) any { return c.Worker.Consistency.Sample },
			want:  1.0,
		},
		{
			name:  "CONSISTENCY_DELAYS sorted",
			given: given{env: env("CONSISTENCY_DELAYS", "200ms, 50ms,1m")},
			got:   func(c *config.Run) any { return fmt.Sprint(c.Worker.Consistency.Delays) },
			want:  "[50ms 200ms 1m0s]",
		},
		{
			name:  "CONSISTENCY_DELAYS bare numbers are seconds",
			given: given{env: env("CONSISTENCY_DELAYS", "10,0.5")},
			got:   func(c *config.Run) any { return fmt.Sprint(c.Worker.Consistency.Delays) },
			want:  "[500ms 10s]",
		},
		{
			name:  "INVALIDATOR_RULES",
			given: given{env: env("INVALIDATOR_RULES", "/etc/invalidator/rules.yaml")},
			got:   func(c *config.Run) any { return c.RulesPath },
			want:  "/etc/invalidator/rules.yaml",
		},
		{
			name:  "LOG_LEVEL",
			given: given{env: env("LOG_LEVEL", "debug")},
			got:   func(c *config.Run) any { return c.LogLevel },
			want:  slog.LevelDebug,
		},
		{
			name:  "LOG_FORMAT",
			given: given{env: env("LOG_FORMAT", "json")},
			got:   func(c *config.Run) any { return c.LogFormat },
			want:  logging.JSON,
		},
		{
			name:  "HTTP_ADDR host and port",
			given: given{env: env("HTTP_ADDR", "127.0.0.1:9090")},
			got:   func(c *config.Run) any { return c.HTTPAddr },
			want:  "127.0.0.1:9090",
		},
		{
			name:  "HTTP_ADDR IPv6 and port 0",
			given: given{env: env("HTTP_ADDR", "[::1]:0")},
			got:   func(c *config.Run) any { return c.HTTPAddr },
			want:  "[::1]:0",
		},
		{
			name:  "UI_PATH_PREFIX",
			given: given{env: env("UI_PATH_PREFIX", "/ops/invalidator-1")},
			got:   func(c *config.Run) any { return c.UIPathPrefix },
			want:  "/ops/invalidator-1",
		},
		{
			name:  "UI_READ_ONLY",
			given: given{args: []string{"-ui-read-only=true"}},
			got:   func(c *config.Run) any { return c.UIReadOnly },
			want:  true,
		},
		{
			name:  "an empty -http-addr turns the server off",
			given: given{args: []string{"-http-addr="}},
			got:   func(c *config.Run) any { return c.HTTPAddr },
			want:  "",
		},
		{
			name:  "a flag wins over the variable",
			given: given{env: env("REDIS_MAX_CONNECTIONS", "7"), args: []string{"-redis-max-connections=9"}},
			got:   func(c *config.Run) any { return c.Redis.PoolSize },
			want:  9,
		},
		{
			name:  "a flag wins over the variable for URLs",
			given: given{env: env("NATS_URL", "nats://env:4222"), args: []string{"-nats-url", "nats://flag:4222"}},
			got:   func(c *config.Run) any { return c.NATSURL },
			want:  "nats://flag:4222",
		},
		{
			name:  "a flag set to the default still wins",
			given: given{env: env("LOG_LEVEL", "debug"), args: []string{"-log-level=info"}},
			got:   func(c *config.Run) any { return c.LogLevel },
			want:  slog.LevelInfo,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, tt.given)
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got := tt.got(c); got != tt.want {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestFlagsRejectBadValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given given
		want  string // the variable or flag the error must name
	}{
		{"REDIS_MAX_CONNECTIONS not a number", given{env: env("REDIS_MAX_CONNECTIONS", "abc")}, "REDIS_MAX_CONNECTIONS"},
		{"REDIS_MAX_CONNECTIONS zero", given{env: env("REDIS_MAX_CONNECTIONS", "0")}, "REDIS_MAX_CONNECTIONS"},
		{"REDIS_MAX_CONNECTIONS negative", given{env: env("REDIS_MAX_CONNECTIONS", "-1")}, "REDIS_MAX_CONNECTIONS"},
		{"REDIS_SOCKET_TIMEOUT not a duration", given{env: env("REDIS_SOCKET_TIMEOUT", "fast")}, "REDIS_SOCKET_TIMEOUT"},
		{"REDIS_SOCKET_TIMEOUT zero", given{env: env("REDIS_SOCKET_TIMEOUT", "0")}, "REDIS_SOCKET_TIMEOUT"},
		{"REDIS_SOCKET_CONNECT_TIMEOUT negative", given{env: env("REDIS_SOCKET_CONNECT_TIMEOUT", "-2s")}, "REDIS_SOCKET_CONNECT_TIMEOUT"},
		{"REDIS_RETRY_ON_TIMEOUT not a bool", given{env: env("REDIS_RETRY_ON_TIMEOUT", "maybe")}, "REDIS_RETRY_ON_TIMEOUT"},
		{"REDIS_URL wrong scheme", given{env: env("REDIS_URL", "http://x")}, "REDIS_URL"},
		{"NATS_URL without scheme", given{env: env("NATS_URL", "foo")}, "NATS_URL"},
		{"NATS_URL second entry bad", given{env: env("NATS_URL", "nats://a:4222,http://b")}, "NATS_URL"},
		{"NATS_STREAM with a dot", given{env: env("NATS_STREAM", "a.b")}, "NATS_STREAM"},
		{"NATS_CONSUMER with a wildcard", given{env: env("NATS_CONSUMER", "c*")}, "NATS_CONSUMER"},
		{"WORKER_CONCURRENCY zero", given{env: env("WORKER_CONCURRENCY", "0")}, "WORKER_CONCURRENCY"},
		{"WORKER_CONCURRENCY over max ack pending", given{env: env("WORKER_CONCURRENCY", "2000")}, "WORKER_CONCURRENCY"},
		{"NATS_DLQ_STREAM same as stream", given{env: env("NATS_DLQ_STREAM", "EVENTS")}, "NATS_DLQ_STREAM"},
		{"MAX_DELIVER not a number", given{env: env("MAX_DELIVER", "x")}, "MAX_DELIVER"},
		{"ACK_WAIT below a second", given{env: env("ACK_WAIT", "10ms")}, "ACK_WAIT"},
		{"SCAN_COUNT zero", given{env: env("SCAN_COUNT", "0")}, "SCAN_COUNT"},
		{"SCAN_BUDGET negative", given{env: env("SCAN_BUDGET", "-1")}, "SCAN_BUDGET"},
		{"GENERATIONS unknown", given{env: env("GENERATIONS", "sometimes")}, "GENERATIONS"},
		{"cluster and sentinel both set", given{env: env("REDIS_CLUSTER_ADDRS", "127.0.0.1:7000", "REDIS_SENTINEL_ADDRS", "127.0.0.1:26379", "REDIS_SENTINEL_MASTER", "m")}, "REDIS_CLUSTER_ADDRS"},
		{"sentinels without a master", given{env: env("REDIS_SENTINEL_ADDRS", "127.0.0.1:26379")}, "REDIS_SENTINEL_MASTER"},
		{"a master without sentinels", given{env: env("REDIS_SENTINEL_MASTER", "mymaster")}, "REDIS_SENTINEL_ADDRS"},
		{"cluster with DB 1", given{env: env("REDIS_CLUSTER_ADDRS", "127.0.0.1:7000", "REDIS_URL", "redis://127.0.0.1:7000/1")}, "REDIS_URL"},
		{"cluster address without a port", given{env: env("REDIS_CLUSTER_ADDRS", "127.0.0.1:7000,127.0.0.2")}, "REDIS_CLUSTER_ADDRS"},
		{"sentinel address port out of range", given{env: env("REDIS_SENTINEL_ADDRS", "127.0.0.1:99999", "REDIS_SENTINEL_MASTER", "m")}, "REDIS_SENTINEL_ADDRS"},
		{"REDIS_TLS_CA_FILE without rediss://", given{env: env("REDIS_TLS_CA_FILE", "/etc/hostname")}, "REDIS_URL"},
		{"REDIS_TLS_CA_FILE missing", given{env: env("REDIS_URL", "rediss://127.0.0.1:6380/0", "REDIS_TLS_CA_FILE", "/nonexistent/ca.pem")}, "REDIS_TLS_CA_FILE"},
		{"REDIS_TLS_CA_FILE not PEM", given{env: env("REDIS_URL", "rediss://127.0.0.1:6380/0", "REDIS_TLS_CA_FILE", "/etc/hostname")}, "REDIS_TLS_CA_FILE"},
		{"REDIS_TLS_CERT_FILE without key", given{env: env("REDIS_URL", "rediss://127.0.0.1:6380/0", "REDIS_TLS_CERT_FILE", "/etc/hostname")}, "REDIS_TLS_CERT_FILE"},
		{"NATS_TLS_CA_FILE missing", given{env: env("NATS_TLS_CA_FILE", "/nonexistent/ca.pem")}, "NATS_TLS_CA_FILE"},
		{"NATS_TLS_KEY_FILE without cert", given{env: env("NATS_TLS_KEY_FILE", "/etc/hostname")}, "NATS_TLS_CERT_FILE"},
		{"NATS_STREAM_REPLICAS zero", given{env: env("NATS_STREAM_REPLICAS", "0")}, "NATS_STREAM_REPLICAS"},
		{"NATS_STREAM_REPLICAS over 5", given{env: env("NATS_STREAM_REPLICAS", "7")}, "NATS_STREAM_REPLICAS"},
		{"SCAN_BUDGET not a number", given{env: env("SCAN_BUDGET", "fast")}, "SCAN_BUDGET"},
		{"SHUTDOWN_TIMEOUT negative", given{env: env("SHUTDOWN_TIMEOUT", "-1s")}, "SHUTDOWN_TIMEOUT"},
		{"FAILOVER_REPLAY_WINDOW negative", given{env: env("FAILOVER_REPLAY_WINDOW", "-1s")}, "FAILOVER_REPLAY_WINDOW"},
		{"SHUTDOWN_TIMEOUT not a duration", given{env: env("SHUTDOWN_TIMEOUT", "soon")}, "SHUTDOWN_TIMEOUT"},
		{"LOG_LEVEL unknown", given{env: env("LOG_LEVEL", "loud")}, "LOG_LEVEL"},
		{"LOG_FORMAT unknown", given{env: env("LOG_FORMAT", "xml")}, "LOG_FORMAT"},
		{"flag is named when the flag was given", given{env: env("REDIS_MAX_CONNECTIONS", "5"), args: []string{"-redis-max-connections=abc"}}, "-redis-max-connections"},
		{"flag is named for URLs", given{args: []string{"-nats-url=foo"}}, "-nats-url"},
		{"flag is named for names", given{args: []string{"-nats-stream=a.b"}}, "-nats-stream"},
		{"an empty rules flag", given{args: []string{"-rules="}}, "-rules"},
		{"HTTP_ADDR without a port", given{env: env("HTTP_ADDR", "notaport")}, "HTTP_ADDR"},
		{"HTTP_ADDR port not a number", given{env: env("HTTP_ADDR", "localhost:http")}, "HTTP_ADDR"},
		{"HTTP_ADDR port too large", given{env: env("HTTP_ADDR", ":65536")}, "HTTP_ADDR"},
		{"HTTP_ADDR port negative", given{env: env("HTTP_ADDR", ":-1")}, "HTTP_ADDR"},
		{"HTTP_ADDR two colons", given{env: env("HTTP_ADDR", "::1:8080")}, "HTTP_ADDR"},
		{"-http-addr without a port", given{args: []string{"-http-addr=127.0.0.1"}}, "-http-addr"},
		{"UI_READ_ONLY not a bool", given{env: env("UI_READ_ONLY", "maybe")}, "UI_READ_ONLY"},
		{"UI_PATH_PREFIX without a leading slash", given{env: env("UI_PATH_PREFIX", "invalidator")}, "UI_PATH_PREFIX"},
		{"UI_PATH_PREFIX with a trailing slash", given{env: env("UI_PATH_PREFIX", "/invalidator/")}, "UI_PATH_PREFIX"},
		{"UI_PATH_PREFIX with a dot segment", given{env: env("UI_PATH_PREFIX", "/a/../b")}, "UI_PATH_PREFIX"},
		{"UI_PATH_PREFIX with a quote", given{env: env("UI_PATH_PREFIX", "/a\"b")}, "UI_PATH_PREFIX"},
		{"UI_PATH_PREFIX root", given{env: env("UI_PATH_PREFIX", "/")}, "UI_PATH_PREFIX"},
		{"CONSISTENCY_SAMPLE not a number", given{env: env("CONSISTENCY_SAMPLE", "often")}, "CONSISTENCY_SAMPLE"},
		{"CONSISTENCY_SAMPLE negative", given{env: env("CONSISTENCY_SAMPLE", "-0.1")}, "CONSISTENCY_SAMPLE"},
		{"CONSISTENCY_SAMPLE over 1", given{env: env("CONSISTENCY_SAMPLE", "1.5")}, "CONSISTENCY_SAMPLE"},
		{"CONSISTENCY_SAMPLE NaN", given{env: env("CONSISTENCY_SAMPLE", "NaN")}, "CONSISTENCY_SAMPLE"},
		{"CONSISTENCY_SAMPLE a percentage", given{env: env("CONSISTENCY_SAMPLE", "1%")}, "CONSISTENCY_SAMPLE"},
		{"CONSISTENCY_DELAYS not durations", given{env: env("CONSISTENCY_DELAYS", "1s,soon")}, "CONSISTENCY_DELAYS"},
		{"CONSISTENCY_DELAYS NaN", given{env: env("CONSISTENCY_DELAYS", "1s,NaN")}, "CONSISTENCY_DELAYS"},
		{"CONSISTENCY_DELAYS zero", given{env: env("CONSISTENCY_DELAYS", "0s,1s")}, "CONSISTENCY_DELAYS"},
		{"CONSISTENCY_DELAYS negative", given{env: env("CONSISTENCY_DELAYS", "-1s")}, "CONSISTENCY_DELAYS"},
		{"CONSISTENCY_DELAYS twice the same", given{env: env("CONSISTENCY_DELAYS", "1s,1000ms")}, "CONSISTENCY_DELAYS"},
		{"CONSISTENCY_DELAYS over an hour", given{env: env("CONSISTENCY_DELAYS", "1s,2h")}, "CONSISTENCY_DELAYS"},
		{"CONSISTENCY_DELAYS empty entry", given{env: env("CONSISTENCY_DELAYS", "1s,,10s")}, "CONSISTENCY_DELAYS"},
		{"-consistency-delays named", given{args: []string{"-consistency-delays=x"}}, "-consistency-delays"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, tt.given)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("error %q does not wrap config.ErrInvalid", msg)
			}
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not name %s", msg, tt.want)
			}
			if strings.HasPrefix(tt.want, "-") {
				if env := strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(tt.want, "-"), "-", "_")); strings.Contains(msg, env+":") {
					t.Errorf("error %q names the variable, but the flag was given", msg)
				}
			}
		})
	}
}

func TestFlagsKeepPasswordsOutOfErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given given
		want  string // the name the error must still hold
	}{
		{"REDIS_URL bad port", given{env: env("REDIS_URL", "redis://:s3cret@host:notaport/0")}, "REDIS_URL"},
		{"REDIS_URL user and bad port", given{env: env("REDIS_URL", "redis://app:s3cret@host:notaport/0")}, "REDIS_URL"},
		{"REDIS_URL bad db", given{env: env("REDIS_URL", "redis://:s3cret@host/notadb")}, "REDIS_URL"},
		{"REDIS_URL bad host", given{env: env("REDIS_URL", "redis://:s3cret@ho st/0")}, "REDIS_URL"},
		{"REDIS_URL wrong scheme", given{env: env("REDIS_URL", "http://:s3cret@host/0")}, "REDIS_URL"},
		{"-redis-url bad port", given{args: []string{"-redis-url=redis://:s3cret@host:x/0"}}, "-redis-url"},
		{"NATS_URL bad scheme", given{env: env("NATS_URL", "http://u:s3cret@host:4222")}, "NATS_URL"},
		{"NATS_URL token", given{env: env("NATS_URL", "nats://s3cret@host:4222,foo")}, "NATS_URL"},
		{"REDIS_URL password with slash", given{env: env("REDIS_URL", "redis://:s3cret/x@host:6379/0")}, "REDIS_URL"},
		{"REDIS_URL password with quote", given{env: env("REDIS_URL", `redis://:s3"cret@host:x/0`)}, "REDIS_URL"},
		{"NATS_URL password with slash", given{env: env("NATS_URL", "nats://u:s3cret/x@host:4222")}, "NATS_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, tt.given)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not wrap ErrInvalid and name %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the password: %q", err)
			}
		})
	}
}

func TestSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given given
		want  []string
	}{
		{
			name:  "none",
			given: given{},
			want:  nil,
		},
		{
			name: "Redis password, NATS passwords and token, OPS_TOKEN",
			given: given{env: env(
				"REDIS_URL", "redis://app:redis-pw@cache:6379/0",
				"NATS_URL", "nats://u:nats-pw@a:4222,nats://nats-token@b:4222,nats://c:4222",
				"OPS_TOKEN", "ops-token",
			)},
			want: []string{"nats-pw", "nats-token", "ops-token", "redis-pw"},
		},
		{
			name:  "flags count too",
			given: given{args: []string{"-redis-url=redis://:flag-pw@h:1/0", "-ops-token=flag-token"}},
			want:  []string{"flag-pw", "flag-token"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, tt.given)
			if err != nil {
				t.Fatal(err)
			}
			got := slices.Sorted(slices.Values(c.Secrets()))
			if !slices.Equal(got, tt.want) {
				t.Errorf("Secrets() = %q, want %q", got, tt.want)
			}
		})
	}
}

// Every setting has a flag and a variable, and no two settings share either.
func TestSettingsAreDistinct(t *testing.T) {
	t.Parallel()
	envs, flags := map[string]bool{}, map[string]bool{}
	for _, s := range config.Settings {
		if s.Env == "" || s.Flag == "" || envs[s.Env] || flags[s.Flag] {
			t.Errorf("setting %+v: empty or duplicate env or flag", s)
		}
		envs[s.Env], flags[s.Flag] = true, true
	}
}

// run, unlike dev, has no default rules file: it must be named.
func TestRunNeedsRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		flags   func(*flag.FlagSet, func(string) string) func() (*config.Run, error)
		given   given
		want    string // RulesPath
		wantErr string // what the error names, if one is wanted
	}{
		{name: "run without rules", flags: config.Flags, given: given{}, wantErr: "INVALIDATOR_RULES"},
		{name: "run with the variable", flags: config.Flags, given: given{env: env("INVALIDATOR_RULES", "/r.yaml")}, want: "/r.yaml"},
		{name: "run with the flag", flags: config.Flags, given: given{args: []string{"-rules", "/f.yaml"}}, want: "/f.yaml"},
		{name: "dev without rules", flags: config.DevFlags, given: given{}, want: config.DefaultRules},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := loadWith(t, tt.flags, tt.given)
			if tt.wantErr != "" {
				if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one wrapping ErrInvalid and naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.RulesPath != tt.want {
				t.Errorf("RulesPath %q, want %q", c.RulesPath, tt.want)
			}
		})
	}
}

// --help shows what kind of value each flag takes, never "string" for all.
func TestFlagsHelpNamesTheValue(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	config.Flags(fs, nil)
	var out strings.Builder
	fs.SetOutput(&out)
	fs.PrintDefaults()
	help := out.String()
	want := map[string]string{"ack-wait": "duration", "redis-url": "url", "concurrency": "int",
		"redis-retry-on-timeout": "bool", "rules": "path", "http-addr": "addr", "nats-creds": "path"}
	for _, s := range config.Settings {
		if s.Arg == "" || s.Arg == "string" {
			t.Errorf("setting %s has no placeholder", s.Env)
		}
		if w, ok := want[s.Flag]; ok && s.Arg != w {
			t.Errorf("-%s shows %q, want %q", s.Flag, s.Arg, w)
		}
		if line := "  -" + s.Flag + " " + s.Arg + "\n"; !strings.Contains(help, line) {
			t.Errorf("help lacks %q:\n%s", line, help)
		}
	}
	if strings.Contains(help, " string\n") {
		t.Errorf("help shows a flag as string:\n%s", help)
	}
	if !strings.Contains(help, "env INVALIDATOR_RULES, required") {
		t.Errorf("help of run does not say the rules file is required:\n%s", help)
	}
}

func TestPublishFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   given
		want    config.Publish
		wantErr string
	}{
		{name: "defaults", want: config.Publish{NATSURL: config.DefaultNATSURL}},
		{name: "variables", given: given{env: env("NATS_URL", "nats://127.0.0.1:14222", "NATS_CREDS", "/c.creds")},
			want: config.Publish{NATSURL: "nats://127.0.0.1:14222", NATSCreds: "/c.creds"}},
		{name: "flag wins", given: given{env: env("NATS_URL", "nats://env:1"), args: []string{"-nats-url=nats://flag:2"}},
			want: config.Publish{NATSURL: "nats://flag:2"}},
		{name: "bad URL", given: given{env: env("NATS_URL", "http://u:s3cret@x")}, wantErr: "NATS_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := loadWith(t, config.PublishFlags, tt.given)
			if tt.wantErr != "" {
				if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("error %v, want one wrapping ErrInvalid, naming %s, without the password", err, tt.wantErr)
				}
				return
			}
			if err != nil || *got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestPurgeFlags(t *testing.T) {
	t.Parallel()
	c, err := loadWith(t, config.PurgeFlags, given{env: env("REDIS_URL", "redis://:pw@127.0.0.1:6390/3",
		"REDIS_MAX_CONNECTIONS", "3", "REDIS_SOCKET_TIMEOUT", "2s", "REDIS_SOCKET_CONNECT_TIMEOUT", "1s",
		"REDIS_RETRY_ON_TIMEOUT", "false", "SCAN_COUNT", "50")})
	if err != nil {
		t.Fatal(err)
	}
	got := []any{redisConn{Addr: c.Redis.Addr, Password: c.Redis.Password, DB: c.Redis.DB}, c.Redis.PoolSize,
		c.Redis.ReadTimeout, c.Redis.DialTimeout, c.Redis.MaxRetries, c.ScanCount}
	want := []any{redisConn{Addr: "127.0.0.1:6390", Password: "pw", DB: 3}, 3, 2 * time.Second, time.Second, -1, 50}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("setting %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if _, err := loadWith(t, config.PurgeFlags, given{env: env("REDIS_MAX_CONNECTIONS", "0")}); err == nil || !strings.Contains(err.Error(), "REDIS_MAX_CONNECTIONS") {
		t.Errorf("a bad pool size: error %v, want one naming REDIS_MAX_CONNECTIONS", err)
	}
}

func TestMissingEnv(t *testing.T) {
	t.Parallel()
	e := env("SET", "v")
	got := config.MissingEnv([]string{"SET", "UNSET"}, func(k string) string { return e[k] })
	if !slices.Equal(got, []string{"UNSET"}) {
		t.Errorf("MissingEnv = %q, want [UNSET]", got)
	}
}

// internal/config is the only reader of the environment: no other package's
// code calls os.Getenv or os.LookupEnv. (os.Environ, which passes the
// environment on to a child process, is not reading a setting.)
func TestOnlyConfigReadsTheEnvironment(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	self := filepath.Join(root, "internal", "config")
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (path == self || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "os" && slices.Contains([]string{"Getenv", "LookupEnv"}, sel.Sel.Name) {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s reads the environment (os.%s); only internal/config may", rel, sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRedisTopology(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		given    given
		wantMode string
		wantType string
	}{
		{"single by default", given{}, config.ModeSingle, "*redis.Client"},
		{"cluster", given{env: env("REDIS_CLUSTER_ADDRS", "127.0.0.1:7000, 127.0.0.1:7001")}, config.ModeCluster, "*redis.ClusterClient"},
		{"sentinel", given{env: env("REDIS_SENTINEL_ADDRS", "127.0.0.1:26379", "REDIS_SENTINEL_MASTER", "mymaster",
			"REDIS_SENTINEL_PASSWORD", "sntl-secret")}, config.ModeSentinel, "*redis.Client"},
		{"cluster by flag", given{args: []string{"--redis-cluster-addrs", "127.0.0.1:7000"}}, config.ModeCluster, "*redis.ClusterClient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.given)
			if err != nil {
				t.Fatal(err)
			}
			if c.Topology.Mode() != tt.wantMode {
				t.Errorf("mode %q, want %q", c.Topology.Mode(), tt.wantMode)
			}
			rdb := config.NewRedisClient(c.Redis, c.Topology)
			defer rdb.Close()
			if got := fmt.Sprintf("%T", rdb); got != tt.wantType {
				t.Errorf("client %s, want %s", got, tt.wantType)
			}
			if tt.wantMode == config.ModeSentinel && !slices.Contains(c.Secrets(), "sntl-secret") {
				t.Error("the Sentinel password is not among the secrets the logger scrubs")
			}
		})
	}
	c, err := load(t, given{env: env("NATS_STREAM_REPLICAS", "3")})
	if err != nil || c.Worker.StreamReplicas != 3 {
		t.Errorf("NATS_STREAM_REPLICAS=3: %v, %v", c.Worker.StreamReplicas, err)
	}
}

func TestUseGenerations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode      string
		warm      bool
		want, err bool
	}{
		{"auto", false, false, false}, {"auto", true, true, false},
		{"on", false, true, false}, {"on", true, true, false},
		{"off", false, false, false}, {"off", true, false, true},
	}
	for _, tt := range tests {
		c, err := load(t, given{env: env("GENERATIONS", tt.mode)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.UseGenerations(tt.warm)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("GENERATIONS=%s, warm %v: %v, %v; want %v, error %v", tt.mode, tt.warm, got, err, tt.want, tt.err)
		}
	}
}
