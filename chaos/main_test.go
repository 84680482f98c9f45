package chaos

import (
	"flag"
	"os"
	"testing"

	"github.com/invalidator/invalidator/internal/testproc"
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

func TestMain(m *testing.M) {
	flag.Parse()
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		testproc.Cleanup()
		os.Exit(code)
	}))
}
