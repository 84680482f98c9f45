package testserver

import (
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

// JetStreamCluster connects to every server of c (the client moves to
// another when its own goes down, and keeps trying for as long as the test
// runs) and returns the connection and its JetStream context, closed on
// cleanup.
func JetStreamCluster(tb testing.TB, c *servers.NATSCluster) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
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
