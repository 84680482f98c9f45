package main

import (
	"testing"

	"github.com/invalidator/invalidator/engine/enginetest"
	"github.com/invalidator/invalidator/internal/testserver"
	"go.uber.org/goleak"
)

// The baseline passes the contract every engine passes, so the benchmark
// compares two engines that do the same work.
func TestPerPatternContract(t *testing.T) {
	enginetest.Run(t, func(t *testing.T) enginetest.Setup {
		rdb := testserver.RedisClient(t, testserver.Redis(t))
		return enginetest.Setup{Engine: perPattern{rdb: rdb}, Client: rdb}
	})
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
