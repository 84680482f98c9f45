package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/cdc"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/worker"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// cdcScenario measures `invalidator cdc` against pg_recvlogical on the same
// WAL, its commit → keys-gone latency through the worker at a steady
// rate, and the binary's peak RSS through a 1,000,000-row transaction.
func cdcScenario(ctx context.Context, e *env, o options, rep *report) error {
	pg, err := servers.StartPostgres(ctx, servers.PostgresOptions{})
	if err != nil {
		return err
	}
	defer pg.Close()
	rules, err := cachekeys.Load("testdata/rules-cdc.yaml")
	if err != nil {
		return err
	}
	if err := cdcThroughput(ctx, e, o, rep, pg, rules); err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	if err := cdcLatency(ctx, e, o, rep, pg, rules); err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	if err := cdcMemory(ctx, e, o, rep, pg); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	return nil
}

const cdcSchema = `CREATE TABLE courses (id int PRIMARY KEY, title text NOT NULL DEFAULT '');
CREATE TABLE users (id int PRIMARY KEY, email text);
ALTER TABLE users REPLICA IDENTITY FULL;`

// cdcDatabase makes a database with the schema and rows courses.
func cdcDatabase(ctx context.Context, pg *servers.Postgres, name string, rows int) (*pgxpool.Pool, error) {
	admin, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return nil, err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, pg.URL(name))
	if err != nil {
		return nil, err
	}
	for _, sql := range []string{cdcSchema, fmt.Sprintf("INSERT INTO courses (id) SELECT g FROM generate_series(1, %d) g", rows)} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return pool, nil
}

// updates runs n single-row UPDATE transactions over rows courses from
// conns connections, at most rate a second (0: as fast as they go).
// before, if set, is called before each UPDATE with the course id, and
// after, if set, once it committed, with the time the UPDATE was sent (an
// upper bound of the commit time by one round trip).
func updates(ctx context.Context, pool *pgxpool.Pool, n, rows, conns, rate int, before func(int), after func(int, time.Time)) error {
	var next atomic.Int64
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		tick = t.C
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > n {
					return
				}
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				id := (i-1)%rows + 1
				if before != nil {
					before(id)
				}
				sent := time.Now()
				if _, err := pool.Exec(ctx, "UPDATE courses SET title = $1 WHERE id = $2", strconv.Itoa(i), id); err != nil {
					errs <- err
					return
				}
				if after != nil {
					after(id, sent)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func createSlot(ctx context.Context, pool *pgxpool.Pool, slot string) error {
	_, err := pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
	return err
}

func currentLSN(ctx context.Context, pool *pgxpool.Pool) (pglogrepl.LSN, error) {
	var s string
	if err := pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(s)
}

// cdcThroughput decodes the same 200,000 single-row UPDATEs with
// pg_recvlogical (to /dev/null) and with a cdc Runner that publishes them
// to JetStream, each from a slot made before the writes, and compares the
// times.
func cdcThroughput(ctx context.Context, e *env, o options, rep *report, pg *servers.Postgres, rules *cachekeys.Rules) error {
	const rows = 10000
	n := o.cdcUpdates
	pool, err := cdcDatabase(ctx, pg, "throughput", rows)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "CREATE PUBLICATION invalidator FOR TABLE courses, users"); err != nil {
		return err
	}
	for _, s := range []string{"recvlogical", "cdc"} {
		if err := createSlot(ctx, pool, s); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := updates(ctx, pool, n, rows, 4, 0, nil, nil); err != nil {
		return err
	}
	log.Printf("cdc: %d single-row UPDATE transactions written in %v", n, time.Since(start).Round(time.Millisecond))
	end, err := currentLSN(ctx, pool)
	if err != nil {
		return err
	}
	bin, err := exec.LookPath("pg_recvlogical")
	if err != nil {
		dir, derr := servers.PostgresBinDir()
		if derr != nil {
			return derr
		}
		bin = filepath.Join(dir, "pg_recvlogical")
	}
	start = time.Now()
	cmd := exec.CommandContext(ctx, bin, "-d", pg.URL("throughput"), "--slot", "recvlogical", "--start", "--no-loop",
		"-P", "pgoutput", "-o", "proto_version=1", "-o", "publication_names=invalidator", "-f", "/dev/null",
		"-E", end.String(), "-s", "1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_recvlogical: %w: %s", err, out)
	}
	floor := time.Since(start)
	log.Printf("cdc: pg_recvlogical decoded them in %v", floor.Round(time.Millisecond))

	e.resetNATS(ctx)
	if err := e.ensureStream(ctx); err != nil {
		return err
	}
	run, err := cdc.New(cdc.Config{DatabaseURL: pg.URL("throughput"), Slot: "cdc", Tables: rules.CDC()})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start = time.Now()
	go func() { done <- run.Run(rctx, e.nc) }()
	took, err := waitStored(ctx, e, n, start, done)
	if err == nil {
		_, err = waitConfirmed(ctx, run, end, start, done)
	}
	cancel()
	if rerr := <-done; err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	msgs, err := e.streamMsgs(ctx)
	if err != nil {
		return err
	}
	log.Printf("cdc: invalidator cdc decoded and published them (%d messages in the stream) in %v", msgs, took.Round(time.Millisecond))
	r := ratio(floor, took)
	rep.add(row{group: "cdc", name: fmt.Sprintf("pg_recvlogical -P pgoutput to /dev/null, %d single-row UPDATEs", n),
		value: floor, rate: float64(n) / floor.Seconds(), ratio: 1})
	rep.add(row{group: "cdc", name: "invalidator cdc, the same WAL, every PubAck in (then confirmed)", value: took, rate: float64(n) / took.Seconds(),
		ratio: r, target: "≥ 0.5×", ok: r >= 0.5 && msgs >= n, note: fmt.Sprintf("%d events in the stream", msgs)})
	return nil
}

// waitStored waits until the stream holds n events: every PubAck is in
// (the server acknowledges a message once it is stored).
func waitStored(ctx context.Context, e *env, n int, start time.Time, done chan error) (time.Duration, error) {
	for deadline := time.Now().Add(30 * time.Minute); time.Now().Before(deadline); {
		select {
		case err := <-done:
			done <- err
			return 0, fmt.Errorf("the runner stopped: %v", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if m, err := e.streamMsgs(ctx); err == nil && m >= n {
			return time.Since(start), nil
		}
	}
	return 0, errors.New("not stored within 30 minutes")
}

// waitConfirmed waits until the runner has confirmed end.
func waitConfirmed(ctx context.Context, run *cdc.Runner, end pglogrepl.LSN, start time.Time, done chan error) (time.Duration, error) {
	for deadline := time.Now().Add(30 * time.Minute); time.Now().Before(deadline); {
		select {
		case err := <-done:
			done <- err
			return 0, fmt.Errorf("the runner stopped: %v", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if c, err := pglogrepl.ParseLSN(run.Status().ConfirmedLSN); err == nil && c >= end {
			return time.Since(start), nil
		}
	}
	return 0, errors.New("not confirmed within 30 minutes")
}

func (e *env) streamMsgs(ctx context.Context) (int, error) {
	s, err := e.js.Stream(ctx, worker.DefaultStream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return int(info.State.Msgs), nil
}

// cdcLatency writes single-row UPDATE transactions at a steady rate, each
// of a course whose key is set just before, and times each commit to the
// key's removal, seen as a Redis keyspace event, through a real worker.
func cdcLatency(ctx context.Context, e *env, o options, rep *report, pg *servers.Postgres, rules *cachekeys.Rules) error {
	const rows = 20000
	n := o.cdcRate * int(o.cdcFor/time.Second)
	pool, err := cdcDatabase(ctx, pg, "latency", rows)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		return err
	}
	if err := e.rdb.ConfigSet(ctx, "notify-keyspace-events", "Eg").Err(); err != nil {
		return err
	}
	defer e.rdb.ConfigSet(context.WithoutCancel(ctx), "notify-keyspace-events", "")
	e.resetNATS(ctx)
	w, err := worker.New(worker.Config{}, worker.Deps{JetStream: e.js, Redis: e.rdb, Rules: rules})
	if err != nil {
		return err
	}
	run, err := cdc.New(cdc.Config{DatabaseURL: pg.URL("latency"), Tables: rules.CDC()})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = w.Run(rctx) }()
	go func() { defer wg.Done(); _ = run.Run(rctx, e.nc) }()
	defer func() { cancel(); wg.Wait() }()
	<-w.Started()
	for !run.Status().Active {
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	sub := e.rdb.Subscribe(ctx, "__keyevent@0__:del")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return err
	}
	// The removal can be seen before the UPDATE's round trip ends, so
	// both times are kept and matched at the end.
	var mu sync.Mutex
	sentAt, goneAt := map[string]time.Time{}, map[string]time.Time{}
	gone := sub.Channel()
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for m := range gone {
			at := time.Now()
			mu.Lock()
			if _, ok := goneAt[m.Payload]; !ok {
				goneAt[m.Payload] = at
			}
			mu.Unlock()
		}
	}()
	key := func(id int) string { return "cache:course_analytics:" + strconv.Itoa(id) }
	before := func(id int) { _ = e.rdb.Set(ctx, key(id), "v", 0).Err() }
	after := func(id int, t time.Time) { mu.Lock(); sentAt[key(id)] = t; mu.Unlock() }
	start := time.Now()
	if err := updates(ctx, pool, n, rows, 4, o.cdcRate, before, after); err != nil {
		return err
	}
	wrote := time.Since(start)
	missing := func() int {
		mu.Lock()
		defer mu.Unlock()
		m := 0
		for k := range sentAt {
			if _, ok := goneAt[k]; !ok {
				m++
			}
		}
		return m
	}
	for deadline := time.Now().Add(30 * time.Second); missing() > 0 && time.Now().Before(deadline); {
		_ = sleepCtx(ctx, 10*time.Millisecond)
	}
	_ = sub.Close()
	<-recvDone
	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	notSeen := 0
	for k, t := range sentAt {
		g, ok := goneAt[k]
		if !ok {
			notSeen++
			continue
		}
		lat = append(lat, max(g.Sub(t), 0))
	}
	if len(lat) == 0 {
		return errors.New("no key removal was seen")
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	rate := float64(n) / wrote.Seconds()
	log.Printf("cdc: %d transactions at %.0f/s; commit → key gone p50 %v, p99 %v, max %v; %d not seen", n, rate, p50, p99, lat[len(lat)-1], notSeen)
	rep.add(row{group: "cdc", name: fmt.Sprintf("commit → keys gone p50, %d single-row transactions at %.0f/s through the worker", n, rate),
		value: p50, ratio: ratio(p50, 50*time.Millisecond)})
	rep.add(row{group: "cdc", name: "commit → keys gone p99", value: p99, ratio: ratio(p99, 50*time.Millisecond),
		target: "≤ 50 ms", ok: p99 <= 50*time.Millisecond && notSeen == 0,
		note: fmt.Sprintf("max %v, %d keys never removed; timed from sending the UPDATE", roundDur(lat[len(lat)-1]), notSeen)})
	return nil
}

// cdcMemory runs the binary through a 1,000,000-row UPDATE in one
// transaction and reports its peak RSS.
func cdcMemory(ctx context.Context, e *env, o options, rep *report, pg *servers.Postgres) error {
	rows := o.cdcBigTx
	pool, err := cdcDatabase(ctx, pg, "memory", rows)
	if err != nil {
		return err
	}
	defer pool.Close()
	e.resetNATS(ctx)
	if err := e.ensureStream(ctx); err != nil {
		return err
	}
	bin, err := buildBinary(ctx, e)
	if err != nil {
		return err
	}
	rulesPath, err := filepath.Abs("testdata/rules-cdc.yaml")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "cdc")
	cmd.Env = append(os.Environ(), "CDC_DATABASE_URL="+pg.URL("memory"), "CDC_SLOT=memory", "NATS_URL="+e.ns.ClientURL(),
		"INVALIDATOR_RULES="+rulesPath, "HTTP_ADDR=", "LOG_LEVEL=warn", "LOG_FORMAT=json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for deadline := time.Now().Add(time.Minute); ; {
		var active bool
		err := pool.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = 'memory'").Scan(&active)
		if err == nil && active {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cdc process did not start streaming: %s", stderr.String())
		}
		_ = sleepCtx(ctx, 50*time.Millisecond)
	}
	start := time.Now()
	if _, err := pool.Exec(ctx, "UPDATE courses SET title = 'big'"); err != nil {
		return err
	}
	end, err := currentLSN(ctx, pool)
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(30 * time.Minute); ; {
		var c string
		if err := pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'memory'").Scan(&c); err == nil {
			if lsn, _ := pglogrepl.ParseLSN(c); lsn >= end {
				break
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the big transaction was not confirmed within 30 minutes")
		}
		_ = sleepCtx(ctx, 100*time.Millisecond)
	}
	took := time.Since(start)
	hwm := vmHWM(cmd.Process.Pid)
	msgs, _ := e.streamMsgs(ctx)
	log.Printf("cdc: a %d-row UPDATE confirmed in %v, %d events in the stream, peak RSS %d KiB", rows, took, msgs, hwm)
	rep.add(row{group: "cdc", name: fmt.Sprintf("cdc binary: peak RSS through a %d-row UPDATE in one transaction", rows),
		kib: hwm, value: took, ratio: float64(hwm) / (64 * 1024), target: "≤ 64 MiB", ok: hwm > 0 && hwm <= 64*1024,
		note: fmt.Sprintf("value is the time to its confirm; %d events.course.bulk published", msgs)})
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
