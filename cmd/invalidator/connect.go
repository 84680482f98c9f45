package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/internal/logging"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// loadWorker parses the flags of run and dev, loads the rules file and
// reads the environment variables its warm headers name; any problem is a
// usage error naming the variable, flag or file.
func loadWorker(e env, name, summary string, args []string) (*config.Run, *cachekeys.Rules, error) {
	fs := newFlagSet(e, name, "[flags]", summary)
	flags := config.Flags
	if name == "dev" {
		flags = config.DevFlags // dev, unlike run, has a default rules file
	}
	build := flags(fs, e.getenv)
	pos, err := parse(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if len(pos) > 0 {
		return nil, nil, usagef("%s takes no arguments, got %q", name, pos[0])
	}
	cfg, err := build()
	if err != nil {
		return nil, nil, usageError{err}
	}
	rules, err := loadRules(cfg.RulesPath)
	if err != nil {
		return nil, nil, err
	}
	if err := cfg.ResolveWarmEnv(rules.EnvNames(), e.getenv); err != nil {
		return nil, nil, usageError{err}
	}
	return cfg, rules, nil
}

func newLogger(e env, cfg *config.Run) *slog.Logger {
	log := logging.New(e.stderr, logging.Options{Format: cfg.LogFormat, Level: cfg.LogLevel, Secrets: cfg.Secrets()})
	redis.SetLogger(logging.RedisLogger{Log: log})
	return log
}

// connectRedis returns a client. It does not fail when Redis is down (the
// worker waits for it), but logs the outcome of a first command; a refused
// password will not heal by waiting, so it is an error.
func connectRedis(ctx context.Context, cfg *config.Run, log *slog.Logger) (redis.UniversalClient, error) {
	rdb := config.NewRedisClient(cfg.Redis, cfg.Topology)
	rdb.AddHook(logging.RedisHook{Log: log})
	log.Info("🔧 Redis configured", slog.String("url", logging.RedactURL(cfg.RedisURL)), slog.String("mode", cfg.Topology.Mode()),
		slog.Int("max_connections", cfg.Redis.PoolSize), slog.Duration("socket_timeout", cfg.Redis.ReadTimeout),
		slog.Duration("connect_timeout", cfg.Redis.DialTimeout))
	pctx, cancel := context.WithTimeout(ctx, cfg.Redis.DialTimeout+time.Second)
	defer cancel()
	info, err := rdb.InfoMap(pctx, "server").Result()
	if redis.IsAuthError(err) {
		rdb.Close()
		return nil, fmt.Errorf("password refused by Redis at %s (%s): check the user and password in REDIS_URL",
			logging.RedactURL(cfg.RedisURL), firstWord(err))
	}
	if err != nil {
		log.Warn("⚠️ Redis not reachable yet; the worker waits for it", slog.Any("error", err))
		return rdb, nil
	}
	log.Info("🔌 connected to Redis", slog.String("addr", cfg.Redis.Addr))
	log.Info("📊 Redis server", slog.String("version", info["Server"]["redis_version"]))
	return rdb, nil
}

// firstWord is the error code of a Redis error, such as WRONGPASS or NOAUTH:
// enough to tell the cases apart, and free of anything the server echoed.
func firstWord(err error) string {
	w, _, _ := strings.Cut(err.Error(), " ")
	return w
}

// natsAuthErrors are the answers of a server that refuses the credentials.
var natsAuthErrors = []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired}

// connectNATS connects with endless reconnects. A server that refuses the
// connection at start is retried in the background; one that refuses the
// credentials is an error, since waiting will not change them.
func connectNATS(cfg *config.Run, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name("invalidator"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("⚠️ NATS disconnected, reconnecting", slog.Any("error", err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("🔌 NATS reconnected", slog.String("server", logging.RedactURL(nc.ConnectedUrlRedacted())))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("⚠️ NATS error", slog.Any("error", err))
		}),
	}
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	// A first attempt without RetryOnFailedConnect, which would hide an
	// authorization error behind endless background retries.
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	for _, auth := range natsAuthErrors {
		if errors.Is(err, auth) {
			return nil, fmt.Errorf("credentials refused by NATS at %s (%w): check the user and password or token in NATS_URL, or NATS_CREDS",
				logging.RedactURL(cfg.NATSURL), err)
		}
	}
	if err != nil {
		nc, err = nats.Connect(cfg.NATSURL, append(opts, nats.RetryOnFailedConnect(true))...)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", logging.RedactURL(cfg.NATSURL), err)
	}
	if nc.IsConnected() {
		log.Info("🔌 connected to NATS", slog.String("server", nc.ConnectedUrlRedacted()))
		log.Info("📊 NATS server", slog.String("version", nc.ConnectedServerVersion()))
	} else {
		log.Warn("⚠️ NATS not reachable yet, retrying in the background", slog.String("url", logging.RedactURL(cfg.NATSURL)))
	}
	return nc, nil
}

// closeNATS drains the connection (flushing acks) and waits, at most 10 s.
func closeNATS(nc *nats.Conn) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		nc.Close()
	}
}
