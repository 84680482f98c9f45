package cdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"
)

// PostgreSQL error codes the runner tells apart.
const (
	codeObjectInUse     = "55006" // the slot is active for another process: we are the standby
	codeDuplicateObject = "42710" // created by another process in the meantime
	codeInvalidPassword = "28P01"
	codeInvalidAuth     = "28000"
	codeUndefinedObject = "42704"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// quoteTable is schema.table as a quoted SQL identifier.
func quoteTable(t cachekeys.CDCTable) string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// check verifies the database can serve the tables: PostgreSQL 14 or
// later, wal_level=logical, every table present with a replica identity,
// every mapped column present, and mapped non-key columns only under
// REPLICA IDENTITY FULL. It returns each table's key columns.
func check(ctx context.Context, db *pgx.Conn, tables []cachekeys.CDCTable) ([][]string, error) {
	var version int
	var walLevel string
	if err := db.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, current_setting('wal_level')").Scan(&version, &walLevel); err != nil {
		return nil, fmt.Errorf("cdc: read server settings: %w", err)
	}
	if version < 140000 {
		return nil, fmt.Errorf("%w: PostgreSQL %d.%d is too old: pgoutput's messages option (pg_logical_emit_message) needs 14 or later", ErrSetup, version/10000, version%10000)
	}
	if walLevel != "logical" {
		return nil, fmt.Errorf("%w: wal_level is %s, and logical replication needs logical: run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL", ErrSetup, walLevel)
	}
	keys := make([][]string, len(tables))
	for i, t := range tables {
		k, err := checkTable(ctx, db, t)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return keys, nil
}

func checkTable(ctx context.Context, db *pgx.Conn, t cachekeys.CDCTable) ([]string, error) {
	var oid uint32
	var ident string
	err := db.QueryRow(ctx, `SELECT c.oid, c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, t.Schema, t.Name).Scan(&oid, &ident)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: table %s does not exist in this database: create it, or remove it from the rules file's cdc.tables", ErrSetup, t.Table())
	}
	if err != nil {
		return nil, fmt.Errorf("cdc: inspect table %s: %w", t.Table(), err)
	}
	cols, err := strings1(ctx, db, `SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, oid)
	if err != nil {
		return nil, fmt.Errorf("cdc: columns of %s: %w", t.Table(), err)
	}
	keys, err := strings1(ctx, db, `SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = $1 AND CASE WHEN $2 = 'i' THEN i.indisreplident ELSE i.indisprimary END ORDER BY a.attnum`, oid, ident)
	if err != nil {
		return nil, fmt.Errorf("cdc: key of %s: %w", t.Table(), err)
	}
	for _, c := range sortedKeys(t.Columns) {
		if !slices.Contains(cols, c) {
			return nil, fmt.Errorf("%w: table %s has no column %q, which the rules file's cdc section maps to %q", ErrSetup, t.Table(), c, t.Columns[c])
		}
	}
	fix := fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", quoteTable(t))
	if ident == "n" || (ident != "f" && len(keys) == 0) {
		return nil, fmt.Errorf("%w: table %s has no replica identity, so its UPDATEs and DELETEs would fail once published: add a primary key, or run %s", ErrSetup, t.Table(), fix)
	}
	if ident != "f" {
		for _, c := range sortedKeys(t.Columns) {
			if !slices.Contains(keys, c) {
				return nil, fmt.Errorf("%w: table %s maps the non-key column %q, whose old value PostgreSQL sends only under REPLICA IDENTITY FULL: run %s", ErrSetup, t.Table(), c, fix)
			}
		}
	}
	return keys, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func strings1(ctx context.Context, db *pgx.Conn, sql string, args ...any) ([]string, error) {
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// ensurePublication creates the publication FOR TABLE the tables, or adds
// the tables it lacks; it never publishes all tables.
func ensurePublication(ctx context.Context, db *pgx.Conn, name string, tables []cachekeys.CDCTable, log *slog.Logger) error {
	var all bool
	err := db.QueryRow(ctx, "SELECT puballtables FROM pg_publication WHERE pubname = $1", name).Scan(&all)
	if errors.Is(err, pgx.ErrNoRows) {
		list := make([]string, len(tables))
		for i, t := range tables {
			list[i] = quoteTable(t)
		}
		_, err = db.Exec(ctx, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", pgx.Identifier{name}.Sanitize(), strings.Join(list, ", ")))
		if pgCode(err) == codeDuplicateObject {
			return ensurePublication(ctx, db, name, tables, log) // another process made it
		}
		if err != nil {
			return fmt.Errorf("cdc: create publication %s: %w", name, err)
		}
		log.Info("🔧 publication created", slog.String("publication", name), slog.Int("tables", len(tables)))
		return nil
	}
	if err != nil || all {
		return err
	}
	have, err := strings1(ctx, db, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1", name)
	if err != nil {
		return fmt.Errorf("cdc: tables of publication %s: %w", name, err)
	}
	for _, t := range tables {
		if slices.Contains(have, t.Table()) {
			continue
		}
		if _, err := db.Exec(ctx, fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", pgx.Identifier{name}.Sanitize(), quoteTable(t))); err != nil {
			return fmt.Errorf("cdc: add %s to publication %s: %w", t.Table(), name, err)
		}
		log.Info("🔧 table added to the publication", slog.String("publication", name), slog.String("table", t.Table()))
	}
	return nil
}

// slotState is what the state bucket keeps of a slot.
type slotState struct {
	ConfirmedLSN string    `json:"confirmed_lsn"`
	Updated      time.Time `json:"updated"`
	// BulkPending is set while a lost slot's bulk events are not all
	// published, so a crash in between publishes them again.
	BulkPending bool `json:"bulk_pending,omitempty"`
}

// state reads and writes slot states in the bucket.
type state struct {
	kv  jetstream.KeyValue
	key string
}

func openState(ctx context.Context, js jetstream.JetStream, cfg Config, sysID string) (*state, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cfg.StateBucket, Replicas: cfg.Replicas,
		Description: "invalidator cdc: the last confirmed position of each replication slot"})
	if err != nil {
		return nil, fmt.Errorf("cdc: state bucket %s: %w", cfg.StateBucket, err)
	}
	return &state{kv: kv, key: sysID + "." + cfg.Slot}, nil
}

// get returns the recorded state, and whether there is one.
func (s *state) get(ctx context.Context) (slotState, bool, error) {
	e, err := s.kv.Get(ctx, s.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return slotState{}, false, nil
	}
	if err != nil {
		return slotState{}, false, fmt.Errorf("cdc: read slot state: %w", err)
	}
	var st slotState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return slotState{}, true, nil // unreadable: still a record that a position existed
	}
	return st, true, nil
}

func (s *state) put(ctx context.Context, st slotState) error {
	st.Updated = time.Now().UTC()
	b, _ := json.Marshal(st)
	if _, err := s.kv.Put(ctx, s.key, b); err != nil {
		return fmt.Errorf("cdc: record slot state: %w", err)
	}
	return nil
}

// slotInfo is a row of pg_replication_slots.
type slotInfo struct {
	exists    bool
	plugin    string
	database  string
	walStatus string
	active    bool
	confirmed pglogrepl.LSN
}

func readSlot(ctx context.Context, db *pgx.Conn, slot string) (slotInfo, error) {
	var si slotInfo
	var confirmed *string
	var walStatus *string
	err := db.QueryRow(ctx, `SELECT plugin, database, wal_status, active, confirmed_flush_lsn::text
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&si.plugin, &si.database, &walStatus, &si.active, &confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		return si, nil
	}
	if err != nil {
		return si, fmt.Errorf("cdc: read slot %s: %w", slot, err)
	}
	si.exists = true
	if walStatus != nil {
		si.walStatus = *walStatus
	}
	if confirmed != nil {
		si.confirmed, _ = pglogrepl.ParseLSN(*confirmed)
	}
	return si, nil
}
