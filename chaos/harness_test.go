package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// rules is the rules file of every scenario: item events remove one exact
// key, bulk events sweep a pattern, course events do both (the glob corpus).
const rules = `rules:
  - on: events.item.*
    invalidate: ["item:{item_id}"]
  - on: events.bulk.*
    invalidate: ["bulk:{bulk_id}:*"]
  - on: events.course.*
    invalidate: ["cache:course_analytics:{course_id}", "cache:course_analytics:{course_id}:*"]
explicit:
  allow: ["item:*"]
`

const (
	stream    = "EVENTS"
	consumer  = "invalidator"
	dlqStream = "EVENTS_DLQ"
)

// rig is one scenario's world: a redis-server child, an embedded NATS
// server on a fixed port (so it can be restarted), the worker processes
// started so far and the clients the test observes them with.
type rig struct {
	t        *testing.T
	redis    *servers.Redis
	rdb      *redis.Client
	natsOpts servers.NATSOptions
	natsMu   sync.Mutex
	nats     *server.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	rules    string
	env      []string // settings for the worker on top of the defaults

	mu      sync.Mutex
	workers []*testproc.Proc
}

// newRig starts the servers of one scenario; extra are worker settings
// (NAME=value) and redisArgs more redis-server options.
func newRig(t *testing.T, aof bool, redisArgs []string, extra ...string) *rig {
	t.Helper()
	testproc.Binary(t) // build before the servers start
	r := &rig{t: t, env: extra}
	var err error
	r.redis, err = servers.StartRedis(context.Background(), servers.RedisOptions{Dir: t.TempDir(), AppendOnly: aof, Args: redisArgs})
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		if pid := r.redis.PID(); pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGCONT) // a stall left by a failed test
		}
		_ = r.redis.Stop()
	})
	r.rdb = redis.NewClient(&redis.Options{Addr: r.redis.Addr(), ReadTimeout: 5 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = r.rdb.Close() })

	port, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r.natsOpts = servers.NATSOptions{Port: port, StoreDir: t.TempDir()}
	r.startNATS()
	t.Cleanup(r.stopNATS)
	r.nc, err = nats.Connect(r.natsURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nc.Close)
	if r.js, err = jetstream.New(r.nc); err != nil {
		t.Fatal(err)
	}
	r.rules = filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(r.rules, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) natsURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", r.natsOpts.Port) }

func (r *rig) startNATS() {
	r.t.Helper()
	s, err := servers.StartNATS(r.natsOpts)
	if err != nil {
		r.t.Fatalf("start NATS: %v", err)
	}
	r.natsMu.Lock()
	r.nats = s
	r.natsMu.Unlock()
}

func (r *rig) stopNATS() {
	r.natsMu.Lock()
	s := r.nats
	r.nats = nil
	r.natsMu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// environ is the worker's whole environment: nothing is inherited.
func (r *rig) environ() []string {
	return testproc.WorkerEnv(r.redis.URL(), r.natsURL(), r.rules, append([]string{
		"SHUTDOWN_TIMEOUT=10s",
		"REDIS_SOCKET_TIMEOUT=1s",
		"REDIS_SOCKET_CONNECT_TIMEOUT=1s",
	}, r.env...)...)
}

// startWorker runs `invalidator run` and waits until it logs that it started.
func (r *rig) startWorker() *testproc.Proc {
	r.t.Helper()
	p := failureLog.Start(r.t, r.environ(), "run")
	r.mu.Lock()
	r.workers = append(r.workers, p)
	r.mu.Unlock()
	p.WaitLog(r.t, `"worker started"`, 30*time.Second)
	return p
}

// settled is one event delivery the worker finished, read from its log.
type settled struct {
	msg      string
	seq      uint64
	delivery uint64
}

// settlements reads every worker's "event ..." log lines.
func (r *rig) settlements() []settled {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []settled
	for _, p := range r.workers {
		for _, l := range strings.Split(p.Stderr.String(), "\n") {
			var rec struct {
				Msg      string `json:"msg"`
				Seq      uint64 `json:"seq"`
				Delivery uint64 `json:"delivery"`
			}
			if json.Unmarshal([]byte(l), &rec) != nil || !strings.HasPrefix(rec.Msg, "event ") {
				continue
			}
			out = append(out, settled{rec.Msg, rec.Seq, rec.Delivery})
		}
	}
	return out
}

// redeliveries counts the settled deliveries after a first one.
func (r *rig) redeliveries() int {
	n := 0
	for _, s := range r.settlements() {
		if s.delivery > 1 {
			n++
		}
	}
	return n
}

// consumerInfo reads the worker's consumer, nil if it does not answer.
func (r *rig) consumerInfo() *jetstream.ConsumerInfo {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := r.js.Consumer(ctx, stream, consumer)
	if err != nil {
		return nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil
	}
	return info
}

// drained reports whether the consumer has nothing pending or unacked.
func (r *rig) drained() bool {
	info := r.consumerInfo()
	return info != nil && info.NumPending == 0 && info.NumAckPending == 0
}

// deadLetters counts the letters by kind and returns the original message
// ids of the letters.
func (r *rig) deadLetters() (map[deadletter.Kind]int, map[string]deadletter.Kind) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kinds, ids := map[deadletter.Kind]int{}, map[string]deadletter.Kind{}
	err := deadletter.NewStore(r.js, dlqStream, "dlq").List(ctx, deadletter.Filter{}, func(l deadletter.Letter) error {
		kinds[l.Kind]++
		ids[l.OriginalMsgID] = l.Kind
		return nil
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		r.t.Fatalf("read dead letters: %v", err)
	}
	return kinds, ids
}

// publish sends one bare-JSON event with a message id, retrying (same id,
// so the stream stores it once) until the stream acknowledges it or within
// has passed.
func (r *rig) publish(subject, id string, data map[string]any, within time.Duration) (*jetstream.PubAck, error) {
	body, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ack, err := r.js.Publish(ctx, subject, body, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return ack, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("publish %s %s: %w", subject, id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// setKeys writes the keys with pipelined MSETs, value "v".
func (r *rig) setKeys(keys []string) {
	r.t.Helper()
	ctx := context.Background()
	for chunk := range slices.Chunk(keys, 1000) {
		pairs := make([]any, 0, 2*len(chunk))
		for _, k := range chunk {
			pairs = append(pairs, k, "v")
		}
		if err := r.rdb.MSet(ctx, pairs...).Err(); err != nil {
			r.t.Fatalf("MSET: %v", err)
		}
	}
}

// existing counts how many of keys exist.
func (r *rig) existing(keys []string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pipe := r.rdb.Pipeline()
	var cmds []*redis.IntCmd
	for chunk := range slices.Chunk(keys, 1000) {
		cmds = append(cmds, pipe.Exists(ctx, chunk...))
	}
	if len(cmds) == 0 {
		return 0, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cmds {
		n += int(c.Val())
	}
	return n, nil
}

// waitApplied polls until none of keys exist and the consumer is drained,
// or within has passed; it returns when that happened (zero on timeout).
func (r *rig) waitApplied(keys []string, within time.Duration) time.Time {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if n, err := r.existing(keys); err == nil && n == 0 && r.drained() {
			return time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Time{}
}

// lagSampler polls the consumer every 100ms and keeps the peak of
// NumPending+NumAckPending, of NumAckPending and of NumRedelivered.
type lagSampler struct {
	peakLag, peakAckPending, peakRedelivered uint64
	mu                                       sync.Mutex
	stop                                     context.CancelFunc
	done                                     chan struct{}
}

func (r *rig) sampleLag() *lagSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &lagSampler{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if info := r.consumerInfo(); info != nil {
				s.mu.Lock()
				s.peakLag = max(s.peakLag, info.NumPending+uint64(info.NumAckPending))
				s.peakAckPending = max(s.peakAckPending, uint64(info.NumAckPending))
				s.peakRedelivered = max(s.peakRedelivered, uint64(info.NumRedelivered))
				s.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	r.t.Cleanup(s.close)
	return s
}

// close stops the sampler and waits for it; closing twice is safe.
func (s *lagSampler) close() { s.stop(); <-s.done }

func (s *lagSampler) peaks() (lag, ackPending, redelivered uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakLag, s.peakAckPending, s.peakRedelivered
}

// failureLog is what a failed test logs of each worker: the end of stderr.
var failureLog = testproc.Runner{StderrTail: 4096}

// applied counts this process's "event applied" log lines.
func applied(p *testproc.Proc) int { return strings.Count(p.Stderr.String(), `"event applied"`) }
