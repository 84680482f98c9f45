// Package cdc turns PostgreSQL's commit log into invalidation events, so
// that no write can forget to invalidate: a process that crashes between
// its commit and its publish, a SQL console, a migration or another
// service on the same tables.
//
// A [Runner] is a logical replication client (pgoutput, proto_version 1,
// with messages) of one slot. It buffers each transaction's row changes,
// maps them through the rules file's cdc section to events
// events.<entity>.<created|updated|deleted|truncated|bulk>, publishes them
// once the commit is visible to other sessions (a snapshot over a normal
// connection shows it: decoding sees a commit a moment before that) to
// JetStream with ids cdc:<slot>:<commit LSN>:<index>, and
// confirms the commit's end LSN to PostgreSQL only once every PubAck of it
// and of every earlier transaction is in. After a crash PostgreSQL sends
// again what was not confirmed, and JetStream's duplicate window drops the
// repeats by id: delivery is at least once, never lost.
//
// A pg_logical_emit_message(true, 'invalidator', '{"keys": [...],
// "patterns": [...]}') inside a transaction is published at its commit as
// events.cache.invalidate. A transaction with more than MaxTxEvents events
// of one table publishes one events.<entity>.bulk event for it instead. A
// lost slot is answered with a bulk event for every entity.
//
// A second Runner on the same slot is a standby: PostgreSQL lets one
// client read a slot, so the standby retries every StandbyRetry and takes
// over when the active one is gone.
package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/events"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// Status is what a Runner reports for health checks and metrics.
type Status struct {
	// Active is true while this process streams from the slot.
	Active bool `json:"active"`
	// Standby is true while another process holds the slot.
	Standby bool `json:"standby"`
	// Slot and Publication are the configured names.
	Slot        string `json:"slot"`
	Publication string `json:"publication"`
	// LagBytes is the server's flush position minus the slot's
	// confirmed_flush_lsn, sampled every few seconds; -1 before the first
	// sample.
	LagBytes int64 `json:"lag_bytes"`
	// ConfirmedLSN is the last position this process confirmed.
	ConfirmedLSN string `json:"confirmed_lsn,omitempty"`
	// LastCommitLSN and LastCommitAt describe the last transaction seen.
	LastCommitLSN string    `json:"last_commit_lsn,omitempty"`
	LastCommitAt  time.Time `json:"last_commit_at,omitzero"`
	// Error is the last connection or replication error, cleared once
	// streaming again.
	Error string `json:"error,omitempty"`
}

// Runner follows one replication slot and publishes its events.
type Runner struct {
	cfg    Config
	js     jetstream.JetStream
	pub    *events.Publisher
	dbCfg  *pgconn.Config
	log    *slog.Logger
	keys   [][]string // each table's key columns, once Prepare has run
	mu     sync.Mutex
	status Status
	ran    bool
}

// New returns a Runner for cfg. It checks the settings, not the database:
// Prepare does that.
func New(cfg Config) (*Runner, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dbCfg, err := pgconn.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("%w: CDC_DATABASE_URL must be postgres://user:password@host:port/db (%s)", ErrSetup, scrub(err, cfg.DatabaseURL))
	}
	r := &Runner{cfg: cfg, dbCfg: dbCfg, log: cfg.Logger.With(slog.String("slot", cfg.Slot))}
	r.status = Status{Slot: cfg.Slot, Publication: cfg.Publication, LagBytes: -1}
	return r, nil
}

// Source is the CloudEvents source of the events a slot publishes:
// urn:invalidator:cdc:<system id>/<database>/<slot>.
func Source(systemID, database, slot string) string {
	return "urn:invalidator:cdc:" + systemID + "/" + database + "/" + slot
}

// scrub removes the URL's password from an error message.
func scrub(err error, url string) string {
	msg := err.Error()
	if cfg, perr := pgconn.ParseConfig(url); perr == nil && cfg.Password != "" {
		msg = strings.ReplaceAll(msg, cfg.Password, "<password>")
	}
	return msg
}

// Status returns the Runner's state now.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

func (r *Runner) update(f func(*Status)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.status)
}

// Prepare checks the database (waiting while it is unreachable) and makes
// the publication if it is missing: PostgreSQL 14 or later,
// wal_level=logical, every table present with a replica identity, and
// mapped non-key columns only under REPLICA IDENTITY FULL. A problem that
// waiting will not heal returns an error wrapping ErrSetup, whose message
// says how to fix it. Run calls it when it has not run.
func (r *Runner) Prepare(ctx context.Context) error {
	if r.keys != nil {
		return nil
	}
	keys, err := r.prepare(ctx)
	if err == nil {
		r.keys = keys
	}
	return err
}

// Run prepares (see Prepare), makes the slot if it is missing, and
// streams, publishing through nc, until ctx ends; then it waits (at most
// 10 s) for the PubAcks in flight and confirms them. A problem that
// waiting will not heal returns an error wrapping ErrSetup; lost
// connections are retried. Run may be called once.
func (r *Runner) Run(ctx context.Context, nc *nats.Conn) error {
	r.mu.Lock()
	if r.ran {
		r.mu.Unlock()
		return errors.New("cdc: Run called twice")
	}
	r.ran = true
	r.mu.Unlock()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(r.cfg.MaxInFlight+1),
		jetstream.WithPublishAsyncTimeout(r.cfg.PublishTimeout))
	if err != nil {
		return fmt.Errorf("cdc: jetstream: %w", err)
	}
	if r.pub, err = events.NewPublisher(js); err != nil {
		return err
	}
	r.js = js
	if err := r.Prepare(ctx); err != nil {
		return err
	}
	keys := r.keys
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { r.sampleLag(gctx); return nil })
	g.Go(func() error { return r.loop(gctx, keys) })
	err = g.Wait()
	if ctx.Err() != nil && !errors.Is(err, ErrSetup) {
		return nil
	}
	return err
}

// prepare connects (waiting while the database is down), checks the
// tables and makes the publication.
func (r *Runner) prepare(ctx context.Context) ([][]string, error) {
	for attempt := 0; ; attempt++ {
		keys, err := r.prepareOnce(ctx)
		if err == nil || errors.Is(err, ErrSetup) || ctx.Err() != nil {
			return keys, err
		}
		if attempt == 0 {
			r.log.Warn("⚠️ PostgreSQL not ready yet; retrying", slog.Any("error", err))
		}
		r.update(func(s *Status) { s.Error = err.Error() })
		if !sleep(ctx, 2*time.Second) {
			return nil, ctx.Err()
		}
	}
}

func (r *Runner) prepareOnce(ctx context.Context) ([][]string, error) {
	db, err := r.connect(ctx, false)
	if err != nil {
		return nil, err
	}
	defer db.Close(context.WithoutCancel(ctx))
	keys, err := check(ctx, db, r.cfg.Tables)
	if err != nil {
		return nil, err
	}
	if err := ensurePublication(ctx, db, r.cfg.Publication, r.cfg.Tables, r.log); err != nil {
		return nil, err
	}
	r.log.Info("🔌 connected to PostgreSQL", slog.String("host", r.dbCfg.Host), slog.String("database", r.dbCfg.Database),
		slog.Int("tables", len(r.cfg.Tables)))
	return keys, nil
}

// connect opens a normal connection, or a replication one.
func (r *Runner) connect(ctx context.Context, replication bool) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(r.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("%w: CDC_DATABASE_URL: %s", ErrSetup, scrub(err, r.cfg.DatabaseURL))
	}
	cfg.RuntimeParams["application_name"] = "invalidator-cdc"
	if replication {
		cfg.RuntimeParams["replication"] = "database"
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(cctx, cfg)
	if code := pgCode(err); code == codeInvalidPassword || code == codeInvalidAuth {
		return nil, fmt.Errorf("%w: PostgreSQL refused user %q (%s): check the user and password in CDC_DATABASE_URL, and pg_hba.conf", ErrSetup, cfg.User, code)
	}
	if err != nil {
		return nil, fmt.Errorf("cdc: connect to PostgreSQL at %s: %w", cfg.Host, errors.New(scrub(err, r.cfg.DatabaseURL)))
	}
	return c, nil
}

// loop runs sessions until ctx ends: each connects, takes the slot (or
// waits as the standby) and streams.
func (r *Runner) loop(ctx context.Context, keys [][]string) error {
	standbyLogged := false
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := r.session(ctx, keys)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrSetup):
			return err
		case pgCode(err) == codeObjectInUse:
			if !standbyLogged {
				r.log.Info("🔌 standby: another process holds the slot; taking over when it goes")
				standbyLogged = true
			}
			r.update(func(s *Status) { s.Standby, s.Active = true, false })
			attempt = -1
			sleep(ctx, r.cfg.StandbyRetry)
		default:
			standbyLogged = false
			r.update(func(s *Status) { s.Active, s.Error = false, err.Error() })
			r.log.Warn("⚠️ replication stopped; reconnecting", slog.Any("error", err))
			sleep(ctx, backoff(attempt+2))
		}
	}
	return nil
}

// session is one replication connection's life.
func (r *Runner) session(ctx context.Context, keys [][]string) error {
	db, err := r.connect(ctx, false)
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))
	repl, err := r.connect(ctx, true)
	if err != nil {
		return err
	}
	defer repl.Close(context.WithoutCancel(ctx))
	conn := repl.PgConn()
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("cdc: IDENTIFY_SYSTEM: %w", err)
	}
	st, err := openState(ctx, r.js, r.cfg, sys.SystemID)
	if err != nil {
		return err
	}
	lost, err := r.ensureSlot(ctx, db, conn, st)
	if err != nil {
		return err
	}
	si, err := readSlot(ctx, db, r.cfg.Slot)
	if err != nil {
		return err
	}
	source := Source(sys.SystemID, r.dbCfg.Database, r.cfg.Slot)
	if lost {
		if err := r.recoverLost(ctx, st, si.confirmed, source); err != nil {
			return err
		}
	}
	err = pglogrepl.StartReplication(ctx, conn, r.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", r.cfg.Publication),
			"messages 'true'"},
	})
	if err != nil {
		return fmt.Errorf("cdc: start replication: %w", err)
	}
	r.update(func(s *Status) {
		s.Active, s.Standby, s.Error = true, false, ""
		s.ConfirmedLSN = si.confirmed.String()
	})
	r.log.Info("✅ streaming from the slot", slog.String("from", si.confirmed.String()))
	s := newStream(r, conn, db, keys, si.confirmed, st, source)
	return s.run(ctx)
}

// ensureSlot makes the slot if it is missing, and reports whether changes
// were lost: the slot's WAL is gone (wal_status lost), or the slot is
// missing while this system and slot had a recorded position, or an
// earlier recovery did not finish.
func (r *Runner) ensureSlot(ctx context.Context, db *pgx.Conn, conn *pgconn.PgConn, st *state) (bool, error) {
	si, err := readSlot(ctx, db, r.cfg.Slot)
	if err != nil {
		return false, err
	}
	rec, recorded, err := st.get(ctx)
	if err != nil {
		return false, err
	}
	if si.exists {
		if si.plugin != "pgoutput" || si.database != r.dbCfg.Database {
			return false, fmt.Errorf("%w: slot %s exists for plugin %s on database %s, not pgoutput on %s: choose another CDC_SLOT",
				ErrSetup, r.cfg.Slot, si.plugin, si.database, r.dbCfg.Database)
		}
		if si.walStatus != "lost" {
			return rec.BulkPending, nil
		}
		if si.active {
			return false, &pgconn.PgError{Code: codeObjectInUse, Message: "the lost slot is active for another process"}
		}
		if _, err := db.Exec(ctx, "SELECT pg_drop_replication_slot($1)", r.cfg.Slot); err != nil {
			return false, fmt.Errorf("cdc: drop the lost slot %s: %w", r.cfg.Slot, err)
		}
		r.log.Warn("⚠️ the slot's WAL is lost (wal_status lost); dropped it")
		recorded = true
	}
	if recorded {
		rec.BulkPending = true
		if err := st.put(ctx, rec); err != nil {
			return false, err
		}
	}
	_, err = pglogrepl.CreateReplicationSlot(ctx, conn, r.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
	switch {
	case pgCode(err) == codeDuplicateObject:
		return recorded, nil
	case err != nil:
		return false, fmt.Errorf("cdc: create slot %s: %w", r.cfg.Slot, err)
	}
	r.log.Info("🔧 replication slot created")
	if !recorded {
		return false, st.put(ctx, slotState{})
	}
	return true, nil
}

// recoverLost publishes events.<entity>.bulk for every mapped entity, after
// the new slot exists, so every change the lost slot missed is covered,
// and before any row event of the new slot.
func (r *Runner) recoverLost(ctx context.Context, st *state, at pglogrepl.LSN, source string) error {
	seen := map[string]bool{}
	n := 0
	for _, t := range r.cfg.Tables {
		if seen[t.Entity] {
			continue
		}
		seen[t.Entity] = true
		subject := t.Subject(cachekeys.ActionBulk)
		ev := events.Event{ID: fmt.Sprintf("cdc:%s:lost:%s:%d", r.cfg.Slot, at, n), Source: source, Subject: subject, Type: subject,
			SpecVersion: events.SpecVersion, Time: time.Now().UTC(), Data: map[string]any{}, CloudEvent: true}
		if _, err := r.pub.PublishEvent(ctx, ev); err != nil {
			return fmt.Errorf("cdc: publish %s for the lost slot: %w", subject, err)
		}
		r.cfg.Observer.Event(t.Entity, cachekeys.ActionBulk)
		n++
	}
	if err := st.put(ctx, slotState{ConfirmedLSN: at.String()}); err != nil {
		return err
	}
	r.cfg.Observer.SlotLost()
	r.log.Warn("⚠️ replication slot was lost: changes since its last position are unknown, so every entity's bulk event was published",
		slog.Int("entities", n))
	return nil
}

// sampleLag reads the slot's lag every 2 s over a normal connection.
func (r *Runner) sampleLag(ctx context.Context) {
	var db *pgx.Conn
	defer func() {
		if db != nil {
			db.Close(context.WithoutCancel(ctx))
		}
	}()
	for {
		if db == nil {
			db, _ = r.connect(ctx, false)
		}
		if db != nil {
			var lag *int64
			err := db.QueryRow(ctx, `SELECT (pg_current_wal_flush_lsn() - confirmed_flush_lsn)::bigint
				FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&lag)
			switch {
			case err == nil && lag != nil:
				r.update(func(s *Status) { s.LagBytes = *lag })
			case err != nil && !errors.Is(err, pgx.ErrNoRows):
				db.Close(context.WithoutCancel(ctx))
				db = nil
			}
		}
		if !sleep(ctx, 2*time.Second) {
			return
		}
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
