package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/internal/logging"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

const devSummary = `The one-command local start. Uses NATS at NATS_URL if it answers, otherwise
starts an embedded JetStream server there (data in a temp dir); uses Redis at
REDIS_URL if it answers, otherwise starts redis-server on that port as a child
(when the binary is on PATH). Loads testdata/rules.yaml unless told otherwise,
then runs the worker like 'run'. Everything it started stops with it.`

func devCmd(ctx context.Context, e env, args []string) error {
	cfg, rules, err := loadWorker(e, "dev", devSummary, args)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "invalidator-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	redis.SetLogger(logging.RedisLogger{Log: newLogger(e, cfg)})
	stopNATS, err := devNATS(e, cfg, dir)
	if err != nil {
		return err
	}
	defer stopNATS()
	stopRedis, err := devRedis(ctx, e, cfg, dir)
	if err != nil {
		return err
	}
	defer stopRedis()
	banner := func() {
		fmt.Fprintf(e.stderr, `
invalidator dev is ready. In another terminal:

  redis-cli -u %s SET cache:course_analytics:42 cached
  go run ./cmd/invalidator publish events.course.updated '{"course_id": "42"}'
  redis-cli -u %s EXISTS cache:course_analytics:42     # 0: the key is gone

Stop with Ctrl-C.

`, logging.RedactURL(cfg.RedisURL), logging.RedactURL(cfg.RedisURL))
	}
	return serve(ctx, e, cfg, rules, banner)
}

// hostPort splits a URL's host and port, with a default port.
func hostPort(raw string, defPort int) (string, int, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", 0, err
	}
	port := defPort
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return "", 0, err
		}
	}
	return u.Hostname(), port, nil
}

func devNATS(e env, cfg *config.Run, dir string) (func(), error) {
	nc, err := nats.Connect(cfg.NATSURL, nats.Timeout(time.Second))
	if err == nil {
		nc.Close()
		fmt.Fprintf(e.stderr, "🔌 using NATS at %s\n", logging.RedactURL(cfg.NATSURL))
		return func() {}, nil
	}
	host, port, err := hostPort(cfg.NATSURL, 4222)
	if err != nil || !isLocal(host) {
		return nil, fmt.Errorf("NATS at %s does not answer and is not local, so dev cannot start it", logging.RedactURL(cfg.NATSURL))
	}
	s, err := servers.StartNATS(servers.NATSOptions{Host: host, Port: port, StoreDir: dir + "/nats"})
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS on %s:%d: %w", host, port, err)
	}
	fmt.Fprintf(e.stderr, "✅ started embedded NATS with JetStream on %s (data in %s)\n", s.ClientURL(), dir)
	return func() { s.Shutdown(); s.WaitForShutdown() }, nil
}

func devRedis(ctx context.Context, e env, cfg *config.Run, dir string) (func(), error) {
	rdb := redis.NewClient(cfg.Redis)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := rdb.Ping(pctx).Err()
	cancel()
	rdb.Close()
	if err == nil {
		fmt.Fprintf(e.stderr, "🔌 using Redis at %s\n", logging.RedactURL(cfg.RedisURL))
		return func() {}, nil
	}
	host, port, herr := hostPort(cfg.RedisURL, 6379)
	if herr != nil || !isLocal(host) {
		return nil, fmt.Errorf("redis at %s does not answer (%v) and is not local, so dev cannot start it", logging.RedactURL(cfg.RedisURL), err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	r, err := servers.StartRedis(ctx, servers.RedisOptions{Host: host, Port: port, Dir: dir, Password: cfg.Redis.Password})
	if errors.Is(err, servers.ErrNoRedisServer) {
		return nil, fmt.Errorf("redis at %s does not answer and redis-server is not installed: install it (apt-get install -y redis-server) or point REDIS_URL at a running Redis", logging.RedactURL(cfg.RedisURL))
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(e.stderr, "✅ started redis-server on %s (pid of a child; stops with dev)\n", r.Addr())
	return func() { _ = r.Stop() }, nil
}

func isLocal(host string) bool {
	if host == "localhost" || host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
