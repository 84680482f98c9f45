package testserver

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// LoadKeys writes n keys prefix<i> with values of size bytes, in MSETs of
// 1,000 keys pipelined 50 at a time.
func LoadKeys(tb testing.TB, rdb redis.Cmdable, prefix string, n, size int) {
	tb.Helper()
	ctx := context.Background()
	const perCommand, perPipeline = 1000, 50
	val := strings.Repeat("v", size)
	pipe := rdb.Pipeline()
	pairs := make([]any, 0, 2*perCommand)
	for i := range n {
		pairs = append(pairs, prefix+strconv.Itoa(i), val)
		if len(pairs) == cap(pairs) || i == n-1 {
			pipe.MSet(ctx, pairs...)
			pairs = make([]any, 0, 2*perCommand)
		}
		if pipe.Len() == perPipeline || i == n-1 {
			if _, err := pipe.Exec(ctx); err != nil {
				tb.Fatalf("load %s keys: %v", prefix, err)
			}
		}
	}
}

// CountKeys counts the keys matching pattern with SCAN.
func CountKeys(tb testing.TB, rdb *redis.Client, pattern string) int {
	tb.Helper()
	ctx := context.Background()
	n := 0
	iter := rdb.Scan(ctx, 0, pattern, 10000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	if err := iter.Err(); err != nil {
		tb.Fatal(err)
	}
	return n
}
