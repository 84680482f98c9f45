package sweep_test

import (
	"context"
	"flag"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/redis/go-redis/v9"
)

var (
	latencyKeys   = flag.Int("sweep.latency-keys", 0, "keys of TestBudgetReaderLatency (0 skips it; the report's run used 10000000)")
	latencyBudget = flag.Int("sweep.latency-budget", 250_000, "SCAN_BUDGET of TestBudgetReaderLatency")
)

// TestBudgetReaderLatency measures what a budgeted sweep costs a reader, with
// the tool operators use: the mean of `redis-cli --latency` (a PING every
// 10 ms) and, beside it, the p99 of a GET loop, in 8 s windows with a
// budgeted walk running and in windows before and after it with none. It
// compares the two ways of pacing a budget: short calls (COUNT capped at
// Budget/BudgetSlices, the walker's way) and calls of a normal COUNT with
// waits between them. A measurement, behind -sweep.latency-keys: it asserts
// only that each walk ran, and logs the ratios.
//
//	go test ./engine/sweep -run BudgetReaderLatency -v -args -sweep.latency-keys=10000000
func TestBudgetReaderLatency(t *testing.T) {
	n := *latencyKeys
	if n == 0 {
		t.Skip("a measurement: give -sweep.latency-keys=N")
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("no redis-cli")
	}
	rdb := newRedis(t)
	ctx := context.Background()
	opts := *rdb.Options()
	opts.ReadTimeout = -1
	admin := redis.NewClient(&opts)
	defer admin.Close()
	if err := admin.Do(ctx, "DEBUG", "POPULATE", n, "key").Err(); err != nil {
		t.Fatal(err)
	}
	budget := *latencyBudget
	forms := []struct {
		name string
		pace func(*sweep.Walker)
	}{
		{"short calls (COUNT <= budget/2000)", func(*sweep.Walker) {}},
		{"COUNT up to 1000, waits between pages", func(w *sweep.Walker) { sweep.PaceWithCount(w, sweep.DefaultScanCount) }},
	}
	for _, f := range forms {
		idle1 := measure(t, rdb, opts.Addr)
		w := sweep.New(rdb, sweep.Config{Budget: budget})
		f.pace(w)
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan sweep.Result, 1)
		go func() {
			res, _ := w.Sweep(sctx, []string{"nothing:*"}) // a pass that matches nothing
			done <- res
		}()
		busy := measure(t, rdb, opts.Addr)
		st := w.Status()
		cancel()
		res := <-done
		_ = w.Close()
		idle2 := measure(t, rdb, opts.Addr)
		if res.ScanCalls == 0 {
			t.Fatalf("%s: the walk made no SCAN call", f.name)
		}
		idle := (idle1.cli + idle2.cli) / 2
		idleGet := (idle1.getP99 + idle2.getP99) / 2
		t.Logf("%d keys, SCAN_BUDGET %d, %s: %d SCAN calls, COUNT now %d, %d keys examined in the window\n"+
			"    redis-cli --latency avg: idle %.3f ms (before %.3f, after %.3f), during the sweep %.3f ms: %.2fx\n"+
			"    GET p99: idle %s, during the sweep %s: %.2fx",
			n, budget, f.name, res.ScanCalls, st.ScanCount, res.Examined,
			idle, idle1.cli, idle2.cli, busy.cli, busy.cli/idle,
			idleGet, busy.getP99, float64(busy.getP99)/float64(idleGet))
	}
}

// window is what one measuring window saw.
type window struct {
	cli    float64 // redis-cli --latency average, ms
	getP99 time.Duration
}

// measure runs `redis-cli --latency --raw -i 8` and a GET loop beside it.
func measure(t *testing.T, rdb *redis.Client, addr string) window {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lat []time.Duration
	wg.Go(func() {
		ctx := context.Background()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			rdb.Get(ctx, "key:"+strconv.Itoa(i%1000))
			lat = append(lat, time.Since(start))
			time.Sleep(time.Millisecond)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", "-h", host, "-p", port, "--latency", "--raw", "-i", "8").Output()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("redis-cli --latency: %v", err)
	}
	f := strings.Fields(string(out)) // min max avg samples
	if len(f) != 4 {
		t.Fatalf("redis-cli --latency printed %q", out)
	}
	avg, err := strconv.ParseFloat(f[2], 64)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lat)
	if len(lat) == 0 {
		t.Fatal("no GET in the window")
	}
	return window{cli: avg, getP99: lat[len(lat)*99/100]}
}
