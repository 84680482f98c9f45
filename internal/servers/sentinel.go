package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name under which the sentinels of a SentinelSet
// monitor the master (REDIS_SENTINEL_MASTER).
const SentinelMaster = "mymaster"

// The sentinels' timing in a SentinelSet: a master that has not answered for
// SentinelDownAfter is subjectively down, and a failover that has not
// finished within SentinelFailoverTimeout is retried (by another sentinel).
const (
	SentinelDownAfter       = time.Second
	SentinelFailoverTimeout = 3 * time.Second
)

// SentinelSet is a Redis master, one replica (started with --replicaof) and
// three `redis-server --sentinel` processes that monitor the master under
// SentinelMaster with a quorum of 2, all on loopback. The roles of the two
// data nodes swap on a failover: ask MasterAddr or WaitFailover who leads.
type SentinelSet struct {
	// Nodes are the data nodes: the first master, then its replica.
	Nodes []*Redis
	// Sentinels are the three sentinel processes.
	Sentinels []*Sentinel
}

// StartSentinelSet starts a master, a replica and three sentinels, each in a
// directory under dir (their logs are there too, in *.log), and waits until
// the replica has synchronized and every sentinel knows the replica and the
// two other sentinels and names the same master. On error, whatever started
// is stopped. It returns ErrNoRedisServer when redis-server is not on PATH.
func StartSentinelSet(ctx context.Context, dir string) (*SentinelSet, error) {
	s := &SentinelSet{}
	if err := s.start(ctx, dir); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *SentinelSet) start(ctx context.Context, dir string) error {
	master, err := startNode(ctx, dir, "master")
	if err != nil {
		return err
	}
	s.Nodes = append(s.Nodes, master)
	replica, err := startNode(ctx, dir, "replica", "--replicaof", master.opts.Host, strconv.Itoa(master.opts.Port))
	if err != nil {
		return err
	}
	s.Nodes = append(s.Nodes, replica)
	if err := waitLinkUp(ctx, replica); err != nil {
		return err
	}
	for i := range 3 {
		sn, err := StartSentinel(ctx, filepath.Join(dir, "sentinel-"+strconv.Itoa(i+1)), master.Addr())
		if err != nil {
			return err
		}
		s.Sentinels = append(s.Sentinels, sn)
	}
	return s.waitReady(ctx)
}

func startNode(ctx context.Context, dir, name string, args ...string) (*Redis, error) {
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	// A full sync starts at once instead of after the default 5 s wait for
	// more replicas.
	args = append([]string{"--logfile", filepath.Join(d, name+".log"), "--repl-diskless-sync-delay", "0"}, args...)
	return StartRedis(ctx, RedisOptions{Dir: d, Args: args})
}

// waitLinkUp waits until the replica reports master_link_status:up.
func waitLinkUp(ctx context.Context, replica *Redis) error { return waitLink(ctx, replica, "up") }

// WaitLinkDown waits (at most 15 s) until replica reports that its link to
// the master is down: once it does, what it had read of the replication
// stream and not executed is dropped.
func WaitLinkDown(ctx context.Context, replica *Redis) error { return waitLink(ctx, replica, "down") }

func waitLink(ctx context.Context, replica *Redis, status string) error {
	c := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1})
	defer c.Close()
	return poll(ctx, 15*time.Second, "the replica's link to its master is "+status, func(ctx context.Context) error {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if got := infoField(info, "master_link_status"); got != status {
			return errors.New("master_link_status is " + got)
		}
		return nil
	})
}

// waitReady waits until every sentinel monitors the master with one replica
// whose link is up, knows the two other sentinels, and names the same master.
func (s *SentinelSet) waitReady(ctx context.Context) error {
	want := s.Nodes[0].Addr()
	return poll(ctx, 30*time.Second, "the sentinels agree on the master", func(ctx context.Context) error {
		for _, sn := range s.Sentinels {
			if err := sn.check(ctx, want); err != nil {
				return fmt.Errorf("sentinel %s: %w", sn.Addr(), err)
			}
		}
		return nil
	})
}

// SentinelAddrs are the sentinels' host:port (REDIS_SENTINEL_ADDRS).
func (s *SentinelSet) SentinelAddrs() []string {
	out := make([]string, len(s.Sentinels))
	for i, sn := range s.Sentinels {
		out[i] = sn.Addr()
	}
	return out
}

// Node returns the data node listening on addr, or nil.
func (s *SentinelSet) Node(addr string) *Redis {
	for _, n := range s.Nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// MasterAddr is the master the sentinels name, when every sentinel that
// answers names the same one.
func (s *SentinelSet) MasterAddr(ctx context.Context) (string, error) {
	var addrs []string
	for _, sn := range s.Sentinels {
		a, err := sn.MasterAddr(ctx)
		if err != nil {
			continue
		}
		addrs = append(addrs, a)
	}
	switch {
	case len(addrs) == 0:
		return "", errors.New("servers: no sentinel answers")
	case slices.ContainsFunc(addrs, func(a string) bool { return a != addrs[0] }):
		return "", fmt.Errorf("servers: the sentinels disagree on the master: %v", addrs)
	}
	return addrs[0], nil
}

// WaitFailover waits (at most 30 s) until the sentinels agree on a master
// other than old and that node answers ROLE as a master, and returns it.
func (s *SentinelSet) WaitFailover(ctx context.Context, old string) (*Redis, error) {
	var master *Redis
	err := poll(ctx, 30*time.Second, "a failover away from "+old, func(ctx context.Context) error {
		addr, err := s.MasterAddr(ctx)
		if err != nil {
			return err
		}
		if addr == old {
			return errors.New("the sentinels still name " + old)
		}
		if master = s.Node(addr); master == nil {
			return errors.New("the sentinels name an unknown node " + addr)
		}
		return isMaster(ctx, master)
	})
	return master, err
}

func isMaster(ctx context.Context, n *Redis) error {
	c := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
	defer c.Close()
	role, err := c.Do(ctx, "ROLE").Slice()
	if err != nil {
		return err
	}
	if len(role) == 0 || role[0] != "master" {
		return fmt.Errorf("%s answers ROLE %v", n.Addr(), role)
	}
	return nil
}

// Kill ends a data node with SIGKILL, as a crash would: nothing is flushed
// and its replicas lose the link at once. Start brings it back.
func (s *SentinelSet) Kill(n *Redis) error {
	pid := n.PID()
	if pid == 0 {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("servers: kill redis-server %d: %w", pid, err)
	}
	return n.Stop() // reaps the process
}

// Start restarts a stopped or killed data node on its port; the sentinels
// turn it into a replica of the current master.
func (s *SentinelSet) Start(ctx context.Context, n *Redis) error { return n.Start(ctx) }

// HoldReplication makes replica stop applying its master's replication
// stream for d, with CLIENT PAUSE d WRITE on the replica: the stream is
// still read but not executed, and when the master dies meanwhile, the
// replica drops what it had read and not executed. A write acknowledged by
// the master during the pause is therefore lost if the master is killed
// before d ends and the replica is promoted: asynchronous replication's
// loss window, made wide and reliable for a test.
func HoldReplication(ctx context.Context, replica *Redis, d time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1})
	defer c.Close()
	if err := c.Do(ctx, "CLIENT", "PAUSE", d.Milliseconds(), "WRITE").Err(); err != nil {
		return fmt.Errorf("servers: hold replication on %s: %w", replica.Addr(), err)
	}
	return nil
}

// ReleaseReplication ends HoldReplication before its time (CLIENT UNPAUSE):
// a held replica also holds up its own promotion by a sentinel.
func ReleaseReplication(ctx context.Context, replica *Redis) error {
	c := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1})
	defer c.Close()
	if err := c.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		return fmt.Errorf("servers: release replication on %s: %w", replica.Addr(), err)
	}
	return nil
}

// Stop stops the sentinels, then the data nodes. It is safe to call twice.
func (s *SentinelSet) Stop() {
	for _, sn := range s.Sentinels {
		_ = sn.Stop()
	}
	for _, n := range s.Nodes {
		_ = n.Stop()
	}
}

// Sentinel is a `redis-server <conf> --sentinel` child process.
type Sentinel struct {
	port int
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartSentinel writes a sentinel.conf in dir that monitors the master at
// masterAddr as SentinelMaster (quorum 2, SentinelDownAfter,
// SentinelFailoverTimeout), starts a sentinel on a free loopback port and
// waits until it answers PING.
func StartSentinel(ctx context.Context, dir, masterAddr string) (*Sentinel, error) {
	host, port, err := net.SplitHostPort(masterAddr)
	if err != nil {
		return nil, fmt.Errorf("servers: sentinel master address: %w", err)
	}
	p, err := FreePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	conf := strings.Join([]string{
		"port " + strconv.Itoa(p),
		"bind 127.0.0.1",
		"protected-mode no",
		"daemonize no",
		"dir " + strconv.Quote(dir),
		"logfile " + strconv.Quote(filepath.Join(dir, "sentinel.log")),
		fmt.Sprintf("sentinel monitor %s %s %s 2", SentinelMaster, host, port),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", SentinelMaster, SentinelDownAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", SentinelMaster, SentinelFailoverTimeout.Milliseconds()),
		fmt.Sprintf("sentinel parallel-syncs %s 1", SentinelMaster),
		"",
	}, "\n")
	// The sentinel rewrites its configuration file with what it learns.
	if err := os.WriteFile(filepath.Join(dir, "sentinel.conf"), []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	sn := &Sentinel{port: p, dir: dir}
	if err := sn.Start(ctx); err != nil {
		return nil, err
	}
	return sn, nil
}

// Addr is host:port of the sentinel.
func (sn *Sentinel) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(sn.port)) }

// Start (re)starts a stopped sentinel with its configuration file, which
// holds what it had learned.
func (sn *Sentinel) Start(ctx context.Context) error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return ErrNoRedisServer
	}
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.cmd != nil {
		return errors.New("servers: sentinel already running")
	}
	cmd := exec.Command(bin, filepath.Join(sn.dir, "sentinel.conf"), "--sentinel")
	cmd.Dir = sn.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("servers: start sentinel: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	sn.cmd, sn.done = cmd, done
	c := sn.client()
	defer c.Close()
	return poll(ctx, 10*time.Second, "sentinel "+sn.Addr()+" answers", func(ctx context.Context) error {
		select {
		case <-done:
			return errExited
		default:
		}
		return c.Ping(ctx).Err()
	})
}

var errExited = errors.New("servers: the process exited at start (see its log)")

// Stop ends the sentinel with SIGTERM and waits for it, killing it after
// 10 s. Stopping a stopped sentinel does nothing.
func (sn *Sentinel) Stop() error {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.cmd == nil {
		return nil
	}
	_ = sn.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-sn.done:
	case <-time.After(10 * time.Second):
		_ = sn.cmd.Process.Kill()
		<-sn.done
	}
	sn.cmd, sn.done = nil, nil
	return nil
}

// LogPath is the sentinel's log file.
func (sn *Sentinel) LogPath() string { return filepath.Join(sn.dir, "sentinel.log") }

func (sn *Sentinel) client() *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: sn.Addr(), MaxRetries: -1, DialTimeout: time.Second})
}

// MasterAddr is the master this sentinel names for SentinelMaster.
func (sn *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	c := sn.client()
	defer c.Close()
	hp, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("servers: sentinel %s answered %v", sn.Addr(), hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// check reports why the sentinel is not ready: it must name master, see it
// up, know one replica with its link up and two other sentinels.
func (sn *Sentinel) check(ctx context.Context, master string) error {
	c := sn.client()
	defer c.Close()
	m, err := c.Master(ctx, SentinelMaster).Result()
	if err != nil {
		return err
	}
	switch {
	case net.JoinHostPort(m["ip"], m["port"]) != master:
		return fmt.Errorf("names master %s:%s", m["ip"], m["port"])
	case m["flags"] != "master":
		return errors.New("master flags " + m["flags"])
	case m["num-other-sentinels"] != "2":
		return errors.New("knows " + m["num-other-sentinels"] + " other sentinels")
	case m["num-slaves"] != "1":
		return errors.New("knows " + m["num-slaves"] + " replicas")
	}
	replicas, err := c.Replicas(ctx, SentinelMaster).Result()
	if err != nil {
		return err
	}
	if len(replicas) != 1 || replicas[0]["master-link-status"] != "ok" || replicas[0]["flags"] != "slave" {
		return fmt.Errorf("replica state %v", replicas)
	}
	return nil
}

// poll calls check every 50 ms until it returns nil, giving up after within
// with its last error.
func poll(ctx context.Context, within time.Duration, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		err := check(cctx)
		ccancel()
		if err == nil || errors.Is(err, errExited) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("servers: waiting for %s: %w (last: %w)", what, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// infoField returns the value of one "name:value" line of INFO output.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}
