// Command invalidator keeps Redis caches honest: it consumes domain events
// from NATS JetStream and removes the Redis keys that the rules file maps
// them to.
//
//	invalidator run                       the worker
//	invalidator dev                       the worker, starting NATS and Redis if they are not running
//	invalidator cdc                       publish events from PostgreSQL's commit log
//	invalidator publish SUBJECT [JSON]    publish an event
//	invalidator purge PATTERN... [--dry-run] [--json]
//	invalidator rules check FILE
//	invalidator rules explain FILE SUBJECT JSON
//	invalidator dlq list|show|replay|purge
//
// Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/invalidator/invalidator/internal/logging"
	"github.com/redis/go-redis/v9"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// env is what a command runs with: arguments, streams and the environment.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string // nil means the process environment, read by internal/config
}

// usageError is bad usage or configuration: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

type command struct {
	name, args, summary string
	run                 func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"run", "[flags]", "run the worker", runCmd},
		{"dev", "[flags]", "run the worker, starting NATS and Redis when they do not answer", devCmd},
		{"cdc", "[flags]", "publish events from PostgreSQL's commit log (logical replication)", cdcCmd},
		{"publish", "SUBJECT [JSON]", "publish an event (data from JSON or stdin); prints the stream sequence", publishCmd},
		{"purge", "PATTERN... [--dry-run] [--json]", "remove keys now: all patterns in one shared SCAN pass", purgeCmd},
		{"rules", "check FILE | explain FILE SUBJECT JSON", "validate rules, or show what an event would invalidate", rulesCmd},
		{"dlq", "list|show|replay|purge [flags]", "list, inspect, replay or purge dead letters", dlqCmd},
	}
}

func main() {
	// go-redis logs dial failures through its own logger, straight to
	// stderr; each command reports them itself, and run and dev route the
	// logger through theirs at debug level (newLogger).
	redis.SetLogger(logging.RedisLogger{Log: slog.New(slog.DiscardHandler)})
	e := env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(run(context.Background(), e, os.Args[1:]))
}

// run dispatches to a command and maps its error to an exit code.
func run(ctx context.Context, e env, args []string) int {
	if len(args) == 0 {
		topUsage(e.stderr)
		return exitUsage
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "-help" || name == "help" {
		topUsage(e.stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == name {
			return exitCode(e, c.run(ctx, e, args[1:]))
		}
	}
	fmt.Fprintf(e.stderr, "invalidator: unknown command %q\n", name)
	topUsage(e.stderr)
	return exitUsage
}

func exitCode(e env, err error) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "invalidator: %s\n", oneLine(err.Error()))
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "invalidator: %s\n", oneLine(err.Error()))
		return exitFailure
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func topUsage(w io.Writer) {
	fmt.Fprintln(w, "invalidator removes Redis keys named by domain events on NATS JetStream.")
	fmt.Fprintln(w, "\nUsage:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  invalidator %-8s %-40s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'invalidator COMMAND --help' for a command's flags.")
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration.")
}

// newFlagSet returns a flag set whose --help prints to stdout and whose
// errors are returned, not printed and exited on.
func newFlagSet(e env, name, args, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(e.stdout, "Usage: invalidator %s %s\n\n%s\n", name, args, summary)
		if hasFlags(fs) {
			fmt.Fprintln(e.stdout, "\nFlags:")
			fs.SetOutput(e.stdout)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parse parses flags anywhere among the arguments and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err // Parse has already called fs.Usage
			}
			return nil, usageError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
