// Package config turns environment variables and command-line flags into the
// validated configuration of each component. It is the only place that reads
// the environment. Every setting has an environment variable and a flag of
// the same meaning; a flag given on the command line wins.
package config

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/invalidator/invalidator/cdc"
	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/logging"
	"github.com/invalidator/invalidator/warm"
	"github.com/invalidator/invalidator/worker"
	"github.com/redis/go-redis/v9"
)

// ErrInvalid wraps every configuration error; the message names the
// variable or flag and the problem, on one line.
var ErrInvalid = errors.New("invalid configuration")

// Defaults of the settings that have no home in a component's package.
const (
	DefaultRedisURL       = "redis://localhost:6379/0"
	DefaultNATSURL        = "nats://localhost:4222"
	DefaultRules          = "testdata/rules.yaml"
	DefaultMaxConnections = 50
	DefaultSocketTimeout  = 5 * time.Second
	DefaultHTTPAddr       = ":8080"
)

// Setting is one configuration value: its environment variable, its flag,
// the placeholder --help shows for its value, its default and what it means.
type Setting struct {
	Env, Flag, Arg, Default, Usage string
}

// Settings lists every setting `invalidator run` reads, in README order.
var Settings = []Setting{
	{"REDIS_URL", "redis-url", "url", DefaultRedisURL, "Redis to invalidate; redis:// or rediss://, password in the URL"},
	{"REDIS_MAX_CONNECTIONS", "redis-max-connections", "int", "50", "size of the Redis connection pool"},
	{"REDIS_SOCKET_TIMEOUT", "redis-socket-timeout", "duration", "5s", "read/write timeout of a Redis command"},
	{"REDIS_SOCKET_CONNECT_TIMEOUT", "redis-socket-connect-timeout", "duration", "5s", "timeout to open a Redis connection"},
	{"REDIS_RETRY_ON_TIMEOUT", "redis-retry-on-timeout", "bool", "true", "retry a Redis command (up to 3 times) after a network error or timeout"},
	{"REDIS_TLS_CA_FILE", "redis-tls-ca-file", "path", "", "CA certificates (PEM) that sign the Redis server's certificate; needs a rediss:// REDIS_URL"},
	{"REDIS_TLS_CERT_FILE", "redis-tls-cert-file", "path", "", "client certificate (PEM) for mutual TLS with Redis, with REDIS_TLS_KEY_FILE"},
	{"REDIS_TLS_KEY_FILE", "redis-tls-key-file", "path", "", "the client certificate's key (PEM)"},
	{"REDIS_TLS_SERVER_NAME", "redis-tls-server-name", "name", "", "name to verify in the Redis server's certificate (default: REDIS_URL's host)"},
	{"REDIS_CLUSTER_ADDRS", "redis-cluster-addrs", "host:port,...", "", "seed nodes of a Redis Cluster: selects cluster mode (REDIS_URL gives user, password, TLS)"},
	{"REDIS_SENTINEL_ADDRS", "redis-sentinel-addrs", "host:port,...", "", "Redis Sentinels: selects Sentinel mode, with REDIS_SENTINEL_MASTER"},
	{"REDIS_SENTINEL_MASTER", "redis-sentinel-master", "name", "", "the master's name in Sentinel mode"},
	{"REDIS_SENTINEL_PASSWORD", "redis-sentinel-password", "password", "", "password of the Sentinels, if they need one"},
	{"FAILOVER_REPLAY_WINDOW", "failover-replay-window", "duration", worker.DefaultFailoverReplayWindow.String(), "after a Redis master change, the events acked this long before are applied again; 0 turns it off"},
	{"NATS_URL", "nats-url", "url", DefaultNATSURL, "NATS server(s), comma-separated; user:password@ in the URL"},
	{"NATS_CREDS", "nats-creds", "path", "", "path of a NATS credentials file (optional)"},
	{"NATS_TLS_CA_FILE", "nats-tls-ca-file", "path", "", "CA certificates (PEM) that sign the NATS server's certificate"},
	{"NATS_TLS_CERT_FILE", "nats-tls-cert-file", "path", "", "client certificate (PEM) for mutual TLS with NATS, with NATS_TLS_KEY_FILE"},
	{"NATS_TLS_KEY_FILE", "nats-tls-key-file", "path", "", "the client certificate's key (PEM)"},
	{"NATS_STREAM", "nats-stream", "name", worker.DefaultStream, "JetStream stream of events (created on events.> if missing)"},
	{"NATS_CONSUMER", "nats-consumer", "name", worker.DefaultConsumer, "durable pull consumer name"},
	{"NATS_DLQ_STREAM", "nats-dlq-stream", "name", worker.DefaultDeadLetterStream, "dead-letter stream (created on dlq.> if missing)"},
	{"NATS_STREAM_REPLICAS", "nats-stream-replicas", "int", "1", "replicas of the streams the worker creates (3 on a NATS cluster); an existing stream is never changed"},
	{"INVALIDATOR_RULES", "rules", "path", "", "path of the rules file"},
	{"WORKER_CONCURRENCY", "concurrency", "int", strconv.Itoa(worker.DefaultConcurrency), "handlers running at once (events waiting for a sweep hold none)"},
	{"MAX_DELIVER", "max-deliver", "int", strconv.Itoa(worker.DefaultMaxDeliver), "deliveries of a failing event before it is dead-lettered"},
	{"ACK_WAIT", "ack-wait", "duration", worker.DefaultAckWait.String(), "time the server waits for an ack before it redelivers"},
	{"SCAN_COUNT", "scan-count", "int", strconv.Itoa(engine.DefaultScanCount), "largest COUNT of a SCAN (the walk lowers it to keep each call under 2 ms)"},
	{"SCAN_BUDGET", "scan-budget", "int", "0", "keys examined per second per Redis node by the shared sweep; 0 is unlimited"},
	{"GENERATIONS", "generations", "mode", "auto", "advance the generation guard before removing keys: auto (when the rules warm), on (services read and fill through the cache package), off"},
	{"CONSISTENCY_SAMPLE", "consistency-sample", "fraction", strconv.FormatFloat(consistency.DefaultSample, 'g', -1, 64), "fraction of applied events whose keys the consistency checker reads again; 0 turns it off"},
	{"CONSISTENCY_DELAYS", "consistency-delays", "durations", "1s,10s,60s", "when the checker reads them, after the event was applied: the timescales of its nines"},
	{"SHUTDOWN_TIMEOUT", "shutdown-timeout", "duration", worker.DefaultShutdownTimeout.String(), "time to finish events in flight after SIGTERM"},
	{"HTTP_ADDR", "http-addr", "addr", DefaultHTTPAddr, "host:port of the health and metrics HTTP server; empty turns it off"},
	{"OPS_TOKEN", "ops-token", "token", "", "bearer token required by /api/v3/... endpoints (optional); also the password of the console's basic auth, and without it the console is read-only"},
	{"UI_READ_ONLY", "ui-read-only", "bool", "false", "the console shows no actions, and every mutating request of the console and the API gets 405"},
	{"UI_PATH_PREFIX", "ui-path-prefix", "path", "", "path the console is served under, behind a proxy that strips nothing (like /invalidator: the console is then at /invalidator/ui/)"},
	{"WARM_CONCURRENCY", "warm-concurrency", "int", strconv.Itoa(warm.DefaultWorkers), "warm requests running at once"},
	{"WARM_MAX_PER_HOST", "warm-max-per-host", "int", strconv.Itoa(warm.DefaultPerHost), "warm requests in flight to one host"},
	{"WARM_QUEUE", "warm-queue", "int", strconv.Itoa(warm.DefaultQueue), "warm requests waiting; more are shed"},
	{"WARM_TIMEOUT", "warm-timeout", "duration", warm.DefaultTimeout.String(), "timeout of one warm request, body included"},
	{"WARM_MAX_BODY_BYTES", "warm-max-body-bytes", "int", strconv.Itoa(warm.DefaultMaxBody), "largest response body a warm request stores"},
	{"LOG_LEVEL", "log-level", "level", "info", "debug, info, warn or error"},
	{"LOG_FORMAT", "log-format", "format", "", "pretty or json; default pretty on a terminal, json otherwise"},
}

// Run is the configuration of `invalidator run` and `invalidator dev`.
type Run struct {
	RedisURL string
	// Redis holds REDIS_URL's settings and the pool's; Topology says
	// whether they reach one server, a cluster or a Sentinel-managed master
	// (see NewRedisClient).
	Redis     *redis.Options
	Topology  RedisTopology
	NATSURL   string
	NATSCreds string
	// NATSTLS are the NATS_TLS_* files (see NATSOptions).
	NATSTLS   NATSTLS
	RulesPath string
	Worker    worker.Config
	ScanCount int
	// ScanBudget paces the shared sweep: keys examined per second per node
	// (0: unlimited).
	ScanBudget int
	// Generations is auto, on or off: whether the engine advances the
	// generation guard (see UseGenerations).
	Generations string
	HTTPAddr    string
	OpsToken    string
	// UIReadOnly is UI_READ_ONLY: no actions in the console, 405 for every
	// mutating request.
	UIReadOnly bool
	// UIPathPrefix is UI_PATH_PREFIX: "" or a path like "/invalidator"
	// (leading slash, no trailing one).
	UIPathPrefix string
	LogLevel     slog.Level
	LogFormat    logging.Format
	// Warm configures the warmer (its Env is set by ResolveWarmEnv).
	Warm warm.Config
	// WarmEnv holds the values of the environment variables the rules'
	// headers_from_env name (see ResolveWarmEnv); they are secrets.
	WarmEnv map[string]string
	// CDC holds dev's CDC_* settings (see DevCDCFlags); its DatabaseURL is
	// empty for run, and for dev when CDC_DATABASE_URL is unset.
	CDC cdc.Config
}

// ResolveWarmEnv reads the environment variables named by the rules file's
// headers_from_env (names) into WarmEnv. A missing or empty one is an error
// naming it. getenv nil means the process environment.
func (r *Run) ResolveWarmEnv(names []string, getenv func(string) string) error {
	r.WarmEnv = map[string]string{}
	for _, n := range names {
		v, _ := lookup(getenv, n)
		if v == "" {
			return fmt.Errorf("%w: %s: the rules file's headers_from_env names it, but it is not set", ErrInvalid, n)
		}
		r.WarmEnv[n] = v
	}
	return nil
}

// Secrets are the strings that must never be printed.
func (r *Run) Secrets() []string {
	var s []string
	if r.Redis != nil {
		s = append(s, r.Redis.Password)
	}
	s = append(s, r.Topology.SentinelPassword)
	s = append(s, urlPasswords(r.NATSURL)...)
	s = append(s, r.OpsToken, DatabasePassword(r.CDC.DatabaseURL))
	for _, v := range r.WarmEnv {
		s = append(s, v)
	}
	return nonEmpty(s)
}

func urlPasswords(list string) []string {
	var out []string
	for _, raw := range strings.Split(list, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.User == nil {
			continue
		}
		if p, ok := u.User.Password(); ok {
			out = append(out, p)
		} else {
			out = append(out, u.User.Username()) // a bare token
		}
	}
	return out
}

func nonEmpty(s []string) []string {
	out := s[:0]
	for _, v := range s {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// Flags registers a flag for every setting on fs and returns a function that,
// after fs.Parse, resolves each setting (flag, then environment, then default)
// and builds the validated Run configuration of `invalidator run`. The rules
// file has no default there: INVALIDATOR_RULES (or --rules) must name it, so
// that a deployment never runs on an example file by accident. getenv nil
// means the process environment.
func Flags(fs *flag.FlagSet, getenv func(string) string) func() (*Run, error) {
	r := register(fs, getenv, nil, map[string]string{"INVALIDATOR_RULES": ""})
	return r.run
}

// DevFlags is [Flags] for `invalidator dev`, whose rules file defaults to
// [DefaultRules].
func DevFlags(fs *flag.FlagSet, getenv func(string) string) func() (*Run, error) {
	r := register(fs, getenv, nil, map[string]string{"INVALIDATOR_RULES": DefaultRules})
	return r.run
}

// Publish is the configuration of `invalidator publish`: where NATS is.
type Publish struct {
	NATSURL   string
	NATSCreds string
	NATSTLS   NATSTLS
}

// PublishFlags registers the NATS settings on fs, like [Flags], and returns
// the function that builds the validated Publish configuration.
func PublishFlags(fs *flag.FlagSet, getenv func(string) string) func() (*Publish, error) {
	r := register(fs, getenv, append([]string{"NATS_URL", "NATS_CREDS"}, natsTLSEnvs...), nil)
	return func() (*Publish, error) {
		p := &Publish{NATSURL: r.str("NATS_URL"), NATSCreds: r.str("NATS_CREDS")}
		r.natsURL(p.NATSURL)
		p.NATSTLS = r.natsTLS()
		return p, r.err
	}
}

// Purge is the configuration of `invalidator purge`: the Redis client, with
// the pool and timeout settings of the worker, and the SCAN COUNT hint.
type Purge struct {
	RedisURL   string
	Redis      *redis.Options
	Topology   RedisTopology
	ScanCount  int
	ScanBudget int
}

// PurgeFlags registers the Redis settings and SCAN_COUNT on fs, like
// [Flags], and returns the function that builds the validated Purge
// configuration.
func PurgeFlags(fs *flag.FlagSet, getenv func(string) string) func() (*Purge, error) {
	r := register(fs, getenv, append([]string{"REDIS_URL", "REDIS_MAX_CONNECTIONS", "REDIS_SOCKET_TIMEOUT",
		"REDIS_SOCKET_CONNECT_TIMEOUT", "REDIS_RETRY_ON_TIMEOUT", "SCAN_COUNT", "SCAN_BUDGET"}, append(topologyEnvs, tlsEnvs...)...), nil)
	return func() (*Purge, error) {
		p := &Purge{RedisURL: r.str("REDIS_URL")}
		p.Redis = r.redis(p.RedisURL)
		p.Topology = r.topology(p.Redis)
		p.ScanCount = r.integer("SCAN_COUNT", 1, 1_000_000)
		p.ScanBudget = r.integer("SCAN_BUDGET", 0, 1_000_000_000)
		return p, r.err
	}
}

// MissingEnv returns the names among names whose environment variable is
// unset or empty. getenv nil means the process environment.
func MissingEnv(names []string, getenv func(string) string) []string {
	var missing []string
	for _, n := range names {
		if v, _ := lookup(getenv, n); v == "" {
			missing = append(missing, n)
		}
	}
	return missing
}

// register puts a flag on fs for each setting named by envs (every setting
// of Settings when envs is nil; CDCSettings only by name), with defaults overriding the settings' own, and returns
// the resolver that reads them after fs.Parse.
func register(fs *flag.FlagSet, getenv func(string) string, envs []string, defaults map[string]string) *resolver {
	vals := map[string]*string{}
	settings := map[string]Setting{}
	all := Settings
	if envs != nil {
		all = append(slices.Clip(Settings), CDCSettings...)
	}
	for _, s := range all {
		if envs != nil && !slices.Contains(envs, s.Env) {
			continue
		}
		if d, ok := defaults[s.Env]; ok {
			s.Default = d
		}
		settings[s.Env] = s
		vals[s.Env] = fs.String(s.Flag, "", usage(s))
	}
	return &resolver{get: func(env string) (string, string) {
		s, ok := settings[env]
		if !ok {
			panic("config: setting " + env + " is not registered")
		}
		given := false
		fs.Visit(func(f *flag.Flag) { given = given || f.Name == s.Flag })
		if given {
			return *vals[env], "-" + s.Flag
		}
		if v, ok := lookup(getenv, env); ok {
			return v, env
		}
		return s.Default, env
	}}
}

// usage is the --help text of a setting; the backquoted Arg is the
// placeholder flag.PrintDefaults shows after the flag's name.
func usage(s Setting) string {
	def := "default " + s.Default
	switch {
	case s.Env == "INVALIDATOR_RULES" && s.Default == "":
		def = "required"
	case s.Default == "":
		def = "default none"
	}
	return fmt.Sprintf("%s (`%s`; env %s, %s)", s.Usage, s.Arg, s.Env, def)
}

func lookup(getenv func(string) string, key string) (string, bool) {
	if getenv == nil {
		return os.LookupEnv(key)
	}
	v := getenv(key)
	return v, v != ""
}

// resolver reads settings and remembers the first error.
type resolver struct {
	get func(env string) (value, name string)
	err error
}

func (r *resolver) fail(name, format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s: %s", ErrInvalid, name, fmt.Sprintf(format, a...))
	}
}

func (r *resolver) str(env string) string {
	v, _ := r.get(env)
	return strings.TrimSpace(v)
}

func (r *resolver) integer(env string, lo, hi int) int {
	v, name := r.get(env)
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < lo || n > hi {
		r.fail(name, "must be a whole number from %d to %d, not %q", lo, hi, v)
	}
	return n
}

func (r *resolver) duration(env string, lo time.Duration) time.Duration {
	v, name := r.get(env)
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		// bare numbers are seconds, as in the original app's settings
		if f, ferr := strconv.ParseFloat(strings.TrimSpace(v), 64); ferr == nil {
			d, err = time.Duration(f*float64(time.Second)), nil
		}
	}
	if err != nil || d < lo {
		r.fail(name, "must be a duration of at least %s (like 5s or 500ms), not %q", lo, v)
	}
	return d
}

func (r *resolver) boolean(env string) bool {
	v, name := r.get(env)
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		r.fail(name, "must be true or false, not %q", v)
	}
	return b
}

// run builds the configuration of run and dev.
func (r *resolver) run() (*Run, error) {
	c := &Run{
		RedisURL:  r.str("REDIS_URL"),
		NATSURL:   r.str("NATS_URL"),
		NATSCreds: r.str("NATS_CREDS"),
		RulesPath: r.str("INVALIDATOR_RULES"),
		HTTPAddr:  r.str("HTTP_ADDR"),
		OpsToken:  r.str("OPS_TOKEN"),
	}
	c.UIReadOnly = r.boolean("UI_READ_ONLY")
	c.UIPathPrefix = r.pathPrefix("UI_PATH_PREFIX")
	c.Redis = r.redis(c.RedisURL)
	c.Topology = r.topology(c.Redis)
	r.natsURL(c.NATSURL)
	c.NATSTLS = r.natsTLS()
	c.Worker = worker.Config{
		Stream:           r.str("NATS_STREAM"),
		Consumer:         r.str("NATS_CONSUMER"),
		DeadLetterStream: r.str("NATS_DLQ_STREAM"),
		Concurrency:      r.integer("WORKER_CONCURRENCY", 1, worker.DefaultMaxAckPending),
		MaxDeliver:       r.integer("MAX_DELIVER", 1, 1000),
		AckWait:          r.duration("ACK_WAIT", time.Second),
		ShutdownTimeout:  r.duration("SHUTDOWN_TIMEOUT", 0),
		StreamReplicas:   r.integer("NATS_STREAM_REPLICAS", 1, 5),
	}
	// 0 turns the replay off; the worker reads 0 as its default and negative as off.
	if c.Worker.FailoverReplayWindow = r.duration("FAILOVER_REPLAY_WINDOW", 0); c.Worker.FailoverReplayWindow == 0 {
		c.Worker.FailoverReplayWindow = -1
	}
	c.Worker.Consistency = r.consistency()
	c.ScanCount = r.integer("SCAN_COUNT", 1, 1_000_000)
	c.ScanBudget = r.integer("SCAN_BUDGET", 0, 1_000_000_000)
	c.Generations = r.str("GENERATIONS")
	if c.Generations != "auto" && c.Generations != "on" && c.Generations != "off" {
		_, name := r.get("GENERATIONS")
		r.fail(name, "must be auto, on or off, not %q", c.Generations)
	}
	c.Warm = warm.Config{
		Workers: r.integer("WARM_CONCURRENCY", 1, 1000),
		PerHost: r.integer("WARM_MAX_PER_HOST", 1, 1000),
		Queue:   r.integer("WARM_QUEUE", 1, 1_000_000),
		Timeout: r.duration("WARM_TIMEOUT", time.Millisecond),
		MaxBody: int64(r.integer("WARM_MAX_BODY_BYTES", 1, 512<<20)),
	}
	r.names(c)
	if c.Worker.Stream == c.Worker.DeadLetterStream {
		_, name := r.get("NATS_DLQ_STREAM")
		r.fail(name, "must differ from the stream %q", c.Worker.Stream)
	}
	var err error
	if c.LogLevel, err = logging.ParseLevel(r.str("LOG_LEVEL")); err != nil {
		_, name := r.get("LOG_LEVEL")
		r.fail(name, "%v", err)
	}
	if c.LogFormat, err = logging.ParseFormat(r.str("LOG_FORMAT")); err != nil {
		_, name := r.get("LOG_FORMAT")
		r.fail(name, "%v", err)
	}
	if c.RulesPath == "" {
		_, name := r.get("INVALIDATOR_RULES")
		r.fail(name, "must name the rules file (run has no default; try %s for a start)", DefaultRules)
	}
	r.httpAddr(c.HTTPAddr)
	if r.err == nil {
		if err := c.Worker.WithDefaults().Validate(); err != nil {
			r.err = fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	return c, r.err
}

// consistency reads CONSISTENCY_SAMPLE (a fraction from 0 to 1; 0 turns
// the checker off, which the checker reads as a negative sample) and
// CONSISTENCY_DELAYS (a comma-separated list of durations, sorted).
func (r *resolver) consistency() consistency.Config {
	var c consistency.Config
	v, name := r.get("CONSISTENCY_SAMPLE")
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
		r.fail(name, "must be a fraction from 0 to 1 (like 0.01; 0 turns the checker off), not %q", v)
	}
	if c.Sample = f; f == 0 {
		c.Sample = -1
	}
	v, name = r.get("CONSISTENCY_DELAYS")
	if c.Delays, err = consistency.ParseDelays(v); err != nil {
		r.fail(name, "must be durations like 1s,10s,60s, each above 0 and at most %s, none twice, not %q", consistency.MaxDelay, v)
	}
	return c
}

func (r *resolver) names(c *Run) {
	for env, v := range map[string]string{"NATS_STREAM": c.Worker.Stream, "NATS_CONSUMER": c.Worker.Consumer, "NATS_DLQ_STREAM": c.Worker.DeadLetterStream} {
		if v == "" || strings.ContainsAny(v, ". *>\t\r\n/\\") {
			_, name := r.get(env)
			r.fail(name, "must be a non-empty name without '.', '*', '>', '/', '\\' or spaces, not %q", v)
		}
	}
}

// redis parses REDIS_URL and the pool settings into go-redis options.
func (r *resolver) redis(raw string) *redis.Options {
	_, name := r.get("REDIS_URL")
	opt, err := redis.ParseURL(raw)
	var uerr *url.Error
	if errors.As(err, &uerr) {
		// url.Error quotes the URL with escapes, which a plain replace of the
		// password can miss: show only the redacted URL.
		r.fail(name, "must be a redis:// or rediss:// URL, not %q", redactRaw(raw))
		return nil
	}
	if err != nil {
		r.fail(name, "must be a redis:// or rediss:// URL: %s", scrubPassword(err.Error(), raw))
		return nil
	}
	opt.PoolSize = r.integer("REDIS_MAX_CONNECTIONS", 1, 100000)
	opt.ReadTimeout = r.duration("REDIS_SOCKET_TIMEOUT", time.Millisecond)
	opt.WriteTimeout = opt.ReadTimeout
	opt.DialTimeout = r.duration("REDIS_SOCKET_CONNECT_TIMEOUT", time.Millisecond)
	if r.boolean("REDIS_RETRY_ON_TIMEOUT") {
		opt.MaxRetries = 3
	} else {
		opt.MaxRetries = -1
	}
	opt.ClientName = "invalidator"
	r.redisTLS(opt)
	return opt
}

// redactRaw hides everything between "://" and the last '@' of a URL that
// may not parse, whatever characters the password holds.
func redactRaw(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	at := strings.LastIndex(rest, "@")
	if !ok || at < 0 {
		return raw
	}
	return scheme + "://" + logging.Redacted + rest[at:]
}

func scrubPassword(msg, raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, logging.Redacted)
		}
	}
	return msg
}

// httpAddr checks HTTP_ADDR: host:port with a port from 0 to 65535 (the
// host may be empty), or empty to turn the server off.
func (r *resolver) httpAddr(addr string) {
	if addr == "" {
		return
	}
	_, name := r.get("HTTP_ADDR")
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		r.fail(name, "must be host:port or :port (like :8080), or empty to turn the server off, not %q", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		r.fail(name, "port must be a number from 0 to 65535, not %q", port)
	}
}

// pathPrefix checks a URL path prefix: empty, or "/" followed by
// segments of letters, digits, '-', '_', '.' and '~' joined by '/', with no
// trailing '/'.
func (r *resolver) pathPrefix(env string) string {
	v, name := r.get(env)
	p := strings.TrimSpace(v)
	if p == "" {
		return ""
	}
	ok := strings.HasPrefix(p, "/") && !strings.HasSuffix(p, "/")
	for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		ok = ok && seg != "" && seg != "." && seg != ".." && strings.IndexFunc(seg, func(c rune) bool {
			return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.~", c))
		}) < 0
	}
	if !ok {
		r.fail(name, "must be a path like /invalidator (a leading '/', no trailing one, letters, digits, '-', '_', '.', '~'), not %q", v)
		return ""
	}
	return p
}

func (r *resolver) natsURL(list string) {
	_, name := r.get("NATS_URL")
	for _, raw := range strings.Split(list, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") {
			r.fail(name, "must be nats://host:port (or tls://, ws://, wss://), comma-separated, not %q", redactRaw(strings.TrimSpace(raw)))
			return
		}
	}
}

// UseGenerations says whether the engine advances the generation guard:
// always when the rules warm keys (the warmer needs it), when GENERATIONS
// is on (services read through package cache, whose readers see a pattern
// invalidation at once through the scope generations), never when off. Off
// with warm rules is an error.
func (r *Run) UseGenerations(rulesWarm bool) (bool, error) {
	switch {
	case r.Generations == "off" && rulesWarm:
		return false, fmt.Errorf("%w: GENERATIONS: off, but the rules file warms keys, and warming needs the guard", ErrInvalid)
	case r.Generations == "off":
		return false, nil
	}
	return rulesWarm || r.Generations == "on", nil
}
