package servers

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNoRedisServer means the redis-server binary is not on PATH.
var ErrNoRedisServer = errors.New("servers: redis-server not found on PATH (install it, e.g. apt-get install -y redis-server)")

// RedisOptions configures a redis-server child process.
type RedisOptions struct {
	// Host to bind. Defaults to 127.0.0.1.
	Host string
	// Port to listen on; 0 picks a free port.
	Port int
	// Dir is the working directory (AOF and dump files). Required.
	Dir string
	// AppendOnly turns AOF on (appendfsync always), so data survives a restart.
	AppendOnly bool
	// Password, when set, is given as requirepass.
	Password string
	// Stdout receives the server's log; nil discards it.
	Stdout *os.File
	// TLS, when set, makes the server speak TLS only, on Port, with mutual
	// authentication: clients must show a certificate the CA signed.
	TLS *TLSFiles
	// Args are more command-line options, such as "--enable-debug-command",
	// "local" or "--maxmemory", "1mb"; they come after the ones above.
	Args []string
}

// Redis is a running redis-server child process. Its methods are safe for
// concurrent use.
type Redis struct {
	opts RedisOptions
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("servers: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartRedis starts redis-server and waits (at most 10 s) until it answers PING.
func StartRedis(ctx context.Context, o RedisOptions) (*Redis, error) {
	if o.Dir == "" {
		return nil, errors.New("servers: Redis Dir is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		o.Port = p
	}
	r := &Redis{opts: o}
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Addr is host:port of the server.
func (r *Redis) Addr() string { return net.JoinHostPort(r.opts.Host, strconv.Itoa(r.opts.Port)) }

// URL is the redis:// (rediss:// with TLS) URL of the server, with the
// password if one is set.
func (r *Redis) URL() string {
	scheme := "redis://"
	if r.opts.TLS != nil {
		scheme = "rediss://"
	}
	if r.opts.Password != "" {
		return scheme + ":" + r.opts.Password + "@" + r.Addr() + "/0"
	}
	return scheme + r.Addr() + "/0"
}

// Start (re)starts a stopped server on the same port and directory.
func (r *Redis) Start(ctx context.Context) error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return ErrNoRedisServer
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("servers: redis-server already running")
	}
	port := []string{"--port", strconv.Itoa(r.opts.Port)}
	if t := r.opts.TLS; t != nil {
		port = []string{"--port", "0", "--tls-port", strconv.Itoa(r.opts.Port), "--tls-cert-file", t.ServerCert,
			"--tls-key-file", t.ServerKey, "--tls-ca-cert-file", t.CA, "--tls-auth-clients", "yes"}
	}
	args := []string{
		"--bind", r.opts.Host,
		"--dir", r.opts.Dir,
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--logfile", "",
	}
	args = append(port, args...)
	if r.opts.AppendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if r.opts.Password != "" {
		args = append(args, "--requirepass", r.opts.Password)
	}
	args = append(args, r.opts.Args...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = r.opts.Dir
	if r.opts.Stdout != nil {
		cmd.Stdout, cmd.Stderr = r.opts.Stdout, r.opts.Stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("servers: start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.cmd, r.done = cmd, done
	return r.waitReady(ctx, done)
}

func (r *Redis) waitReady(ctx context.Context, exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r.ping() == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("servers: redis-server on port %d exited at start", r.opts.Port)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("servers: redis-server on port %d not ready after 10s", r.opts.Port)
}

// ping speaks just enough RESP to know the server is up and has loaded its data.
func (r *Redis) ping() error {
	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		return err
	}
	if r.opts.TLS != nil {
		cfg, err := r.opts.TLS.ClientConfig()
		if err != nil {
			c.Close()
			return err
		}
		cfg.ServerName = r.opts.Host
		tc := tls.Client(c, cfg)
		_ = tc.SetDeadline(time.Now().Add(time.Second))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return err
		}
		c = tc
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	cmd := "PING\r\n"
	if r.opts.Password != "" {
		cmd = fmt.Sprintf("AUTH %s\r\nPING\r\n", r.opts.Password)
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	var line string
	for range strings.Count(cmd, "\r\n") {
		if line, err = br.ReadString('\n'); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(line, "+PONG") {
		return errors.New("servers: redis not ready: " + strings.TrimSpace(line))
	}
	return nil
}

// PID is the process id of the running server, 0 if it is stopped.
func (r *Redis) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Stop ends the server with SIGTERM (AOF is fsynced on every write, so nothing
// is lost) and waits for it to exit, killing it after 10 s. Stopping a stopped
// server does nothing.
func (r *Redis) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	r.cmd, r.done = nil, nil
	return nil
}
