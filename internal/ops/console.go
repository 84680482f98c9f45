package ops

import (
	"context"
)

// Health is the state of Redis (each node of a cluster) and NATS, for the
// operator console's overview.
type Health struct {
	// Redis and NATS are "ok" or a short error.
	Redis string `json:"redis"`
	NATS  string `json:"nats"`
	// Nodes lists a Redis Cluster's nodes; none for one server.
	Nodes []NodeHealth `json:"nodes,omitempty"`
	// Paused says why the worker does not consume ("" while it does).
	Paused string `json:"paused,omitempty"`
}

// NodeHealth is one node of a Redis Cluster.
type NodeHealth struct {
	Addr  string `json:"addr"`
	Role  string `json:"role"`
	State string `json:"state"`
	Ping  string `json:"ping"`
}

// Health checks Redis and NATS as /health does, and lists a cluster's
// nodes as /api/v3/system/redis/stats does.
func (s *Server) Health(ctx context.Context) Health {
	checks, _ := s.checks(ctx)
	h := Health{Redis: checks["redis"], NATS: checks["nats"]}
	if s.d.Worker != nil {
		h.Paused = s.d.Worker.Stats().Paused
	}
	if nodes, err := s.clusterNodes(ctx); err == nil {
		for _, n := range nodes {
			h.Nodes = append(h.Nodes, NodeHealth{Addr: n.Addr, Role: n.Role, State: n.State, Ping: n.Ping})
		}
	}
	return h
}
