package sweep_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	redis.SetLogger(discard{}) // the error test makes go-redis log a killed connection
	goleak.VerifyTestMain(m)
}

type discard struct{}

func (discard) Printf(context.Context, string, ...any) {}

// newRedis starts a redis-server that accepts DEBUG and returns a client.
func newRedis(t testing.TB) *redis.Client {
	t.Helper()
	r := testserver.Redis(t, testserver.WithArgs("--enable-debug-command", "local"))
	return testserver.RedisClient(t, r)
}

// fill sets every key of keys, 1000 a round trip.
func fill(t testing.TB, rdb *redis.Client, keys []string) {
	t.Helper()
	ctx := context.Background()
	for c := range slices.Chunk(keys, 1000) {
		args := make([]any, 0, 2*len(c))
		for _, k := range c {
			args = append(args, k, "v")
		}
		if err := rdb.MSet(ctx, args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// courseKeys returns perCourse keys of each of courses courses.
func courseKeys(courses, perCourse int) []string {
	keys := make([]string, 0, courses*perCourse)
	for c := range courses {
		for j := range perCourse {
			keys = append(keys, fmt.Sprintf("cache:course_analytics:%d:%d", c, j))
		}
	}
	return keys
}

// scanAll returns the keys a plain SCAN MATCH loop finds.
func scanAll(t testing.TB, rdb *redis.Client, pattern string) []string {
	t.Helper()
	var keys []string
	iter := rdb.Scan(context.Background(), 0, pattern, 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// scanCalls reads cmdstat_scan calls from INFO commandstats.
func scanCalls(t testing.TB, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_scan:calls="); ok {
			n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			return n
		}
	}
	return 0
}

// tableSize reads the sizes of the main table from DEBUG HTSTATS 0: both
// tables while Redis rehashes, else the same size twice.
func tableSize(t testing.TB, rdb *redis.Client) (smallest, largest int64) {
	t.Helper()
	out, err := rdb.Do(context.Background(), "DEBUG", "HTSTATS", "0").Text()
	if err != nil {
		t.Fatal(err)
	}
	smallest = math.MaxInt64
	for line := range strings.SplitSeq(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "table size:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			smallest, largest = min(smallest, n), max(largest, n)
		}
	}
	return smallest, largest
}
