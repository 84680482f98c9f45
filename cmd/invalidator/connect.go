package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	if _, err := cfg.UseGenerations(rules.Warms()); err != nil { // before any connection
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
	if err := probeTLS(cfg.Redis); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("TLS with Redis at %s failed (%s): check REDIS_URL's scheme (rediss://) and port and the REDIS_TLS_* files",
			logging.RedactURL(cfg.RedisURL), tlsReason(err))
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.Redis.DialTimeout+time.Second)
	defer cancel()
	info, err := rdb.InfoMap(pctx, "server").Result()
	if redis.IsAuthError(err) {
		rdb.Close()
		return nil, fmt.Errorf("password refused by Redis at %s (%s): check the user and password in REDIS_URL",
			logging.RedactURL(cfg.RedisURL), firstWord(err))
	}
	if tlsMisconfigured(err) {
		rdb.Close()
		return nil, fmt.Errorf("TLS with Redis at %s failed (%s): check REDIS_URL's scheme (rediss://) and port and the REDIS_TLS_* files",
			logging.RedactURL(cfg.RedisURL), tlsReason(err))
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
	opts = append(opts, config.NATSOptions(cfg.NATSCreds, cfg.NATSTLS)...)
	// A first attempt without RetryOnFailedConnect, which would hide an
	// authorization error behind endless background retries.
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	for _, auth := range natsAuthErrors {
		if errors.Is(err, auth) {
			return nil, fmt.Errorf("credentials refused by NATS at %s (%w): check the user and password or token in NATS_URL, or NATS_CREDS",
				logging.RedactURL(cfg.NATSURL), err)
		}
	}
	if tlsMisconfigured(err) {
		return nil, fmt.Errorf("TLS with NATS at %s failed (%s): check NATS_URL's scheme and port and the NATS_TLS_* files",
			logging.RedactURL(cfg.NATSURL), tlsReason(err))
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

// tlsMisconfigured reports whether err is a TLS failure that waiting will
// not heal: a certificate the CA did not sign or for another name, a
// plaintext port answering a TLS client (or the reverse), a client
// certificate the server refused.
func tlsMisconfigured(err error) bool {
	if err == nil {
		return false
	}
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
		alert    tls.AlertError
	)
	return errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &record) || errors.As(err, &alert) ||
		errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted) ||
		strings.Contains(err.Error(), "tls: ")
}

// tlsReason is the TLS error's own words, without what a server echoed.
func tlsReason(err error) string {
	var record tls.RecordHeaderError
	if errors.As(err, &record) {
		return "the server did not answer in TLS: a plaintext port?"
	}
	msg := err.Error()
	if i := strings.Index(msg, "tls: "); i >= 0 {
		return msg[i:]
	}
	if i := strings.Index(msg, "x509: "); i >= 0 {
		return msg[i:]
	}
	return msg
}

// probeTLS checks a rediss:// server's TLS handshake at start. A server
// that accepts the connection but does not complete the handshake (a
// plaintext port waits for a command that never comes) or refuses the
// certificates is an error; one that refuses the connection is down, and
// the worker waits for it.
func probeTLS(opt *redis.Options) error {
	if opt.TLSConfig == nil || opt.Network == "unix" {
		return nil
	}
	c, err := net.DialTimeout("tcp", opt.Addr, opt.DialTimeout)
	if err != nil {
		return nil // down or unreachable: waited for
	}
	defer c.Close()
	cfg := opt.TLSConfig.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(opt.Addr)
	}
	tc := tls.Client(c, cfg)
	_ = tc.SetDeadline(time.Now().Add(min(opt.DialTimeout, 3*time.Second)))
	if err := tc.Handshake(); err != nil {
		var nerr net.Error
		if errors.As(err, &nerr) && nerr.Timeout() {
			return tls.RecordHeaderError{Msg: "no TLS answer"}
		}
		return err
	}
	return nil
}
