package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ErrNoNATSServer means the nats-server binary is not on PATH.
var ErrNoNATSServer = errors.New("servers: nats-server not found on PATH (install it, e.g. apt-get install -y nats-server)")

// NATSBinary is a nats-server child process started from the binary on PATH
// (Debian's package ships 2.9), with JetStream, on a loopback port. Its
// methods are safe for concurrent use.
type NATSBinary struct {
	port    int
	dir     string
	version string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
}

// StartNATSBinary starts `nats-server -js` on a free loopback port with its
// store in dir, and waits (at most 10 s) until it accepts connections.
func StartNATSBinary(ctx context.Context, dir string) (*NATSBinary, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	n := &NATSBinary{port: port, dir: dir}
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// URL is the nats:// URL of the server.
func (n *NATSBinary) URL() string {
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port))
}

// Version is what `nats-server --version` printed, such as "2.9.10".
func (n *NATSBinary) Version() string { return n.version }

var natsVersion = regexp.MustCompile(`v?(\d+\.\d+\.\d+)`)

// Start (re)starts a stopped server on the same port and store.
func (n *NATSBinary) Start(ctx context.Context) error {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		return ErrNoNATSServer
	}
	if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
		if m := natsVersion.FindSubmatch(out); m != nil {
			n.version = string(m[1])
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return errors.New("servers: nats-server already running")
	}
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-js", "-sd", n.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("servers: start nats-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.cmd, n.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)), time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("servers: nats-server on port %d exited at start", n.port)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("servers: nats-server on port %d not ready after 10s", n.port)
}

// Stop ends the server with SIGTERM and waits for it, killing it after 10 s.
// Stopping a stopped server does nothing.
func (n *NATSBinary) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd, n.done = nil, nil
	return nil
}
