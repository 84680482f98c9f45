package worker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The failover replay window on a Redis Cluster (see replay.go for the
// single-master case). Each shard replicates asynchronously on its own, so
// each shard's master is watched: every HealthInterval the worker reads
// CLUSTER SHARDS (which node is the master of each slot range) and asks
// each master directly for its id (CLUSTER MYID), recording when each
// last answered. When a shard's slot ranges get another master (a replica
// promoted after its master died), the events acked from one window before
// the old master last answered are read again and their plans run through
// the engine again. The engine applies a plan on every shard, so the
// replay re-applies the events everywhere, not only on the shard that
// failed over: removing a key twice is harmless, and a pattern's sweep on
// the other shards is the cost. Slots moved between masters that stay
// (resharding) are not a master change.

// shardWatch follows the masters of a cluster.
type shardWatch struct {
	cc *redis.ClusterClient

	mu      sync.Mutex
	owners  map[string]string        // slot ranges → master id, from the last CLUSTER SHARDS
	seen    map[string]int64         // master id → unix nanos when it last answered
	clients map[string]*redis.Client // master address → a client of its own
}

func newShardWatch(cc *redis.ClusterClient) *shardWatch {
	return &shardWatch{cc: cc, seen: map[string]int64{}, clients: map[string]*redis.Client{}}
}

// master is one shard's master as CLUSTER SHARDS names it.
type master struct {
	id, addr string
}

// read returns the master of each shard (keyed by its slot ranges).
func (s *shardWatch) read(ctx context.Context) (map[string]master, error) {
	shards, err := s.cc.ClusterShards(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster shards: %w", err)
	}
	out := map[string]master{}
	for _, sh := range shards {
		if len(sh.Slots) == 0 {
			continue
		}
		var ranges []string
		for _, r := range sh.Slots {
			ranges = append(ranges, fmt.Sprintf("%d-%d", r.Start, r.End))
		}
		slices.Sort(ranges)
		for _, n := range sh.Nodes {
			if n.Role == "master" {
				out[strings.Join(ranges, ",")] = master{id: n.ID, addr: fmt.Sprintf("%s:%d", n.IP, n.Port)}
			}
		}
	}
	return out, nil
}

// ping asks each master for its id and records when it answered.
func (s *shardWatch) ping(ctx context.Context, masters map[string]master, sent time.Time) {
	var wg sync.WaitGroup
	for _, m := range masters {
		c := s.client(m.addr)
		wg.Go(func() {
			id, err := c.Do(ctx, "CLUSTER", "MYID").Text()
			if err == nil && id == m.id {
				s.mu.Lock()
				s.seen[id] = sent.UnixNano()
				s.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func (s *shardWatch) client(addr string) *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[addr]
	if c == nil {
		o := s.cc.Options()
		c = redis.NewClient(&redis.Options{Addr: addr, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
			DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout, MaxRetries: -1, PoolSize: 1})
		s.clients[addr] = c
	}
	return c
}

func (s *shardWatch) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clients {
		_ = c.Close()
	}
}

// oldest is the earliest time a current master last answered (0 before
// any answered): acks older than one window before it are not needed.
func (s *shardWatch) oldest(masters map[string]master) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var t int64
	for _, m := range masters {
		if v := s.seen[m.id]; v != 0 && (t == 0 || v < t) {
			t = v
		}
	}
	return t
}

// runCluster watches every shard's master every HealthInterval until ctx
// ends, and replays when one changes.
func (r *replayer) runCluster(ctx context.Context) {
	s := r.shards
	defer s.close()
	interval := r.w.cfg.HealthInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		sent := time.Now()
		qctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		masters, err := s.read(qctx)
		if err == nil {
			s.ping(qctx, masters, sent)
			r.shardsChanged(ctx, masters)
			if o := s.oldest(masters); o != 0 {
				r.seen.Store(o)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// shardsChanged compares masters with the last view and replays once for
// the shards whose master changed, from the earliest time one of their old
// masters last answered.
func (r *replayer) shardsChanged(ctx context.Context, masters map[string]master) {
	s := r.shards
	s.mu.Lock()
	prev := s.owners
	if prev == nil {
		r.w.log.Debug("🔍 failover replay watches the cluster's masters", slog.Int("shards", len(masters)))
	}
	s.owners = map[string]string{}
	for ranges, m := range masters {
		s.owners[ranges] = m.id
	}
	var changed []string
	var lastSeen int64
	for ranges, m := range masters {
		old, ok := prev[ranges]
		if !ok || old == m.id {
			continue
		}
		changed = append(changed, fmt.Sprintf("%s: %s → %s", ranges, short(old), short(m.id)))
		if v := s.seen[old]; v != 0 && (lastSeen == 0 || v < lastSeen) {
			lastSeen = v
		}
	}
	s.mu.Unlock()
	if len(changed) == 0 {
		return
	}
	if lastSeen == 0 {
		lastSeen = time.Now().UnixNano()
	}
	slices.Sort(changed)
	log := r.w.log.With(slog.String("shards", strings.Join(changed, "; ")))
	r.replaySince(ctx, log, time.Unix(0, lastSeen))
}

// short is the first 8 characters of a node id, as redis-cli shows them.
func short(id string) string { return id[:min(len(id), 8)] }
