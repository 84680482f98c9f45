package testserver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSCluster starts a 3-server JetStream cluster of embedded servers with
// routes, on loopback, each with its store in a temp dir, and waits for its
// meta leader. Every server is shut down on cleanup.
func NATSCluster(tb testing.TB) *servers.NATSCluster {
	tb.Helper()
	c, err := servers.StartNATSCluster(servers.NATSClusterOptions{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start NATS cluster: %v", err)
	}
	tb.Cleanup(c.Shutdown)
	return c
}

// JetStreamCluster connects to the servers of a cluster, urls
// comma-separated (the client moves to another when its own goes down, and
// keeps trying for as long as the test runs), and returns the connection
// and its JetStream context, closed on cleanup.
func JetStreamCluster(tb testing.TB, urls string) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		tb.Fatalf("connect to the NATS cluster: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js
}

// NATSBinaryCluster starts a 3-server JetStream cluster of nats-server
// processes from PATH, on loopback, with routes, and waits until each is
// current with a meta leader. It skips the test with a clear message if the
// binary is missing. Every process is stopped on cleanup.
func NATSBinaryCluster(tb testing.TB) *servers.NATSBinaryCluster {
	tb.Helper()
	c, err := servers.StartNATSBinaryCluster(context.Background(), servers.NATSClusterOptions{Dir: tb.TempDir()})
	if errors.Is(err, servers.ErrNoNATSServer) {
		tb.Skipf("skipped: %v", err)
	}
	if err != nil {
		tb.Fatalf("start nats-server cluster: %v", err)
	}
	tb.Cleanup(c.Shutdown)
	return c
}
