package cdc_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
)

// A setup that waiting will not heal stops `invalidator cdc` with exit 2
// and one line that says how to fix it, before NATS is dialled; the
// database password is never printed.
func TestStartupRefusals(t *testing.T) {
	ns := testserver.NATS(t)
	testserver.Postgres(t) // skips, or fails under RequirePostgres, without the binaries
	replica, err := servers.StartPostgres(context.Background(), servers.PostgresOptions{Args: []string{"wal_level=replica"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = replica.Close() })
	noBulk := filepath.Join(t.TempDir(), "no-bulk.yaml")
	if err := os.WriteFile(noBulk, []byte("rules:\n  - on: events.course.*\n    invalidate: [\"cache:course_analytics:{course_id}\"]\ncdc:\n  tables:\n    courses: {entity: course}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rules, _ := filepath.Abs("../testdata/rules-cdc.yaml")
	tests := []struct {
		name   string
		schema string // run on a fresh database
		db     func(url string) string
		env    []string
		want   []string
	}{
		{name: "missing table", schema: "CREATE TABLE users (id int PRIMARY KEY, email text); ALTER TABLE users REPLICA IDENTITY FULL",
			want: []string{"table public.courses does not exist", "create it, or remove it"}},
		{name: "mapped non-key column without FULL", schema: "CREATE TABLE courses (id int PRIMARY KEY); CREATE TABLE users (id int PRIMARY KEY, email text)",
			want: []string{`maps the non-key column "email"`, `ALTER TABLE "public"."users" REPLICA IDENTITY FULL;`}},
		{name: "no replica identity", schema: "CREATE TABLE courses (id int); CREATE TABLE users (id int PRIMARY KEY, email text); ALTER TABLE users REPLICA IDENTITY FULL",
			want: []string{"table public.courses has no replica identity", "add a primary key", `ALTER TABLE "public"."courses" REPLICA IDENTITY FULL;`}},
		{name: "mapped column missing", schema: "CREATE TABLE courses (id int PRIMARY KEY); CREATE TABLE users (id int PRIMARY KEY); ALTER TABLE users REPLICA IDENTITY FULL",
			want: []string{`table public.users has no column "email"`}},
		{name: "wal_level replica", db: func(string) string { return replica.URL("postgres") },
			want: []string{"wal_level is replica", "ALTER SYSTEM SET wal_level = logical"}},
		{name: "bulk without a rule of its own", env: []string{"INVALIDATOR_RULES=" + noBulk},
			want: []string{"events.course.bulk carries no data", `rule on "events.course.*"`}},
		{name: "no database", env: []string{"CDC_DATABASE_URL="}, want: []string{"CDC_DATABASE_URL: must name the database"}},
		{name: "not a postgres URL", env: []string{"CDC_DATABASE_URL=mysql://u:s3cret-pw@127.0.0.1/x"}, want: []string{"CDC_DATABASE_URL: must be postgres://"}},
		{name: "bad slot", env: []string{"CDC_SLOT=My-Slot"}, want: []string{"CDC_SLOT: must be 1 to 63 characters of [a-z0-9_]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := testserver.Database(t)
			if tt.schema != "" {
				testserver.SQL(t, url, tt.schema)
			}
			if tt.db != nil {
				url = tt.db(url)
			}
			url = strings.Replace(url, "postgres@", "postgres:s3cret-pw@", 1) // trust ignores it; it must not show
			env := append([]string{"CDC_DATABASE_URL=" + url, "CDC_SLOT=refused", "NATS_URL=" + ns.ClientURL(),
				"INVALIDATOR_RULES=" + rules, "HTTP_ADDR=", "LOG_FORMAT=json"}, tt.env...)
			p := testproc.Start(t, env, "cdc")
			if code := p.Wait(t, 30*time.Second); code != 2 {
				t.Fatalf("exit code %d, want 2", code)
			}
			stderr := p.Stderr.String()
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			for _, w := range tt.want {
				if !strings.Contains(last, w) {
					t.Errorf("last line %q lacks %q", last, w)
				}
			}
			if strings.Contains(stderr, "s3cret-pw") {
				t.Errorf("the password shows in stderr:\n%s", stderr)
			}
			if strings.Contains(stderr, "connected to NATS") {
				t.Errorf("NATS was dialled before the refusal:\n%s", stderr)
			}
		})
	}
}
