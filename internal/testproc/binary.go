// Package testproc runs the invalidator command as a child process in tests:
// it builds ./cmd/invalidator once per test binary, starts it with an exact
// environment, and lets a test wait for its log lines, signal it and read
// its exit code. Every process it starts is killed at test cleanup.
package testproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildTimeout bounds the one go build of the binary.
const buildTimeout = 5 * time.Minute

// The binary under test, built once per test binary by Binary.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// Binary builds ./cmd/invalidator of this module once per test binary, into
// a temporary directory, and returns the path of the executable. It skips tb
// if the go command is not on PATH and fails it if the build fails. Calling
// it before starting servers keeps the build out of their timings; TestMain
// removes the build with Cleanup.
func Binary(tb testing.TB) string {
	tb.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		tb.Skip("the go command is not on PATH, so the invalidator binary cannot be built for process tests")
	}
	buildOnce.Do(func() { binPath, buildErr = build() })
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// build compiles the command into a new temporary directory.
func build() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	if binDir, err = os.MkdirTemp("", "invalidator-bin-"); err != nil {
		return "", err
	}
	path := filepath.Join(binDir, "invalidator")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "./cmd/invalidator")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return path, nil
}

// moduleRoot is the directory of the go.mod that holds the working
// directory, which go test sets to the package under test.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("testproc: the working directory is not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// Cleanup removes what Binary built, if anything; call it from TestMain
// after m.Run.
func Cleanup() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}
