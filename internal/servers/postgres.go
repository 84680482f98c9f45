package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoPostgres means the PostgreSQL server binaries (initdb, postgres) were
// not found on PATH, through pg_config, or in /usr/lib/postgresql.
var ErrNoPostgres = errors.New("servers: PostgreSQL binaries (initdb, postgres) not found (install them, e.g. apt-get install -y postgresql)")

// PostgresOptions configures a PostgreSQL child process.
type PostgresOptions struct {
	// Port to listen on, on 127.0.0.1; 0 picks a free port.
	Port int
	// Args are more "-c name=value" settings, after the defaults
	// (wal_level=logical, max_replication_slots=32, max_wal_senders=32,
	// fsync=off).
	Args []string
	// Stdout receives the server's log; nil discards it.
	Stdout *os.File
}

// Postgres is a PostgreSQL server started in a fresh data directory with
// wal_level=logical, trusting connections from loopback. Its methods are
// safe for concurrent use.
type Postgres struct {
	opts PostgresOptions
	bin  string // the directory of initdb and postgres
	dir  string // temp dir holding data/ and the socket
	cred *syscall.Credential

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// PostgresBinDir finds the directory of the PostgreSQL server binaries.
func PostgresBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "postgres")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", ErrNoPostgres
}

// StartPostgres runs initdb in a new temp dir (as the postgres user when
// the caller is root, since initdb refuses root) and starts the server,
// waiting at most 30 s until it accepts connections. Stop removes it all.
func StartPostgres(ctx context.Context, o PostgresOptions) (*Postgres, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	if o.Port == 0 {
		if o.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	p := &Postgres{opts: o, bin: bin}
	if p.dir, err = os.MkdirTemp("", "invalidator-pg-"); err != nil {
		return nil, fmt.Errorf("servers: postgres dir: %w", err)
	}
	if err := p.init(ctx); err != nil {
		_ = os.RemoveAll(p.dir)
		return nil, err
	}
	if err := p.Start(ctx); err != nil {
		_ = os.RemoveAll(p.dir)
		return nil, err
	}
	return p, nil
}

// init runs initdb, as postgres when root.
func (p *Postgres) init(ctx context.Context) error {
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("servers: initdb cannot run as root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chmod(p.dir, 0o755); err != nil {
			return err
		}
		if err := os.Chown(p.dir, uid, gid); err != nil {
			return fmt.Errorf("servers: chown postgres dir: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, "initdb"), "-D", p.dataDir(), "-U", "postgres",
		"--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("servers: initdb: %w: %s", err, lastLines(string(out), 5))
	}
	return nil
}

func (p *Postgres) dataDir() string { return filepath.Join(p.dir, "data") }

// Start (re)starts a stopped server on the same port and data directory.
func (p *Postgres) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return errors.New("servers: postgres already running")
	}
	args := []string{"-D", p.dataDir(), "-p", strconv.Itoa(p.opts.Port), "-k", p.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "wal_level=logical",
		"-c", "max_replication_slots=32", "-c", "max_wal_senders=32", "-c", "fsync=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200"}
	for _, a := range p.opts.Args {
		args = append(args, "-c", a)
	}
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), args...)
	if p.opts.Stdout != nil {
		cmd.Stdout, cmd.Stderr = p.opts.Stdout, p.opts.Stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("servers: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	return p.waitReady(ctx, done)
}

func (p *Postgres) waitReady(ctx context.Context, exited <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := pgconn.Connect(cctx, p.URL("postgres"))
		cancel()
		if err == nil {
			_ = c.Close(ctx)
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("servers: postgres on port %d exited at start", p.opts.Port)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("servers: postgres on port %d not ready after 30s", p.opts.Port)
}

// Addr is 127.0.0.1:port.
func (p *Postgres) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.opts.Port)) }

// URL is the postgres:// URL of database db, as the superuser postgres.
func (p *Postgres) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: p.Addr(), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Stop shuts the server down (fast mode), waiting at most 20 s before it
// kills it.
func (p *Postgres) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
	return nil
}

// Close stops the server and removes its directory.
func (p *Postgres) Close() error {
	err := p.Stop()
	if rerr := os.RemoveAll(p.dir); err == nil {
		err = rerr
	}
	return err
}
