package testproc

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Runner starts the invalidator binary. The zero value is ready to use.
type Runner struct {
	// StderrTail, when above zero, makes a failed test log only the last
	// StderrTail bytes of the process's stderr. Defaults to 0: a failed
	// test logs all of stdout and stderr.
	StderrTail int
}

// Proc is a running (or exited) invalidator process.
type Proc struct {
	// Stdout and Stderr hold what the process has written so far.
	Stdout, Stderr *Buffer

	cmd    *exec.Cmd
	exited chan struct{}
}

// Start runs the binary with the zero Runner; see Runner.Start.
func Start(tb testing.TB, environ []string, args ...string) *Proc {
	tb.Helper()
	return Runner{}.Start(tb, environ, args...)
}

// Start builds the binary if need be (see Binary) and runs it with args and
// exactly the environment environ: nothing is inherited. The process gets
// SIGKILL if the test process dies, and is killed at tb's cleanup if it is
// still running; if tb failed, its output is logged then.
func (r Runner) Start(tb testing.TB, environ []string, args ...string) *Proc {
	tb.Helper()
	p := &Proc{cmd: exec.Command(Binary(tb), args...), Stdout: &Buffer{}, Stderr: &Buffer{}, exited: make(chan struct{})}
	p.cmd.Env = environ
	if p.cmd.Env == nil {
		p.cmd.Env = []string{} // nil would inherit the test's environment
	}
	p.cmd.Stdout, p.cmd.Stderr = p.Stdout, p.Stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %v: %v", args, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	tb.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if tb.Failed() {
			r.logOutput(tb, p, args)
		}
	})
	return p
}

// logOutput logs what the process wrote, as r says.
func (r Runner) logOutput(tb testing.TB, p *Proc, args []string) {
	tb.Helper()
	if r.StderrTail > 0 {
		s := p.Stderr.String()
		tb.Logf("%v stderr (last %d bytes):\n%s", args, r.StderrTail, s[max(0, len(s)-r.StderrTail):])
		return
	}
	tb.Logf("%v stdout:\n%s\nstderr:\n%s", args, p.Stdout, p.Stderr)
}

// Exited is closed when the process has exited and its output is complete.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// ExitCode is the exit code of the process, or -1 if it is still running or
// was ended by a signal.
func (p *Proc) ExitCode() int {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// Wait waits for the process to exit and returns its exit code; it fails
// the test if the process still runs after within.
func (p *Proc) Wait(tb testing.TB, within time.Duration) int {
	tb.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		tb.Fatalf("process did not exit within %s", within)
		return -1
	}
}

// Signal sends sig to the process, failing the test if it cannot.
func (p *Proc) Signal(tb testing.TB, sig os.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signal %v: %v", sig, err)
	}
}

// Stop sends SIGTERM, waits for the process to exit and returns its exit
// code; it fails the test if the process still runs after within. A process
// that has already exited just gives its exit code.
func (p *Proc) Stop(tb testing.TB, within time.Duration) int {
	tb.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		tb.Fatalf("process did not exit within %s of SIGTERM", within)
		return -1
	}
}

// Kill sends SIGKILL and waits for the process to be gone, failing the test
// if it is not within 10 seconds.
func (p *Proc) Kill(tb testing.TB) {
	tb.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		tb.Fatal("SIGKILLed process still running after 10s")
	}
}

// WaitLog polls until stderr holds want, failing the test if within passes
// first or the process exits without having written it.
func (p *Proc) WaitLog(tb testing.TB, want string, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(p.Stderr.String(), want) {
		select {
		case <-p.exited:
			if !strings.Contains(p.Stderr.String(), want) { // written just before the exit
				tb.Fatalf("process exited with %d before logging %q", p.cmd.ProcessState.ExitCode(), want)
			}
			return
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for log line %q", within, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
