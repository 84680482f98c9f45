package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// env holds the servers of one benchmark run.
type env struct {
	dir   string
	redis *servers.Redis
	rdb   *redis.Client
	ns    *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
}

func startEnv(ctx context.Context, o options) (*env, error) {
	dir, err := os.MkdirTemp("", "invalidator-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir}
	e.redis, err = servers.StartRedis(ctx, servers.RedisOptions{Dir: dir, Args: []string{"--enable-debug-command", "local"}})
	if err != nil {
		e.close()
		return nil, err
	}
	// Long timeouts: DEBUG POPULATE of 10M keys and FLUSHALL take seconds.
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redis.Addr(), PoolSize: 64, ReadTimeout: 5 * time.Minute, WriteTimeout: time.Minute})
	if e.ns, err = servers.StartNATS(servers.NATSOptions{StoreDir: dir + "/nats"}); err != nil {
		e.close()
		return nil, err
	}
	if e.nc, err = nats.Connect(e.ns.ClientURL()); err != nil {
		e.close()
		return nil, err
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) close() {
	if e.nc != nil {
		e.nc.Close()
	}
	if e.ns != nil {
		e.ns.Shutdown()
		e.ns.WaitForShutdown()
	}
	if e.rdb != nil {
		_ = e.rdb.Close()
	}
	if e.redis != nil {
		_ = e.redis.Stop()
	}
	_ = os.RemoveAll(e.dir)
}

// resetNATS deletes the streams so that each scenario starts empty.
func (e *env) resetNATS(ctx context.Context) {
	for _, s := range []string{"EVENTS", "EVENTS_DLQ"} {
		_ = e.js.DeleteStream(ctx, s)
	}
}

// populate empties Redis and fills it with n filler keys (DEBUG POPULATE,
// "filler:<i>"), then adds courses×perCourse keys
// cache:course_analytics:<c>:<i> and one key
// per course, cache:course_analytics:<c>_n:x, a neighbour that no event may touch.
func (e *env) populate(ctx context.Context, n, courses, perCourse int) error {
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		return err
	}
	filler := n - courses*(perCourse+1)
	if filler > 0 {
		if err := e.rdb.Do(ctx, "DEBUG", "POPULATE", filler, "filler").Err(); err != nil {
			return fmt.Errorf("DEBUG POPULATE: %w", err)
		}
	}
	return e.addCourses(ctx, 0, courses, perCourse)
}

func (e *env) addCourses(ctx context.Context, from, courses, perCourse int) error {
	pipe := e.rdb.Pipeline()
	for c := from; c < from+courses; c++ {
		for i := range perCourse {
			pipe.Set(ctx, courseKey(c, i), "v", 0)
		}
		pipe.Set(ctx, neighbourKey(c), "v", 0)
		if pipe.Len() > 10000 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
	}
	_, err := pipe.Exec(ctx)
	return err
}

func courseKey(c, i int) string {
	return "cache:course_analytics:" + strconv.Itoa(c) + ":" + strconv.Itoa(i)
}
func neighbourKey(c int) string { return "cache:course_analytics:" + strconv.Itoa(c) + "_n:x" }

// countKeys counts the keys matching pattern (a SCAN MATCH walk).
func (e *env) countKeys(ctx context.Context, pattern string) (int, error) {
	n := 0
	it := e.rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for it.Next(ctx) {
		n++
	}
	return n, it.Err()
}

// scanPass times a SCAN COUNT 1000 walk over the whole keyspace: the
// fastest of three, so that a moment of load on a shared machine does not
// inflate the yardstick every ratio is read against.
func (e *env) scanPass(ctx context.Context) (time.Duration, int, error) {
	best, calls := time.Duration(0), 0
	for range 3 {
		d, c, err := e.onePass(ctx)
		if err != nil {
			return 0, 0, err
		}
		if best == 0 || d < best {
			best, calls = d, c
		}
	}
	return best, calls, nil
}

func (e *env) onePass(ctx context.Context) (time.Duration, int, error) {
	start := time.Now()
	var cursor uint64
	calls := 0
	for {
		_, next, err := e.rdb.Scan(ctx, cursor, "", 1000).Result()
		if err != nil {
			return 0, 0, err
		}
		calls++
		if cursor = next; cursor == 0 {
			return time.Since(start), calls, nil
		}
	}
}

// scanCalls is the number of SCAN calls Redis served since the last CONFIG RESETSTAT.
func (e *env) scanCalls(ctx context.Context) (int, error) {
	info, err := e.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_scan:calls="); ok {
			v, _, _ := strings.Cut(rest, ",")
			return strconv.Atoi(v)
		}
	}
	return 0, nil
}

func (e *env) resetStats(ctx context.Context) error { return e.rdb.ConfigResetStat(ctx).Err() }

// publishCourses publishes course events for ids [from, from+n) asynchronously.
func (e *env) publishCourses(ctx context.Context, from, n int) error {
	if err := e.ensureStream(ctx); err != nil {
		return err
	}
	for c := from; c < from+n; c++ {
		m := nats.NewMsg("events.course.updated")
		m.Data = []byte(`{"course_id": "` + strconv.Itoa(c) + `"}`)
		if _, err := e.js.PublishMsgAsync(m); err != nil {
			return err
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
		return nil
	case <-time.After(time.Minute):
		return fmt.Errorf("publishing %d events took over a minute", n)
	}
}

func (e *env) ensureStream(ctx context.Context) error {
	_, err := e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}})
	return err
}
