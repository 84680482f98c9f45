package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/invalidator/invalidator/cache"
	"github.com/invalidator/invalidator/guard"
	"github.com/redis/go-redis/v9"
)

// finalCheck is the sweep after the run: once writers have stopped and
// the worker has acked every event, every key readers read is read through
// the protocol (cache.Get) and compared with the source.
type finalCheck struct {
	settled      bool          // every event acked within the settle limit
	settle       time.Duration // writers stopped → every event acked
	keys         int           // keys read
	present      int           // of them, found current by the protocol
	inconsistent int           // of them, holding a version other than the source's
}

// finalCheck waits for the worker to settle (at most ACK_WAIT + 15 s: an
// event a killed worker held comes back after ACK_WAIT), lets the warm
// requests that follow the acks finish, and sweeps every key.
func (r *stalenessRig) finalCheck(ctx context.Context, c *cache.Cache, res *stalenessResult) (finalCheck, error) {
	var fin finalCheck
	start := time.Now()
	fin.settled = r.settle(ctx, r.o.stalenessAckWait+15*time.Second)
	fin.settle = time.Since(start)
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil { // warm requests run after the ack
		return fin, err
	}
	source, err := r.versions(ctx)
	if err != nil {
		return fin, err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for id, want := range source {
		for _, key := range r.keysOf(id) {
			var got int64
			found, err := c.Get(cctx, key, &got)
			if err != nil {
				return fin, fmt.Errorf("final check: %w", err)
			}
			fin.keys++
			if found {
				fin.present++
			}
			if found && got != want {
				fin.inconsistent++
				if fin.inconsistent <= 3 {
					r.explain(cctx, key, got, want, res.lockedHistory(id))
				}
			}
		}
	}
	return fin, nil
}

// explain logs an inconsistent key: its raw value, its generations and
// its item's last commits and events.
func (r *stalenessRig) explain(ctx context.Context, key string, got, want int64, history string) {
	raw, _ := r.e.rdb.Get(ctx, key).Result()
	ttl, _ := r.e.rdb.PTTL(ctx, key).Result()
	gens, _ := r.e.rdb.MGet(ctx, guard.Keys(key)...).Result()
	log.Printf("⚠️ staleness: inconsistent after the run: %s holds version %d (source %d): %q, ttl %v, generations %v %v;%s",
		key, got, want, raw, ttl, guard.Keys(key), gens, history)
}

// settle polls, every 200 ms for at most limit, until the worker's
// consumer has nothing pending or awaiting an ack and the stream's last
// sequence held still since the previous poll (cdc may still be
// publishing); it reports whether that happened.
func (r *stalenessRig) settle(ctx context.Context, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	var last uint64
	for time.Now().Before(deadline) {
		if sleepCtx(ctx, 200*time.Millisecond) != nil {
			return false
		}
		cons, err := r.js.Consumer(ctx, "EVENTS", "invalidator")
		if err != nil {
			continue
		}
		info, err := cons.Info(ctx)
		if err != nil {
			continue
		}
		seq := info.Delivered.Stream + info.NumPending
		if info.NumPending == 0 && info.NumAckPending == 0 && seq == last {
			return true
		}
		last = seq
	}
	return false
}

// versions reads every item's version from the source.
func (r *stalenessRig) versions(ctx context.Context) (map[int]int64, error) {
	rows, err := r.pool.Query(ctx, "SELECT id, version FROM items")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[int]int64, r.o.stalenessItems)
	for rows.Next() {
		var id int
		var v int64
		if err := rows.Scan(&id, &v); err != nil {
			return nil, err
		}
		out[id] = v
	}
	return out, rows.Err()
}

// keysOf is every key the case's readers read for an item.
func (r *stalenessRig) keysOf(id int) []string {
	key := "cache:item:" + strconv.Itoa(id)
	if !r.c.pattern {
		return []string{key}
	}
	keys := make([]string, 4)
	for k := range keys {
		keys[k] = key + ":w" + strconv.Itoa(k)
	}
	return keys
}

// failFlag is the context key of the flag failHook sets.
type failFlag struct{}

// withFailFlag returns ctx carrying a flag that failHook sets when a
// Redis command made with it fails.
func withFailFlag(ctx context.Context) (context.Context, *atomic.Bool) {
	f := new(atomic.Bool)
	return context.WithValue(ctx, failFlag{}, f), f
}

// failHook sets the flag of a command's context when the command fails
// for want of Redis: a dial, a timeout, a closed connection. redis.Nil and
// the server's error replies are answers, not failures.
type failHook struct{}

func (failHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		markFailed(ctx, err)
		return c, err
	}
}

func (failHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		markFailed(ctx, err)
		return err
	}
}

func (failHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		markFailed(ctx, err)
		for _, c := range cmds {
			markFailed(ctx, c.Err())
		}
		return err
	}
}

func markFailed(ctx context.Context, err error) {
	var reply redis.Error
	if err == nil || errors.Is(err, redis.Nil) || (errors.As(err, &reply) && !isNetError(err)) {
		return
	}
	if f, ok := ctx.Value(failFlag{}).(*atomic.Bool); ok {
		f.Store(true)
	}
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}
