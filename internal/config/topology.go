package config

import (
	"net"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The Redis topologies.
const (
	ModeSingle   = "single"
	ModeCluster  = "cluster"
	ModeSentinel = "sentinel"
)

// RedisTopology is where Redis runs: one server (REDIS_URL's host), a Redis
// Cluster (REDIS_CLUSTER_ADDRS, seed nodes) or a master that Sentinels name
// (REDIS_SENTINEL_ADDRS and REDIS_SENTINEL_MASTER). In every mode the user,
// password, TLS and DB come from REDIS_URL.
type RedisTopology struct {
	ClusterAddrs     []string
	SentinelAddrs    []string
	SentinelMaster   string
	SentinelPassword string
}

// Mode is ModeSingle, ModeCluster or ModeSentinel.
func (t RedisTopology) Mode() string {
	switch {
	case len(t.ClusterAddrs) > 0:
		return ModeCluster
	case len(t.SentinelAddrs) > 0:
		return ModeSentinel
	}
	return ModeSingle
}

// NewRedisClient returns the client of the topology with base's settings
// (credentials, TLS, DB, pool, timeouts, retries): a *redis.Client for one
// server or a Sentinel-managed master (it follows failovers), a
// *redis.ClusterClient for a cluster.
func NewRedisClient(base *redis.Options, t RedisTopology) redis.UniversalClient {
	switch t.Mode() {
	case ModeCluster:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: t.ClusterAddrs, ClientName: base.ClientName, Username: base.Username, Password: base.Password,
			TLSConfig: base.TLSConfig, PoolSize: base.PoolSize, MaxRetries: base.MaxRetries,
			DialTimeout: base.DialTimeout, ReadTimeout: base.ReadTimeout, WriteTimeout: base.WriteTimeout,
		})
	case ModeSentinel:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: t.SentinelMaster, SentinelAddrs: t.SentinelAddrs, SentinelPassword: t.SentinelPassword,
			ClientName: base.ClientName, Username: base.Username, Password: base.Password, DB: base.DB,
			TLSConfig: base.TLSConfig, PoolSize: base.PoolSize, MaxRetries: base.MaxRetries,
			DialTimeout: base.DialTimeout, ReadTimeout: base.ReadTimeout, WriteTimeout: base.WriteTimeout,
		})
	}
	return redis.NewClient(base)
}

// topologyEnvs are the settings of RedisTopology.
var topologyEnvs = []string{"REDIS_CLUSTER_ADDRS", "REDIS_SENTINEL_ADDRS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD"}

// topology reads and checks the topology settings; base is REDIS_URL's
// options (nil if REDIS_URL was refused).
func (r *resolver) topology(base *redis.Options) RedisTopology {
	t := RedisTopology{
		ClusterAddrs:     r.addrs("REDIS_CLUSTER_ADDRS"),
		SentinelAddrs:    r.addrs("REDIS_SENTINEL_ADDRS"),
		SentinelMaster:   r.str("REDIS_SENTINEL_MASTER"),
		SentinelPassword: r.str("REDIS_SENTINEL_PASSWORD"),
	}
	_, cluster := r.get("REDIS_CLUSTER_ADDRS")
	_, sentinel := r.get("REDIS_SENTINEL_ADDRS")
	_, master := r.get("REDIS_SENTINEL_MASTER")
	switch {
	case len(t.ClusterAddrs) > 0 && len(t.SentinelAddrs) > 0:
		r.fail(cluster, "and %s select two modes; set one (cluster or sentinel)", sentinel)
	case len(t.SentinelAddrs) > 0 && t.SentinelMaster == "":
		r.fail(master, "must name the master when %s is set", sentinel)
	case len(t.SentinelAddrs) == 0 && t.SentinelMaster != "":
		r.fail(sentinel, "must list the sentinels (host:port,...) when %s is set", master)
	case len(t.ClusterAddrs) > 0 && base != nil && base.DB != 0:
		_, url := r.get("REDIS_URL")
		r.fail(url, "must use DB 0 in cluster mode (Redis Cluster has one database), not %d", base.DB)
	}
	return t
}

// addrs reads a comma-separated list of host:port; empty is none.
func (r *resolver) addrs(env string) []string {
	raw := r.str(env)
	if raw == "" {
		return nil
	}
	_, name := r.get(env)
	var out []string
	for _, a := range strings.Split(raw, ",") {
		a = strings.TrimSpace(a)
		host, port, err := net.SplitHostPort(a)
		p, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			r.fail(name, "must be host:port,host:port,..., not %q", a)
			return nil
		}
		out = append(out, a)
	}
	return out
}
