package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
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
then runs the worker like 'run'. When CDC_DATABASE_URL is set and the rules
file has a cdc section, it also runs 'cdc' in the same process. Everything it
started stops with it.
With --nats-cluster it starts a cluster of 3 embedded JetStream servers
instead, the first on NATS_URL's port, and creates the streams with 3
replicas.`

func devCmd(ctx context.Context, e env, args []string) error {
	cfg, rules, natsCluster, err := loadDev(e, args)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "invalidator-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	redis.SetLogger(logging.RedisLogger{Log: newLogger(e, cfg)})
	startNATS := devNATS
	if natsCluster {
		startNATS = devNATSCluster
	}
	stopNATS, err := startNATS(e, cfg, dir)
	if err != nil {
		return err
	}
	defer stopNATS()
	stopRedis, err := devRedis(ctx, e, cfg, dir)
	if err != nil {
		return err
	}
	defer stopRedis()
	banner := func() { fmt.Fprint(e.stderr, devExample(cfg)) }
	return serve(ctx, e, cfg, rules, banner)
}

// loadDev is loadWorker for dev, which has a flag of its own: --nats-cluster.
func loadDev(e env, args []string) (*config.Run, *cachekeys.Rules, bool, error) {
	fs := newFlagSet(e, "dev", "[flags]", devSummary)
	natsCluster := fs.Bool("nats-cluster", false, "start a cluster of 3 embedded JetStream servers instead of one, and create the streams with 3 replicas")
	build := config.DevFlags(fs, e.getenv)
	buildCDC := config.DevCDCFlags(fs, e.getenv)
	pos, err := parse(fs, args)
	if err != nil {
		return nil, nil, false, err
	}
	if len(pos) > 0 {
		return nil, nil, false, usagef("dev takes no arguments, got %q", pos[0])
	}
	cfg, err := build()
	if err != nil {
		return nil, nil, false, usageError{err}
	}
	if cfg.CDC, err = buildCDC(); err != nil {
		return nil, nil, false, usageError{err}
	}
	rules, err := loadRules(cfg.RulesPath)
	if err != nil {
		return nil, nil, false, err
	}
	if err := cfg.ResolveWarmEnv(rules.EnvNames(), e.getenv); err != nil {
		return nil, nil, false, usageError{err}
	}
	return cfg, rules, *natsCluster, nil
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
		w := cfg.Worker.WithDefaults()
		fmt.Fprintf(e.stderr, "⚠️ NATS already answers at %s: dev uses it, and creates the streams %s and %s and the consumer %s there if they are missing\n",
			logging.RedactURL(cfg.NATSURL), w.Stream, w.DeadLetterStream, w.Consumer)
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

// devNATSCluster starts 3 embedded JetStream servers joined by routes, the
// first on NATS_URL's port (the others on free ports), points NATS_URL at
// all three and sets the streams' replicas to 3 (unless
// NATS_STREAM_REPLICAS asks for more than 1). A NATS server that already
// answers there is an error: dev would not know whether it is a cluster.
func devNATSCluster(e env, cfg *config.Run, dir string) (func(), error) {
	first, _, _ := strings.Cut(cfg.NATSURL, ",")
	if nc, err := nats.Connect(first, nats.Timeout(time.Second)); err == nil {
		nc.Close()
		return nil, usagef("NATS already answers at %s, so dev --nats-cluster cannot start its cluster there: stop it, or leave out --nats-cluster (with NATS_STREAM_REPLICAS=3 if it is a cluster)", logging.RedactURL(first))
	}
	host, port, err := hostPort(first, 4222)
	if err != nil || !isLocal(host) {
		return nil, fmt.Errorf("NATS at %s does not answer and is not local, so dev cannot start a cluster there", logging.RedactURL(first))
	}
	if host == "localhost" || host == "" {
		host = "127.0.0.1"
	}
	c, err := servers.StartNATSCluster(servers.NATSClusterOptions{Dir: filepath.Join(dir, "nats"), Host: host, Port: port})
	if err != nil {
		return nil, fmt.Errorf("start a NATS cluster on %s:%d: %w", host, port, err)
	}
	cfg.NATSURL = c.URL()
	if cfg.Worker.StreamReplicas <= 1 {
		cfg.Worker.StreamReplicas = c.Size()
	}
	fmt.Fprintf(e.stderr, "✅ started a NATS cluster of %d embedded JetStream servers on %s, streams with %d replicas (data in %s)\n",
		c.Size(), c.URL(), cfg.Worker.StreamReplicas, dir)
	return c.Shutdown, nil
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

// devExample is the copy-paste example dev prints once it is ready. It
// exports the URLs in use once, so that the lines after it reach the same
// servers; a password or token in a URL is shown as a placeholder.
func devExample(cfg *config.Run) string {
	exports := fmt.Sprintf("export REDIS_URL=%s NATS_URL=%s", shellQuote(placeholderURL(cfg.RedisURL)), shellQuote(placeholderURLs(cfg.NATSURL)))
	if cfg.NATSCreds != "" {
		exports += " NATS_CREDS=" + shellQuote(cfg.NATSCreds)
	}
	var b strings.Builder
	b.WriteString("\ninvalidator dev is ready. In another terminal:\n\n")
	fmt.Fprintf(&b, "  %s\n", exports)
	if strings.Contains(exports, placeholder) {
		fmt.Fprintf(&b, "  # put the password (or token) in place of %s above\n", placeholder)
	}
	fmt.Fprintf(&b, "  redis-cli -u \"$REDIS_URL\" SET cache:course_analytics:42 cached\n")
	fmt.Fprintf(&b, "  %s publish events.course.updated '{\"course_id\": \"42\"}'\n", selfCommand())
	fmt.Fprintf(&b, "  redis-cli -u \"$REDIS_URL\" EXISTS cache:course_analytics:42     # 0: the key is gone\n")
	b.WriteString("\nStop with Ctrl-C.\n\n")
	return b.String()
}

// placeholder stands for a secret in the example dev prints.
const placeholder = "<password>"

// placeholderURL replaces the password (or a bare token) of a URL with
// placeholder; a URL without one is returned as it is.
func placeholderURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	const mark = "PLACEHOLDER0PLACEHOLDER"
	if _, ok := u.User.Password(); ok {
		user := u.User.Username()
		if user == "" && strings.HasPrefix(u.Scheme, "redis") {
			user = "default" // redis-cli -u sends an empty user name as given, and fails
		}
		u.User = url.UserPassword(user, mark)
	} else {
		u.User = url.User(mark) // a token
	}
	return strings.Replace(u.String(), mark, placeholder, 1)
}

func placeholderURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		parts[i] = placeholderURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@,=+%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// selfCommand is how to run this binary again from another terminal: the
// path of the executable, or `go run ./cmd/invalidator` when it was built
// by go run.
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil || strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return "go run ./cmd/invalidator"
	}
	if p, err := exec.LookPath(filepath.Base(exe)); err == nil && p == exe {
		return filepath.Base(exe)
	}
	return shellQuote(exe)
}
