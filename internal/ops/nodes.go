package ops

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// redisNode is one node of a Redis Cluster as the endpoints report it.
type redisNode struct {
	ID     string   `json:"id"`
	Addr   string   `json:"addr"`
	Role   string   `json:"role"` // master or replica
	Master string   `json:"master,omitempty"`
	Slots  []string `json:"slots,omitempty"` // ranges, such as "0-5460"
	State  string   `json:"state"`           // connected, or the node's flags (fail, handshake, ...)
	Ping   string   `json:"ping"`            // ok, or a short error of a PING sent to it
}

// clusterNodes lists the nodes of a cluster client's cluster from CLUSTER
// NODES, pinging each master through the client's own connection to it;
// nil when the client is not a cluster client.
func (s *Server) clusterNodes(ctx context.Context) ([]redisNode, error) {
	cc, ok := s.d.Redis.(*redis.ClusterClient)
	if !ok {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	raw, err := cc.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster nodes: %w", err)
	}
	nodes := parseClusterNodes(raw)
	var mu sync.Mutex
	pings := map[string]string{}
	_ = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { // one goroutine per master
		err := c.Ping(ctx).Err()
		mu.Lock()
		pings[c.Options().Addr] = shortError(err)
		mu.Unlock()
		return nil
	})
	for i := range nodes {
		if p, ok := pings[nodes[i].Addr]; ok {
			nodes[i].Ping = p
		} else {
			nodes[i].Ping = "not pinged"
		}
	}
	return nodes, nil
}

// parseClusterNodes reads the CLUSTER NODES text: masters first, by their
// first slot, each followed by its replicas.
func parseClusterNodes(raw string) []redisNode {
	var nodes []redisNode
	for _, line := range strings.Split(strings.TrimSpace(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		n := redisNode{ID: f[0], Addr: strings.SplitN(f[1], "@", 2)[0], Role: "master", State: f[7]}
		flags := strings.Split(f[2], ",")
		for _, fl := range flags {
			switch fl {
			case "slave":
				n.Role, n.Master = "replica", f[3]
			case "fail", "fail?", "handshake", "noaddr":
				n.State = fl
			}
		}
		for _, sl := range f[8:] {
			if !strings.HasPrefix(sl, "[") { // [slot->-id] are migrations in progress
				n.Slots = append(n.Slots, sl)
			}
		}
		nodes = append(nodes, n)
	}
	first := func(n redisNode) string {
		if len(n.Slots) == 0 {
			return "~"
		}
		return fmt.Sprintf("%05s", strings.SplitN(n.Slots[0], "-", 2)[0])
	}
	sort.SliceStable(nodes, func(i, j int) bool {
		ki, kj := nodes[i].ID, nodes[j].ID
		if nodes[i].Role == "replica" {
			ki = nodes[i].Master
		}
		if nodes[j].Role == "replica" {
			kj = nodes[j].Master
		}
		if ki != kj {
			return first(nodeByID(nodes, ki)) < first(nodeByID(nodes, kj))
		}
		return nodes[i].Role == "master" && nodes[j].Role != "master"
	})
	return nodes
}

func nodeByID(nodes []redisNode, id string) redisNode {
	for _, n := range nodes {
		if n.ID == id {
			return n
		}
	}
	return redisNode{}
}
