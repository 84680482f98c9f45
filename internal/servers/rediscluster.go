package servers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNoRedisCLI means the redis-cli binary, which creates and reshards a
// cluster, is not on PATH.
var ErrNoRedisCLI = errors.New("servers: redis-cli not found on PATH (install it, e.g. apt-get install -y redis-tools)")

// maxClusterPort keeps a node's cluster bus (port+10000) within the port range.
const maxClusterPort = 55535

// RedisClusterOptions configures a Redis Cluster of redis-server processes.
type RedisClusterOptions struct {
	// Dir holds one directory per node (nodes.conf, AOF). Required.
	Dir string
	// Masters is the number of masters, at least 3 (redis-cli's minimum).
	// Defaults to 3.
	Masters int
	// AppendOnly turns AOF on for every node, so a node's keys survive Stop
	// and Start.
	AppendOnly bool
	// NodeTimeout is cluster-node-timeout: how long a node may be silent
	// before the others mark it failed. Defaults to 2s.
	NodeTimeout time.Duration
	// Replicas is the number of replicas of each master (redis-cli
	// --cluster-replicas): a killed master's replica is promoted after
	// NodeTimeout. Defaults to 0.
	Replicas int
}

// RedisCluster is a running Redis Cluster: its masters (and
// RedisClusterOptions.Replicas replicas of each), one redis-server process
// per node on 127.0.0.1, every slot assigned.
type RedisCluster struct {
	opts  RedisClusterOptions
	nodes []*Redis
}

// StartRedisCluster starts masters nodes in dir and joins them into a
// cluster with redis-cli --cluster create; it returns once every node
// reports cluster_state:ok.
func StartRedisCluster(ctx context.Context, dir string, masters int) (*RedisCluster, error) {
	return StartRedisClusterWith(ctx, RedisClusterOptions{Dir: dir, Masters: masters})
}

// StartRedisClusterWith is StartRedisCluster with options.
func StartRedisClusterWith(ctx context.Context, o RedisClusterOptions) (*RedisCluster, error) {
	if o.Dir == "" {
		return nil, errors.New("servers: RedisCluster Dir is required")
	}
	if o.Masters == 0 {
		o.Masters = 3
	}
	if o.Masters < 3 {
		return nil, fmt.Errorf("servers: a Redis Cluster needs at least 3 masters, not %d", o.Masters)
	}
	if o.NodeTimeout == 0 {
		o.NodeTimeout = 2 * time.Second
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, ErrNoRedisServer
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return nil, ErrNoRedisCLI
	}
	c := &RedisCluster{opts: o}
	for range o.Masters * (1 + o.Replicas) {
		if _, err := c.AddNode(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	if err := cli(ctx, append(args, "--cluster-replicas", strconv.Itoa(o.Replicas), "--cluster-yes")...); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.WaitOK(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.waitReplicas(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// waitReplicas waits until every replica's link to its master is up.
func (c *RedisCluster) waitReplicas(ctx context.Context) error {
	for _, n := range c.nodes {
		rdb := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		info, err := rdb.Info(ctx, "replication").Result()
		_ = rdb.Close()
		if err != nil {
			return fmt.Errorf("servers: INFO replication on %s: %w", n.Addr(), err)
		}
		if infoField(info, "role") == "slave" {
			if err := waitLink(ctx, n, "up"); err != nil {
				return err
			}
		}
	}
	return nil
}

// MasterOf returns the node that is master of key's slot now, and one of
// its replicas (nil when it has none), as CLUSTER SHARDS on any running
// node says.
func (c *RedisCluster) MasterOf(ctx context.Context, key string) (master, replica *Redis, err error) {
	for _, n := range c.nodes {
		if n.PID() == 0 {
			continue
		}
		rdb := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		slot, err := rdb.ClusterKeySlot(ctx, key).Result()
		var shards []redis.ClusterShard
		if err == nil {
			shards, err = rdb.ClusterShards(ctx).Result()
		}
		_ = rdb.Close()
		if err != nil {
			continue
		}
		for _, sh := range shards {
			if !slices.ContainsFunc(sh.Slots, func(r redis.SlotRange) bool { return r.Start <= slot && slot <= r.End }) {
				continue
			}
			for _, node := range sh.Nodes {
				addr := fmt.Sprintf("%s:%d", node.IP, node.Port)
				switch {
				case node.Role == "master":
					master = c.Node(addr)
				case replica == nil && node.Health != "failed": // 7.0 says "loading" at offset 0
					replica = c.Node(addr)
				}
			}
			if master == nil {
				return nil, nil, fmt.Errorf("servers: slot %d has no master", slot)
			}
			return master, replica, nil
		}
	}
	return nil, nil, fmt.Errorf("servers: no node answers with the owner of %q", key)
}

// AddNode starts one more cluster-enabled redis-server, not yet part of the
// cluster (see Meet), and returns it.
func (c *RedisCluster) AddNode(ctx context.Context) (*Redis, error) {
	port, err := clusterPort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.opts.Dir, "node-"+strconv.Itoa(port))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	r, err := StartRedis(ctx, RedisOptions{Port: port, Dir: dir, AppendOnly: c.opts.AppendOnly, Args: []string{
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(c.opts.NodeTimeout.Milliseconds(), 10),
		"--enable-debug-command", "local",
	}})
	if err != nil {
		return nil, err
	}
	c.nodes = append(c.nodes, r)
	return r, nil
}

// clusterPort picks a free loopback port below maxClusterPort whose bus
// port (+10000) is free too.
func clusterPort() (int, error) {
	for range 200 {
		p := 20000 + rand.IntN(maxClusterPort-20000)
		if free(p) && free(p+10000) {
			return p, nil
		}
	}
	return 0, errors.New("servers: no free port pair for a cluster node")
}

func free(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// cli runs redis-cli with args and returns its output in the error.
func cli(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("servers: redis-cli %s: %w: %s", strings.Join(args[:2], " "), err, lastLines(string(out), 5))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Addrs are host:port of every node, in start order.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr()
	}
	return out
}

// Nodes are the node processes, in start order: Stop, Start or Kill one.
func (c *RedisCluster) Nodes() []*Redis { return c.nodes }

// Node returns the node listening on addr, or nil.
func (c *RedisCluster) Node(addr string) *Redis {
	for _, n := range c.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// Kill ends a node with SIGKILL (no shutdown, no final AOF rewrite) and
// waits for it to exit; Start brings it back on the same port and dir.
func Kill(n *Redis) error {
	if pid := n.PID(); pid != 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return n.Stop() // the process is gone: Stop only reaps it
}

// WaitOK waits (at most 20 s) until every running node reports
// cluster_state:ok and agrees on the owner of every slot.
func (c *RedisCluster) WaitOK(ctx context.Context) error {
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if last = c.ok(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("servers: cluster not ok after 20s: %w", last)
}

func (c *RedisCluster) ok(ctx context.Context) error {
	var view string
	for _, n := range c.nodes {
		if n.PID() == 0 {
			continue
		}
		rdb := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		info, err := rdb.ClusterInfo(ctx).Result()
		var shards []redis.ClusterShard
		if err == nil {
			shards, err = rdb.ClusterShards(ctx).Result()
		}
		_ = rdb.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state is not ok", n.Addr())
		}
		v := slotView(shards)
		if view != "" && v != view {
			return fmt.Errorf("%s: the nodes disagree on the slot map", n.Addr())
		}
		view = v
	}
	return nil
}

// slotView is a canonical text of a CLUSTER SHARDS reply: each range and
// its master.
func slotView(shards []redis.ClusterShard) string {
	var fields []string
	for _, sh := range shards {
		for _, n := range sh.Nodes {
			if n.Role != "master" {
				continue
			}
			for _, r := range sh.Slots {
				fields = append(fields, fmt.Sprintf("%d-%d@%s:%d", r.Start, r.End, n.IP, n.Port))
			}
		}
	}
	slices.Sort(fields)
	return strings.Join(fields, " ")
}

// Reshard moves slots slots from the master at from to the master at to
// with redis-cli --cluster reshard (keys move with MIGRATE, in batches of
// pipeline keys), and waits until the cluster is ok again.
func (c *RedisCluster) Reshard(ctx context.Context, from, to string, slots, pipeline int) error {
	ids := map[string]string{}
	for _, addr := range []string{from, to} {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		id, err := rdb.Do(ctx, "CLUSTER", "MYID").Text()
		_ = rdb.Close()
		if err != nil {
			return fmt.Errorf("servers: CLUSTER MYID on %s: %w", addr, err)
		}
		ids[addr] = id
	}
	err := cli(ctx, "--cluster", "reshard", from, "--cluster-from", ids[from], "--cluster-to", ids[to],
		"--cluster-slots", strconv.Itoa(slots), "--cluster-pipeline", strconv.Itoa(max(1, pipeline)), "--cluster-yes")
	if err != nil {
		return err
	}
	return c.WaitOK(ctx)
}

// Close stops every node; it is safe to call more than once.
func (c *RedisCluster) Close() {
	for _, n := range c.nodes {
		_ = n.Stop()
	}
}
