package config

import (
	"errors"
	"flag"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"

	"github.com/invalidator/invalidator/cdc"
	"github.com/invalidator/invalidator/internal/logging"
	"github.com/jackc/pgx/v5/pgconn"
)

// CDCSettings lists the settings of `invalidator cdc` that `run` does not
// read, in README order. `dev` reads them too.
var CDCSettings = []Setting{
	{"CDC_DATABASE_URL", "cdc-database-url", "url", "", "PostgreSQL to follow, postgres://user:password@host:port/db (wal_level=logical); dev runs cdc when it is set"},
	{"CDC_SLOT", "cdc-slot", "name", cdc.DefaultSlot, "logical replication slot, made if missing; a second process on it is a standby"},
	{"CDC_PUBLICATION", "cdc-publication", "name", cdc.DefaultPublication, "publication of the rules file's cdc tables, made if missing"},
	{"CDC_MAX_TX_EVENTS", "cdc-max-tx-events", "int", strconv.Itoa(cdc.DefaultMaxTxEvents), "events of one table in one transaction before they become one events.<entity>.bulk"},
	{"CDC_FAIL_POINT", "cdc-fail-point", "point", "", "crash tests only: SIGKILL the process at after-puback:N, mid-publish:N or after-confirm:N"},
}

// cdcEnvs are the settings `invalidator cdc` reads besides CDCSettings.
var cdcEnvs = append([]string{"NATS_URL", "NATS_CREDS", "NATS_STREAM", "NATS_STREAM_REPLICAS", "INVALIDATOR_RULES",
	"HTTP_ADDR", "OPS_TOKEN", "LOG_LEVEL", "LOG_FORMAT"}, natsTLSEnvs...)

// CDC is the configuration of `invalidator cdc`.
type CDC struct {
	// Runner holds the cdc settings; its Tables, Logger and Observer are
	// the caller's to fill.
	Runner    cdc.Config
	NATSURL   string
	NATSCreds string
	NATSTLS   NATSTLS
	// Stream is the events stream (NATS_STREAM), created if missing, and
	// StreamReplicas its replicas and the state bucket's.
	Stream         string
	StreamReplicas int
	RulesPath      string
	HTTPAddr       string
	OpsToken       string
	LogLevel       slog.Level
	LogFormat      logging.Format
}

// Secrets are the strings that must never be printed.
func (c *CDC) Secrets() []string {
	s := []string{c.OpsToken, DatabasePassword(c.Runner.DatabaseURL)}
	s = append(s, urlPasswords(c.NATSURL)...)
	return nonEmpty(s)
}

// DatabasePassword is the password in a PostgreSQL URL, or "".
func DatabasePassword(raw string) string {
	if cfg, err := pgconn.ParseConfig(raw); err == nil {
		return cfg.Password
	}
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		p, _ := u.User.Password()
		return p
	}
	return ""
}

// CDCFlags registers the settings of `invalidator cdc` on fs, like
// [Flags], and returns the function that builds its validated
// configuration. CDC_DATABASE_URL and INVALIDATOR_RULES are required.
func CDCFlags(fs *flag.FlagSet, getenv func(string) string) func() (*CDC, error) {
	r := register(fs, getenv, append(cdcNames(), cdcEnvs...), map[string]string{"INVALIDATOR_RULES": ""})
	return func() (*CDC, error) {
		c := &CDC{
			NATSURL: r.str("NATS_URL"), NATSCreds: r.str("NATS_CREDS"), Stream: r.str("NATS_STREAM"),
			StreamReplicas: r.integer("NATS_STREAM_REPLICAS", 1, 5), RulesPath: r.str("INVALIDATOR_RULES"),
			HTTPAddr: r.str("HTTP_ADDR"), OpsToken: r.str("OPS_TOKEN"),
		}
		r.natsURL(c.NATSURL)
		c.NATSTLS = r.natsTLS()
		if c.Stream == "" {
			_, name := r.get("NATS_STREAM")
			r.fail(name, "must name the events stream, not be empty")
		}
		c.Runner = r.cdcRunner(true)
		c.Runner.Replicas = c.StreamReplicas
		r.httpAddr(c.HTTPAddr)
		r.logging(&c.LogLevel, &c.LogFormat)
		if c.RulesPath == "" {
			_, name := r.get("INVALIDATOR_RULES")
			r.fail(name, "must name the rules file, whose cdc section lists the tables (try testdata/rules-cdc.yaml for a start)")
		}
		return c, r.err
	}
}

// DevCDCFlags registers the CDC settings on dev's fs and returns the
// function that builds them; its result has an empty DatabaseURL when
// CDC_DATABASE_URL is unset (dev then runs no cdc).
func DevCDCFlags(fs *flag.FlagSet, getenv func(string) string) func() (cdc.Config, error) {
	r := register(fs, getenv, cdcNames(), nil)
	return func() (cdc.Config, error) { return r.cdcRunner(false), r.err }
}

func cdcNames() []string {
	names := make([]string, len(CDCSettings))
	for i, s := range CDCSettings {
		names[i] = s.Env
	}
	return names
}

// pgName is what PostgreSQL accepts, unquoted, as a slot or publication name.
var pgName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// failPoint is the form of CDC_FAIL_POINT.
var failPoint = regexp.MustCompile(`^(after-puback|mid-publish|after-confirm):[1-9][0-9]{0,8}$`)

// cdcRunner reads the CDC_* settings; the database URL is checked for its
// form here and for reachability by the runner.
func (r *resolver) cdcRunner(required bool) cdc.Config {
	c := cdc.Config{
		DatabaseURL: r.str("CDC_DATABASE_URL"),
		Slot:        r.str("CDC_SLOT"),
		Publication: r.str("CDC_PUBLICATION"),
		MaxTxEvents: r.integer("CDC_MAX_TX_EVENTS", 1, 100_000_000),
		FailPoint:   r.str("CDC_FAIL_POINT"),
	}
	if _, name := r.get("CDC_DATABASE_URL"); c.DatabaseURL == "" && required {
		r.fail(name, "must name the database, postgres://user:password@host:port/db")
	} else if c.DatabaseURL != "" {
		u, err := url.Parse(c.DatabaseURL)
		if err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") && u.Host != "" {
			_, err = pgconn.ParseConfig(c.DatabaseURL)
		} else {
			err = errBadURL
		}
		if err != nil {
			r.fail(name, "must be postgres://user:password@host:port/db, not %q", redactRaw(c.DatabaseURL))
		}
	}
	for env, v := range map[string]string{"CDC_SLOT": c.Slot, "CDC_PUBLICATION": c.Publication} {
		if !pgName.MatchString(v) {
			_, name := r.get(env)
			r.fail(name, "must be 1 to 63 characters of [a-z0-9_], not %q", v)
		}
	}
	if c.FailPoint != "" && !failPoint.MatchString(c.FailPoint) {
		_, name := r.get("CDC_FAIL_POINT")
		r.fail(name, "must be after-puback:N, mid-publish:N or after-confirm:N, not %q", c.FailPoint)
	}
	return c
}

var errBadURL = errors.New("not a postgres URL")

// logging reads LOG_LEVEL and LOG_FORMAT.
func (r *resolver) logging(level *slog.Level, format *logging.Format) {
	var err error
	if *level, err = logging.ParseLevel(r.str("LOG_LEVEL")); err != nil {
		_, name := r.get("LOG_LEVEL")
		r.fail(name, "%v", err)
	}
	if *format, err = logging.ParseFormat(r.str("LOG_FORMAT")); err != nil {
		_, name := r.get("LOG_FORMAT")
		r.fail(name, "%v", err)
	}
}
