package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The faults of the staleness benchmark. Readers and writers keep going
// through each; the target is that no read is staler than the fault's
// length plus ACK_WAIT, and that every key is consistent after it.
const (
	// faultKill SIGKILLs the worker and starts it again after faultFor.
	// What it had fetched but not acked is redelivered after ACK_WAIT;
	// nothing is acked before its keys are gone.
	faultKill = "kill"
	// faultStall SIGSTOPs redis-server and SIGCONTs it after faultFor: the
	// worker's and the readers' commands wait or time out meanwhile.
	faultStall = "stall"
)

// faultResult is what one fault did.
type faultResult struct {
	kind string // "" when the case has no fault
	// length is the fault as applied: SIGKILL → the worker started again,
	// or SIGSTOP → SIGCONT.
	length time.Duration
	// down is how long the invalidations could not happen: SIGKILL → the
	// restarted worker's first delivery, or the stall itself.
	down    time.Duration
	ackWait time.Duration
}

// process is a child process that can be killed and started again: the
// worker, or cdc.
type process struct {
	bin  string
	args []string
	env  []string
	cmd  *exec.Cmd
}

// start starts the process; its output goes to the benchmark's stderr.
func (p *process) start(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, p.bin, p.args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = p.env, os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %v: %w", p.args, err)
	}
	p.cmd = cmd
	return nil
}

// kill SIGKILLs the process and reaps it; a no-op when it is not running.
func (p *process) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

// inject waits until at into the run (rctx), then applies the case's
// fault. The worker is started again on ctx, so that it outlives the run.
func (r *stalenessRig) inject(ctx, rctx context.Context, at time.Duration) (faultResult, error) {
	if err := sleepCtx(rctx, at); err != nil {
		return faultResult{}, fmt.Errorf("the run ended before the fault")
	}
	res := faultResult{kind: r.c.fault, ackWait: r.o.stalenessAckWait}
	switch r.c.fault {
	case faultKill:
		return res, r.killWorker(ctx, &res)
	case faultStall:
		return res, r.stallRedis(&res)
	}
	return res, fmt.Errorf("unknown fault %q", r.c.fault)
}

// killWorker SIGKILLs the worker, starts it again after faultFor and
// waits, for at most 30 s, for the consumer's first delivery after that.
func (r *stalenessRig) killWorker(ctx context.Context, res *faultResult) error {
	start := time.Now()
	r.worker.kill()
	log.Printf("staleness: worker SIGKILLed at %s", start.Format("15:04:05.000"))
	if err := sleepCtx(ctx, r.c.faultFor); err != nil {
		return err
	}
	seq, err := deliveredSeq(ctx, r.js)
	if err != nil {
		return err
	}
	if err := r.worker.start(ctx); err != nil {
		return err
	}
	res.length = time.Since(start)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if now, err := deliveredSeq(ctx, r.js); err == nil && now > seq {
			res.down = time.Since(start)
			log.Printf("staleness: worker started again after %v, consuming after %v", roundDur(res.length), roundDur(res.down))
			return nil
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("the restarted worker took no event within 30 s")
}

// deliveredSeq is the last consumer sequence the worker's consumer
// delivered.
func deliveredSeq(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	cons, err := js.Consumer(ctx, "EVENTS", "invalidator")
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.Delivered.Consumer, nil
}

// stallRedis SIGSTOPs redis-server for faultFor, then SIGCONTs it; the
// SIGCONT is sent whatever happens meanwhile.
func (r *stalenessRig) stallRedis(res *faultResult) error {
	pid := r.e.redis.PID()
	if pid <= 0 {
		return fmt.Errorf("redis-server has no process")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP redis-server: %w", err)
	}
	start := time.Now()
	log.Printf("staleness: redis-server SIGSTOPped at %s", start.Format("15:04:05.000"))
	time.Sleep(r.c.faultFor)
	err := syscall.Kill(pid, syscall.SIGCONT)
	res.length = time.Since(start)
	res.down = res.length
	if err != nil {
		return fmt.Errorf("SIGCONT redis-server: %w", err)
	}
	return nil
}
