package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// masterView is what one master says of itself in CLUSTER NODES (its
// "myself" line): its id, config epoch, slot ranges, and whether it is
// migrating or importing a slot (shown on that line only).
type masterView struct {
	id     string
	epoch  int64
	slots  string // the slot tokens, in the server's order
	master bool   // it still calls itself a master
	moving bool   // a slot is migrating from or importing to it
}

// topology maps each master's address to its own view.
type topology map[string]masterView

// nodeLine is one parsed line of CLUSTER NODES.
type nodeLine struct {
	id, addr string
	flags    []string
	epoch    int64
	slots    []string
}

func parseNodes(text string) []nodeLine {
	var out []nodeLine
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		epoch, _ := strconv.ParseInt(f[6], 10, 64)
		out = append(out, nodeLine{id: f[0], addr: addr, flags: strings.Split(f[2], ","), epoch: epoch, slots: f[8:]})
	}
	return out
}

// mastersOf lists the addresses of the nodes a CLUSTER NODES reply calls
// masters (failed ones included: a sweep must reach them or fail).
func mastersOf(text string) []string {
	var addrs []string
	for _, n := range parseNodes(text) {
		if slices.Contains(n.flags, "master") && !slices.Contains(n.flags, "noaddr") {
			addrs = append(addrs, n.addr)
		}
	}
	slices.Sort(addrs)
	return addrs
}

// selfView is the "myself" line of a CLUSTER NODES reply.
func selfView(text string) (masterView, error) {
	for _, n := range parseNodes(text) {
		if !slices.Contains(n.flags, "myself") {
			continue
		}
		v := masterView{id: n.id, epoch: n.epoch, master: slices.Contains(n.flags, "master"), slots: strings.Join(n.slots, " ")}
		v.moving = strings.Contains(v.slots, "[")
		return v, nil
	}
	return masterView{}, fmt.Errorf("CLUSTER NODES has no myself line")
}

// topology asks any node for the masters, then each master for its own
// view. A master that does not answer fails the snapshot (and the sweep):
// its part of the keyspace cannot be swept now.
func (e *Cluster) topology(ctx context.Context) (topology, error) {
	text, err := e.rdb.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster nodes: %w", err)
	}
	addrs := mastersOf(text)
	t := topology{}
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		first error
	)
	for _, addr := range addrs {
		n, err := e.node(ctx, addr)
		if err != nil {
			return nil, err
		}
		wg.Go(func() {
			v, err := n.view(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				first = cmpErr(first, fmt.Errorf("cluster nodes on %s: %w", addr, err))
				return
			}
			t[addr] = v
		})
	}
	wg.Wait()
	return t, first
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func (n *clusterNode) view(ctx context.Context) (masterView, error) {
	text, err := n.client.ClusterNodes(ctx).Result()
	if err != nil {
		return masterView{}, err
	}
	return selfView(text)
}

// sweepable lists the addresses of t's masters, sorted.
func (t topology) sweepable() []string {
	var out []string
	for addr, v := range t {
		if v.master {
			out = append(out, addr)
		}
	}
	slices.Sort(out)
	return out
}

// changed lists the masters of next whose part of the keyspace may have
// received keys since prev: new masters, masters whose id, epoch or slots
// differ, and masters with a slot migrating or importing in either view.
func changed(prev, next topology) []string {
	var out []string
	for _, addr := range slices.Sorted(maps.Keys(next)) {
		v := next[addr]
		p, ok := prev[addr]
		if v.master && (!ok || p.id != v.id || p.epoch != v.epoch || p.slots != v.slots || !p.master || p.moving || v.moving) {
			out = append(out, addr)
		}
	}
	return out
}

// anyMoving reports whether a slot of t is migrating.
func (t topology) anyMoving() bool {
	for _, v := range t {
		if v.moving {
			return true
		}
	}
	return false
}

// clientOptions are the options of a plain client on one node of rdb.
func nodeOptions(o *redis.ClusterOptions, addr string) *redis.Options {
	return &redis.Options{
		Addr: addr, ClientName: o.ClientName, Protocol: o.Protocol, Dialer: o.Dialer,
		Username: o.Username, Password: o.Password, CredentialsProvider: o.CredentialsProvider,
		TLSConfig: o.TLSConfig, DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		MaxRetries: o.MaxRetries, PoolSize: 4,
	}
}
