package testserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/jackc/pgx/v5/pgconn"
)

// RequirePostgresEnv names the variable that, when set (as .ci/run sets
// it), makes a missing PostgreSQL fail the tests that need it instead of
// skipping them. A package's TestMain reads it into RequirePostgres (only
// internal/config reads the environment outside tests).
const RequirePostgresEnv = "INVALIDATOR_REQUIRE_POSTGRES"

// RequirePostgres makes Postgres fail, not skip, when the binaries are missing.
var RequirePostgres bool

var shared struct {
	once sync.Once
	pg   *servers.Postgres
	err  error
	dbs  atomic.Int64
}

// Postgres returns the test binary's shared PostgreSQL server, started on
// first use with wal_level=logical on a free loopback port, in a temp dir
// (never the machine's own server on 5432). A package that uses it calls
// StopPostgres after m.Run in its TestMain. It skips the test with a clear
// message when the binaries are missing, or fails it when RequirePostgres
// is set.
func Postgres(tb testing.TB) *servers.Postgres {
	tb.Helper()
	shared.once.Do(func() {
		shared.pg, shared.err = servers.StartPostgres(context.Background(), servers.PostgresOptions{})
	})
	switch {
	case errors.Is(shared.err, servers.ErrNoPostgres) && !RequirePostgres:
		tb.Skipf("skipped: %v", shared.err)
	case shared.err != nil:
		tb.Fatalf("start postgres: %v", shared.err)
	}
	return shared.pg
}

// StopPostgres stops the shared server, if one was started, and removes
// its directory.
func StopPostgres() {
	if shared.pg != nil {
		_ = shared.pg.Close()
	}
}

// Database creates a fresh database on the shared server for one test and
// returns its URL. Databases are not dropped: the server goes away with the
// test binary.
func Database(tb testing.TB) string {
	tb.Helper()
	pg := Postgres(tb)
	name := fmt.Sprintf("t%d", shared.dbs.Add(1))
	SQL(tb, pg.URL("postgres"), "CREATE DATABASE "+name)
	return pg.URL(name)
}

// SQL runs statements (several may be separated by semicolons) on the
// database at url, failing the test on an error.
func SQL(tb testing.TB, url, sql string) {
	tb.Helper()
	ctx := context.Background()
	c, err := pgconn.Connect(ctx, url)
	if err != nil {
		tb.Fatalf("connect to postgres: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}
