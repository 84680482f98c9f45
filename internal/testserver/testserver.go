// Package testserver starts real servers for tests: a redis-server process on
// a free loopback port and an in-process NATS server with JetStream. Every
// start is undone by t.Cleanup.
package testserver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// RedisOption changes how Redis is started.
type RedisOption func(*servers.RedisOptions)

// WithAOF turns on the append-only file, so the data survives Restart.
func WithAOF() RedisOption { return func(o *servers.RedisOptions) { o.AppendOnly = true } }

// WithPassword sets requirepass.
func WithPassword(p string) RedisOption { return func(o *servers.RedisOptions) { o.Password = p } }

// Redis starts a redis-server on a free loopback port, in a temp dir. It fails
// the test with a clear message if redis-server is not installed.
func Redis(tb testing.TB, opts ...RedisOption) *servers.Redis {
	tb.Helper()
	o := servers.RedisOptions{Dir: tb.TempDir()}
	for _, f := range opts {
		f(&o)
	}
	r, err := servers.StartRedis(context.Background(), o)
	if errors.Is(err, servers.ErrNoRedisServer) {
		tb.Fatalf("tests need a real Redis: %v", err)
	}
	if err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	tb.Cleanup(func() { _ = r.Stop() })
	return r
}

// RedisClient returns a go-redis client for r, closed on cleanup.
func RedisClient(tb testing.TB, r *servers.Redis) *redis.Client {
	tb.Helper()
	opt, err := redis.ParseURL(r.URL())
	if err != nil {
		tb.Fatal(err)
	}
	c := redis.NewClient(opt)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// RedisClientAs returns a client of r that logs in as an ACL user.
func RedisClientAs(tb testing.TB, r *servers.Redis, user, password string) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), Username: user, Password: password})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// NATS starts an in-process JetStream server on a random loopback port with
// its store in a temp dir.
func NATS(tb testing.TB) *server.Server {
	tb.Helper()
	return NATSWith(tb, servers.NATSOptions{})
}

// NATSWith is NATS with options (user and password, say); StoreDir defaults
// to a temp dir.
func NATSWith(tb testing.TB, o servers.NATSOptions) *server.Server {
	tb.Helper()
	if o.StoreDir == "" {
		o.StoreDir = tb.TempDir()
	}
	s, err := servers.StartNATS(o)
	if err != nil {
		tb.Fatalf("start nats-server: %v", err)
	}
	tb.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// JetStream connects to s and returns the connection and its JetStream
// context, closed on cleanup.
func JetStream(tb testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	return JetStreamURL(tb, s.ClientURL())
}

// Eventually polls cond every 20ms until it holds, failing the test when
// within has passed.
func Eventually(tb testing.TB, what string, within time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WorkerConfig is a worker configuration with short delays, for tests.
func WorkerConfig() worker.Config {
	return worker.Config{
		Concurrency:     4,
		AckWait:         2 * time.Second,
		Backoff:         []time.Duration{50 * time.Millisecond},
		FetchMaxWait:    200 * time.Millisecond,
		HealthInterval:  100 * time.Millisecond,
		ShutdownTimeout: 10 * time.Second,
	}
}

// WithArgs adds redis-server command-line options.
func WithArgs(args ...string) RedisOption {
	return func(o *servers.RedisOptions) { o.Args = append(o.Args, args...) }
}

// NATSBinary starts the nats-server binary on PATH with JetStream, on a free
// loopback port. It skips the test with a clear message if the binary is
// missing (CI installs it).
func NATSBinary(tb testing.TB) *servers.NATSBinary {
	tb.Helper()
	n, err := servers.StartNATSBinary(context.Background(), tb.TempDir())
	if errors.Is(err, servers.ErrNoNATSServer) {
		tb.Skipf("skipped: %v", err)
	}
	if err != nil {
		tb.Fatalf("start nats-server: %v", err)
	}
	tb.Cleanup(func() { _ = n.Stop() })
	return n
}

// JetStreamURL connects to the NATS server at url and returns the connection
// and its JetStream context, closed on cleanup.
func JetStreamURL(tb testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatalf("connect to NATS: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// WithTLS makes the server speak TLS only, with mutual authentication by
// the files' CA.
func WithTLS(f *servers.TLSFiles) RedisOption { return func(o *servers.RedisOptions) { o.TLS = f } }

// TLSFiles writes a fresh test PKI (CA, server and client certificates for
// loopback) into a temp dir.
func TLSFiles(tb testing.TB) *servers.TLSFiles {
	tb.Helper()
	f, err := servers.NewTLSFiles(tb.TempDir())
	if err != nil {
		tb.Fatalf("test certificates: %v", err)
	}
	return f
}
