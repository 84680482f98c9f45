// Package chaos holds the fault suite: tests that run the real invalidator
// binary, a redis-server child and a NATS server through faults (SIGKILL,
// SIGSTOP, restarts, a full Redis, slow handlers, publisher retries, glob
// injection, start/stop stress) and measure, for each, the events lost,
// duplicated, dead-lettered and over-deleted. The package has no code of its
// own outside the tests; run it with
//
//	go test ./chaos/                      # the short version, as in CI
//	go test ./chaos/ -chaos.long -timeout 60m   # the full one (or CHAOS_LONG=1)
//
// A long run writes its table to docs/chaos/results.md; a short one logs it.
package chaos
