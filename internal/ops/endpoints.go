package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/invalidator/invalidator/cdc"
	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/nats-io/nuid"
	"github.com/redis/go-redis/v9"
)

// checks pings Redis and NATS; each value is "ok" or a short error.
func (s *Server) checks(ctx context.Context) (map[string]string, bool) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	res := map[string]string{"nats": shortError(s.natsCheck(ctx))}
	if s.d.Redis != nil {
		res["redis"] = shortError(s.d.Redis.Ping(ctx).Err())
	}
	if s.d.CDC != nil {
		res["postgres"] = postgresCheck(s.d.CDC())
	}
	ok := true
	for _, v := range res {
		ok = ok && v == "ok"
	}
	return res, ok
}

// postgresCheck is "ok" while the runner streams or stands by, else its
// last error.
func postgresCheck(st cdc.Status) string {
	switch {
	case st.Active || st.Standby:
		return "ok"
	case st.Error != "":
		return shortError(errors.New(st.Error))
	}
	return "connecting"
}

func (s *Server) natsCheck(ctx context.Context) error {
	if s.d.NATS == nil || !s.d.NATS.IsConnected() {
		return fmt.Errorf("disconnected")
	}
	return s.d.NATS.FlushWithContext(ctx)
}

func status(ok bool) (string, int) {
	if ok {
		return "healthy", http.StatusOK
	}
	return "unhealthy", http.StatusServiceUnavailable
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	checks, ok := s.checks(r.Context())
	st, code := status(ok)
	writeJSON(w, code, map[string]any{"status": st, "checks": checks})
}

// ready is health plus the worker's own state: it answers 503 with the
// reason while consumption is paused (Redis unreachable, or a permission
// Redis refuses), so a load balancer or an operator sees why.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	checks, ok := s.checks(r.Context())
	if s.d.Worker != nil {
		if why := s.d.Worker.Stats().Paused; why != "" {
			checks["worker"], ok = "paused: "+why, false
		} else {
			checks["worker"] = "ok"
		}
	}
	st, code := status(ok)
	if s.d.CDC != nil {
		cs := s.d.CDC()
		switch {
		case cs.Standby:
			checks["cdc"], st, code = "standby", "standby", http.StatusServiceUnavailable
		case !cs.Active:
			checks["cdc"], st, code = "not streaming", "unhealthy", http.StatusServiceUnavailable
		default:
			checks["cdc"] = "ok"
		}
	}
	writeJSON(w, code, map[string]any{"status": st, "checks": checks})
}

func (s *Server) live(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "alive"})
}

// redisInfo is what the endpoints report from INFO.
type redisInfo struct {
	Version          string `json:"version"`
	UptimeSeconds    int64  `json:"uptime_seconds"`
	ConnectedClients int64  `json:"connected_clients"`
	UsedMemory       int64  `json:"used_memory"`
	UsedMemoryHuman  string `json:"used_memory_human"`
	TotalCommands    int64  `json:"total_commands_processed"`
	KeyspaceHits     int64  `json:"keyspace_hits"`
	KeyspaceMisses   int64  `json:"keyspace_misses"`
	// Nodes lists a Redis Cluster's nodes (none for one server): masters
	// with their slot ranges, replicas, and the state of each.
	Nodes   []redisNode `json:"nodes,omitempty"`
	HitRate string      `json:"hit_rate"`
}

func (s *Server) info(ctx context.Context) (redisInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	m, err := s.d.Redis.InfoMap(ctx, "server", "clients", "memory", "stats").Result()
	if err != nil {
		return redisInfo{}, err
	}
	get := func(sec, k string) string { return m[capitalize(sec)][k] }
	num := func(sec, k string) int64 { n, _ := strconv.ParseInt(get(sec, k), 10, 64); return n }
	in := redisInfo{
		Version:          get("server", "redis_version"),
		UptimeSeconds:    num("server", "uptime_in_seconds"),
		ConnectedClients: num("clients", "connected_clients"),
		UsedMemory:       num("memory", "used_memory"),
		UsedMemoryHuman:  get("memory", "used_memory_human"),
		TotalCommands:    num("stats", "total_commands_processed"),
		KeyspaceHits:     num("stats", "keyspace_hits"),
		KeyspaceMisses:   num("stats", "keyspace_misses"),
	}
	in.HitRate = hitRate(in.KeyspaceHits, in.KeyspaceMisses)
	if in.Nodes, err = s.clusterNodes(ctx); err != nil {
		return in, err
	}
	return in, nil
}

// capitalize maps "server" to "Server", the section names InfoMap uses.
func capitalize(s string) string { return string(s[0]-'a'+'A') + s[1:] }

func hitRate(hits, misses int64) string {
	if hits+misses == 0 {
		return "0.0%"
	}
	return strconv.FormatFloat(100*float64(hits)/float64(hits+misses), 'f', 1, 64) + "%"
}

func (s *Server) redisStats(w http.ResponseWriter, r *http.Request) {
	in, err := s.info(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "redis: "+shortError(err))
		return
	}
	s.d.Logger.Debug("📊 Redis stats served", slog.String("hit_rate", in.HitRate))
	writeJSON(w, http.StatusOK, in)
}

func (s *Server) detailed(w http.ResponseWriter, r *http.Request) {
	checks, ok := s.checks(r.Context())
	st, code := status(ok)
	components := map[string]any{"nats": s.natsComponent(r.Context(), checks["nats"])}
	if s.d.Redis != nil {
		components["redis"] = s.redisComponent(r.Context(), checks["redis"])
		components["worker"] = s.workerComponent()
	}
	if s.d.CDC != nil {
		components["cdc"] = s.cdcComponent(checks["postgres"])
	}
	writeJSON(w, code, map[string]any{"status": st, "components": components})
}

func (s *Server) redisComponent(ctx context.Context, check string) map[string]any {
	c := map[string]any{"status": check}
	if in, err := s.info(ctx); err == nil {
		c["version"], c["connected_clients"] = in.Version, in.ConnectedClients
		c["used_memory"], c["hit_rate"] = in.UsedMemoryHuman, in.HitRate
		if len(in.Nodes) > 0 {
			c["mode"], c["nodes"] = "cluster", in.Nodes
		}
	}
	return c
}

func (s *Server) natsComponent(ctx context.Context, check string) map[string]any {
	c := map[string]any{"status": check}
	if s.d.NATS != nil {
		c["server_version"] = s.d.NATS.ConnectedServerVersion()
	}
	if s.d.Worker == nil || s.d.JS == nil || check != "ok" {
		return c
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	cfg := s.d.Worker.Config()
	if st, err := s.d.JS.Stream(ctx, cfg.Stream); err == nil {
		if info, err := st.Info(ctx); err == nil {
			c["stream"] = map[string]any{"name": cfg.Stream, "messages": info.State.Msgs, "bytes": info.State.Bytes}
		}
	}
	if cons := s.d.Worker.Consumer(); cons != nil {
		if info, err := cons.Info(ctx); err == nil {
			c["consumer"] = map[string]any{"name": cfg.Consumer, "pending": info.NumPending,
				"ack_pending": info.NumAckPending, "redelivered": info.NumRedelivered}
		}
	}
	return c
}

func (s *Server) workerComponent() map[string]any {
	if s.d.Worker == nil {
		return map[string]any{"status": "not started"}
	}
	st := s.d.Worker.Stats()
	var last any
	if !st.LastEventAt.IsZero() {
		last = st.LastEventAt.UTC().Format(time.RFC3339Nano)
	}
	c := map[string]any{
		"concurrency": st.Concurrency, "busy": st.BusyHandlers, "events_in_flight": st.Busy,
		"events_applied": st.Applied, "events_dead_lettered": st.DeadLettered, "events_retried": st.Retried,
		"events_unrouted": st.Unrouted, "keys_removed": st.KeysRemoved, "last_event_at": last,
	}
	if s.d.Generations != nil {
		on, why := s.d.Generations()
		c["generations"] = map[string]any{"on": on, "why": why}
	}
	return c
}

// cdcComponent is the runner's slot, lag and last commit.
func (s *Server) cdcComponent(check string) map[string]any {
	st := s.d.CDC()
	role := "starting"
	switch {
	case st.Active:
		role = "active"
	case st.Standby:
		role = "standby"
	}
	c := map[string]any{"status": check, "role": role, "slot": st.Slot, "publication": st.Publication,
		"lag_bytes": st.LagBytes, "confirmed_lsn": st.ConfirmedLSN}
	if st.LastCommitLSN != "" {
		c["last_commit"] = map[string]any{"lsn": st.LastCommitLSN, "at": st.LastCommitAt.Format(time.RFC3339Nano)}
	}
	if st.Error != "" {
		c["error"] = shortError(errors.New(st.Error))
	}
	return c
}

// opResult is one step of the self-test.
type opResult struct {
	OK        bool    `json:"ok"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
}

func timed(f func() error) opResult {
	start := time.Now()
	err := f()
	r := opResult{OK: err == nil, LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		r.Error = shortError(err)
	}
	return r
}

// redisTest writes, reads and deletes one unique key with a short TTL.
func (s *Server) redisTest(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*checkTimeout)
	defer cancel()
	key, value := SelfTestPrefix+nuid.Next(), nuid.Next()
	log := s.d.Logger.With(slog.String("key", key))
	set := timed(func() error { return s.d.Redis.Set(ctx, key, value, selfTestTTL).Err() })
	log.Info("💾 self-test SET", slog.Bool("ok", set.OK), slog.Float64("ms", set.LatencyMS))
	get := timed(func() error {
		got, err := s.d.Redis.Get(ctx, key).Result()
		if err == nil && got != value {
			return fmt.Errorf("read back a different value")
		}
		if err == redis.Nil {
			return fmt.Errorf("key not found after SET")
		}
		return err
	})
	log.Info("🔍 self-test GET", slog.Bool("ok", get.OK), slog.Float64("ms", get.LatencyMS))
	del := timed(func() error { return s.d.Redis.Del(ctx, key).Err() })
	log.Info("🗑️ self-test DEL", slog.Bool("ok", del.OK), slog.Float64("ms", del.LatencyMS))
	ok := set.OK && get.OK && del.OK
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
		log.Warn("❌ Redis self-test failed")
	}
	writeJSON(w, code, map[string]any{"ok": ok, "key": key,
		"operations": map[string]opResult{"set": set, "get": get, "delete": del}})
}

// sweeps shows the shared SCAN walk of each node: whether it runs, the pass,
// its progress, the COUNT it sends and the patterns it serves.
func (s *Server) sweeps(w http.ResponseWriter, _ *http.Request) {
	nodes := []sweep.Status{}
	if s.d.Sweeps != nil {
		nodes = append(nodes, s.d.Sweeps()...)
	}
	running := 0
	for _, n := range nodes {
		if n.Running {
			running++
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"running": running, "nodes": nodes})
}

// consistency shows the consistency checker's results: per timescale, the
// reads checked, stale and unknown over the last hour and day with their
// nines, and the last stale findings. {"enabled": false} when the checker
// is off (CONSISTENCY_SAMPLE=0).
func (s *Server) consistency(w http.ResponseWriter, _ *http.Request) {
	var c *consistency.Checker
	if s.d.Worker != nil {
		c = s.d.Worker.Consistency()
	}
	if c == nil {
		writeJSON(w, http.StatusOK, map[string]any{"enabled": false})
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Enabled bool `json:"enabled"`
		consistency.Report
	}{true, c.Report(time.Now())})
}
