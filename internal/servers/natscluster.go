package servers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultNATSClusterSize is the number of servers of a NATS cluster: the
// smallest that keeps a quorum of an R3 stream after losing one.
const DefaultNATSClusterSize = 3

// NATSClusterOptions configures a JetStream cluster of embedded servers.
type NATSClusterOptions struct {
	// Dir holds one store directory per server (node-0, node-1, ...). Required.
	Dir string
	// Size is the number of servers. Defaults to 3.
	Size int
	// Host to listen on, for clients and routes. Defaults to 127.0.0.1.
	Host string
	// Port is the client port of the first server; the others, and every
	// route port, are free ports. 0 picks a free port. Defaults to 0.
	Port int
	// Name is the cluster's name. Defaults to "invalidator".
	Name string
	// Ready bounds the wait for routes and a JetStream meta leader at start
	// and after Restart. Defaults to 30s.
	Ready time.Duration
}

// NATSCluster is a JetStream cluster of in-process NATS servers joined by
// routes, each with its own store. Stop and Restart take one server down and
// bring it back on the same ports and store, as an operator's restart would.
// Its methods are safe for concurrent use.
type NATSCluster struct {
	o           NATSClusterOptions
	clientPorts []int
	routePorts  []int
	mu          sync.Mutex
	srvs        []*server.Server // nil while stopped
}

// StartNATSCluster starts o.Size JetStream servers with routes to each other
// and waits until every server is routed to the others and the cluster has a
// JetStream meta leader. The caller owns the cluster: call Shutdown.
func StartNATSCluster(o NATSClusterOptions) (*NATSCluster, error) {
	if o.Dir == "" {
		return nil, errors.New("servers: NATS cluster Dir is required")
	}
	o.Size = cmp.Or(o.Size, DefaultNATSClusterSize)
	o.Host = cmp.Or(o.Host, "127.0.0.1")
	o.Name = cmp.Or(o.Name, "invalidator")
	o.Ready = cmp.Or(o.Ready, 30*time.Second)
	c := &NATSCluster{o: o, srvs: make([]*server.Server, o.Size)}
	for i := range o.Size {
		cp, rp, err := freePortPair()
		if err != nil {
			return nil, err
		}
		if i == 0 && o.Port != 0 {
			cp = o.Port
		}
		c.clientPorts, c.routePorts = append(c.clientPorts, cp), append(c.routePorts, rp)
	}
	for i := range o.Size {
		if err := c.start(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	if err := c.waitReady(); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// freePortPair returns two distinct free loopback ports.
func freePortPair() (int, int, error) {
	a, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, fmt.Errorf("servers: free port: %w", err)
	}
	defer a.Close()
	b, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, fmt.Errorf("servers: free port: %w", err)
	}
	defer b.Close()
	return a.Addr().(*net.TCPAddr).Port, b.Addr().(*net.TCPAddr).Port, nil
}

// options builds server i's options afresh: the server keeps and changes
// the Options it is given, so a restart must not reuse them.
func (c *NATSCluster) options(i int) *server.Options {
	var routes []string
	for _, p := range c.routePorts {
		routes = append(routes, "nats://"+net.JoinHostPort(c.o.Host, strconv.Itoa(p)))
	}
	return &server.Options{
		ServerName: c.Name(i),
		Host:       c.o.Host,
		Port:       c.clientPorts[i],
		JetStream:  true,
		StoreDir:   filepath.Join(c.o.Dir, "node-"+strconv.Itoa(i)),
		Cluster:    server.ClusterOpts{Name: c.o.Name, Host: c.o.Host, Port: c.routePorts[i]},
		Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		NoLog:      true,
		NoSigs:     true,
	}
}

func (c *NATSCluster) start(i int) error {
	s, err := server.NewServer(c.options(i))
	if err != nil {
		return fmt.Errorf("servers: new NATS server %s: %w", c.Name(i), err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		return fmt.Errorf("servers: NATS server %s not ready after 10s", c.Name(i))
	}
	c.mu.Lock()
	c.srvs[i] = s
	c.mu.Unlock()
	return nil
}

// waitReady waits until every running server has routes to the other
// running ones and is current with a JetStream meta leader.
func (c *NATSCluster) waitReady() error {
	deadline := time.Now().Add(c.o.Ready)
	for !c.ready() {
		if time.Now().After(deadline) {
			return fmt.Errorf("servers: NATS cluster has no JetStream meta leader after %s", c.o.Ready)
		}
		time.Sleep(25 * time.Millisecond)
	}
	return nil
}

func (c *NATSCluster) ready() bool {
	running := c.running()
	leader := false
	for _, s := range running {
		if s.NumRoutes() < len(running)-1 || !s.JetStreamIsCurrent() {
			return false
		}
		leader = leader || s.JetStreamIsLeader()
	}
	return leader
}

func (c *NATSCluster) running() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*server.Server
	for _, s := range c.srvs {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Size is the number of servers, running or stopped.
func (c *NATSCluster) Size() int { return c.o.Size }

// Name is server i's name, as stream info reports its leader and replicas.
func (c *NATSCluster) Name(i int) string { return c.o.Name + "-" + strconv.Itoa(i) }

// Index is the index of the server named name, or -1.
func (c *NATSCluster) Index(name string) int {
	for i := range c.o.Size {
		if c.Name(i) == name {
			return i
		}
	}
	return -1
}

// ClientURL is the nats:// URL of server i.
func (c *NATSCluster) ClientURL(i int) string {
	return "nats://" + net.JoinHostPort(c.o.Host, strconv.Itoa(c.clientPorts[i]))
}

// URL lists the client URLs of every server, comma-separated, as NATS_URL
// takes them: a client moves to another server when its own goes down.
func (c *NATSCluster) URL() string {
	urls := make([]string, c.o.Size)
	for i := range urls {
		urls[i] = c.ClientURL(i)
	}
	return strings.Join(urls, ",")
}

// Server returns server i, or nil while it is stopped.
func (c *NATSCluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srvs[i]
}

// StreamLeader returns the index of the running server that leads the
// stream of the global account, or -1 if none does (an election is under
// way, or the stream is not replicated).
func (c *NATSCluster) StreamLeader(stream string) int {
	for i := range c.o.Size {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits (at most within) for the stream to have a leader
// and returns its index.
func (c *NATSCluster) WaitStreamLeader(stream string, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for {
		if i := c.StreamLeader(stream); i >= 0 {
			return i, nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("servers: stream %q has no leader after %s", stream, within)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Stop shuts server i down and waits until it has stopped. Its clients are
// disconnected and its routes close, as when the process dies; its store
// stays for Restart. Stopping a stopped server does nothing.
func (c *NATSCluster) Stop(i int) {
	c.mu.Lock()
	s := c.srvs[i]
	c.srvs[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts the stopped server i again on its ports and store, and
// waits until it has rejoined the cluster (routes, and current with the
// meta leader).
func (c *NATSCluster) Restart(i int) error {
	if c.Server(i) != nil {
		return fmt.Errorf("servers: NATS server %s is running", c.Name(i))
	}
	if err := c.start(i); err != nil {
		return err
	}
	return c.waitReady()
}

// Shutdown stops every server. It is safe to call more than once.
func (c *NATSCluster) Shutdown() {
	for i := range c.o.Size {
		c.Stop(i)
	}
}

// NATSBinaryCluster is a JetStream cluster of nats-server processes started
// from the binary on PATH (Debian's package ships 2.9), joined by routes on
// loopback, each with its own store. Kill ends one with SIGKILL, as a
// crash would: no leadership is handed over. Its methods are safe for
// concurrent use.
type NATSBinaryCluster struct {
	o       NATSClusterOptions
	bin     string
	version string
	nodes   []*natsNode
}

// natsNode is one nats-server process of a NATSBinaryCluster.
type natsNode struct {
	clientPort, routePort, httpPort int
	mu                              sync.Mutex
	cmd                             *exec.Cmd
	done                            chan struct{}
}

// StartNATSBinaryCluster starts o.Size nats-server processes with JetStream
// and routes to each other, and waits until each reports itself healthy
// (/healthz: current with a JetStream meta leader). It returns
// ErrNoNATSServer if the binary is not on PATH. The caller owns the
// processes: call Shutdown.
func StartNATSBinaryCluster(ctx context.Context, o NATSClusterOptions) (*NATSBinaryCluster, error) {
	if o.Dir == "" {
		return nil, errors.New("servers: NATS cluster Dir is required")
	}
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		return nil, ErrNoNATSServer
	}
	o.Size = cmp.Or(o.Size, DefaultNATSClusterSize)
	o.Host = cmp.Or(o.Host, "127.0.0.1")
	o.Name = cmp.Or(o.Name, "invalidator")
	o.Ready = cmp.Or(o.Ready, 30*time.Second)
	c := &NATSBinaryCluster{o: o, bin: bin}
	if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
		if m := natsVersion.FindSubmatch(out); m != nil {
			c.version = string(m[1])
		}
	}
	for i := range o.Size {
		n := &natsNode{}
		if n.clientPort, n.routePort, err = freePortPair(); err != nil {
			return nil, err
		}
		if n.httpPort, err = FreePort(); err != nil {
			return nil, err
		}
		if i == 0 && o.Port != 0 {
			n.clientPort = o.Port
		}
		c.nodes = append(c.nodes, n)
	}
	for i := range o.Size {
		if err := c.start(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	if err := c.waitHealthy(ctx); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// Version is what `nats-server --version` printed, such as "2.9.10".
func (c *NATSBinaryCluster) Version() string { return c.version }

// Size is the number of servers, running or stopped.
func (c *NATSBinaryCluster) Size() int { return c.o.Size }

// Name is server i's name, as stream info reports its leader and replicas.
func (c *NATSBinaryCluster) Name(i int) string { return c.o.Name + "-" + strconv.Itoa(i) }

// Index is the index of the server named name, or -1.
func (c *NATSBinaryCluster) Index(name string) int {
	for i := range c.o.Size {
		if c.Name(i) == name {
			return i
		}
	}
	return -1
}

// ClientURL is the nats:// URL of server i.
func (c *NATSBinaryCluster) ClientURL(i int) string {
	return "nats://" + net.JoinHostPort(c.o.Host, strconv.Itoa(c.nodes[i].clientPort))
}

// URL lists the client URLs of every server, comma-separated, as NATS_URL
// takes them.
func (c *NATSBinaryCluster) URL() string {
	urls := make([]string, c.o.Size)
	for i := range urls {
		urls[i] = c.ClientURL(i)
	}
	return strings.Join(urls, ",")
}

func (c *NATSBinaryCluster) start(i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("servers: nats-server %s is running", c.Name(i))
	}
	var routes []string
	for _, m := range c.nodes {
		routes = append(routes, "nats://"+net.JoinHostPort(c.o.Host, strconv.Itoa(m.routePort)))
	}
	cmd := exec.Command(c.bin, "-a", c.o.Host, "-p", strconv.Itoa(n.clientPort), "-m", strconv.Itoa(n.httpPort),
		"-n", c.Name(i), "-js", "-sd", filepath.Join(c.o.Dir, "node-"+strconv.Itoa(i)),
		"--cluster_name", c.o.Name, "--cluster", "nats://"+net.JoinHostPort(c.o.Host, strconv.Itoa(n.routePort)),
		"--routes", strings.Join(routes, ","))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("servers: start nats-server %s: %w", c.Name(i), err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.cmd, n.done = cmd, done
	return nil
}

// waitHealthy waits until every running server answers /healthz with 200:
// it is up, and current with a JetStream meta leader.
func (c *NATSBinaryCluster) waitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(c.o.Ready)
	hc := &http.Client{Timeout: time.Second}
	for i, n := range c.nodes {
		url := "http://" + net.JoinHostPort(c.o.Host, strconv.Itoa(n.httpPort)) + "/healthz"
		if !c.running(i) {
			continue
		}
		for !healthy(ctx, hc, url) {
			if time.Now().After(deadline) {
				return fmt.Errorf("servers: nats-server %s not healthy after %s", c.Name(i), c.o.Ready)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-c.exited(i):
				return fmt.Errorf("servers: nats-server %s exited at start", c.Name(i))
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

func healthy(ctx context.Context, hc *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (c *NATSBinaryCluster) running(i int) bool {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// exited is closed when server i's process has exited; nil (never ready)
// while it is stopped.
func (c *NATSBinaryCluster) exited(i int) <-chan struct{} {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.done
}

// Kill ends server i with SIGKILL and waits for the process to be gone.
// Killing a stopped server does nothing.
func (c *NATSBinaryCluster) Kill(i int) { c.end(i, syscall.SIGKILL) }

// Stop ends server i with SIGTERM (a clean shutdown) and waits for it,
// killing it after 10 s. Stopping a stopped server does nothing.
func (c *NATSBinaryCluster) Stop(i int) { c.end(i, syscall.SIGTERM) }

func (c *NATSBinaryCluster) end(i int, sig syscall.Signal) {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd, n.done = nil, nil
}

// Restart starts the stopped server i again on its ports and store, and
// waits until every running server is healthy.
func (c *NATSBinaryCluster) Restart(ctx context.Context, i int) error {
	if err := c.start(i); err != nil {
		return err
	}
	return c.waitHealthy(ctx)
}

// Shutdown stops every server. It is safe to call more than once.
func (c *NATSBinaryCluster) Shutdown() {
	for i := range c.nodes {
		c.Stop(i)
	}
}
