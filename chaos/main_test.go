package chaos

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var longFlag = flag.Bool("chaos.long", false, "run the full fault suite (5 kills, 100k keys, 10×50 start/stop); CHAOS_LONG=1 does the same")

// long reports whether the full suite runs.
func long() bool { return *longFlag || os.Getenv("CHAOS_LONG") == "1" }

// pick returns short in the short mode and full in the long one.
func pick[T any](short, full T) T {
	if long() {
		return full
	}
	return short
}

// The binary under test, built once per test run by binary.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// binary builds ./cmd/invalidator once into a temp dir and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH, so the invalidator binary cannot be built")
	}
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "invalidator-chaos-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "invalidator")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", binPath, "../cmd/invalidator").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
