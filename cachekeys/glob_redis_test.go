package cachekeys_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// globRedis is a client on a redis-server of the test's own, for
// differential tests of Match against SCAN MATCH.
type globRedis struct {
	rdb *redis.Client
}

func newGlobRedis(tb testing.TB) globRedis {
	tb.Helper()
	return globRedis{rdb: testserver.RedisClient(tb, testserver.Redis(tb))}
}

// load empties the database and writes keys into it.
func (g globRedis) load(tb testing.TB, keys []string) {
	tb.Helper()
	ctx := context.Background()
	pipe := g.rdb.Pipeline()
	pipe.FlushDB(ctx)
	for _, k := range keys {
		pipe.Set(ctx, k, "v", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		tb.Fatalf("load %q: %v", keys, err)
	}
}

// scan returns the keys SCAN cursor MATCH pattern COUNT 1000 returns, from
// cursor 0 until it comes back to 0. The command is sent as is: go-redis'
// Scan drops an empty MATCH, which would test SCAN without one.
func (g globRedis) scan(tb testing.TB, pattern string) map[string]bool {
	tb.Helper()
	ctx := context.Background()
	got := map[string]bool{}
	for cursor := "0"; ; {
		reply, err := g.rdb.Do(ctx, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000).Slice()
		if err != nil || len(reply) != 2 {
			tb.Fatalf("SCAN MATCH %q: %v %v", pattern, reply, err)
		}
		page, _ := reply[1].([]any)
		for _, k := range page {
			got[k.(string)] = true
		}
		if cursor = reply[0].(string); cursor == "0" {
			return got
		}
	}
}

// agree fails the test for each key of keys on which Match and Redis
// disagree about pattern (keys must be loaded).
func (g globRedis) agree(tb testing.TB, pattern string, keys []string) {
	tb.Helper()
	matched := g.scan(tb, pattern)
	for k := range matched {
		if !slices.Contains(keys, k) {
			tb.Fatalf("SCAN MATCH %q returned %q, which was never written", pattern, k)
		}
	}
	for _, k := range keys {
		if pattern == "*" && k == "" {
			continue // SCAN skips matching for "*"; Match is stringmatchlen, which refuses an empty key
		}
		if got, want := cachekeys.Match(pattern, k), matched[k]; got != want {
			tb.Errorf("Match(%q, %q) = %v, Redis SCAN MATCH says %v", pattern, k, got, want)
		}
	}
}

// keySep separates the keys of one fuzz input.
const keySep = "\x00"

// FuzzMatchAgreesWithRedis is the differential test of Match: for any
// pattern and keys, Match agrees with SCAN MATCH of a real redis-server on
// every key, both ways. Keys come NUL-separated in one string (so a key
// holds no NUL; patterns may). One redis-server serves the whole run; each
// input gets a freshly flushed database.
func FuzzMatchAgreesWithRedis(f *testing.F) {
	seeds := [][2]string{
		{"", ""},
		{"", "a"},
		{"*", ""},
		{"*", "a\x00"},
		{"**", ""},
		{"?", ""},
		{"user:*", "user:1\x00user:\x00user\x00users:1\x00"},
		{"cache:course_analytics:42:*", "cache:course_analytics:42:x\x00cache:course_analytics:420:x\x00cache:course_analytics:42"},
		{"a?c", "abc\x00ac\x00abbc\x00a\xffc"},
		{"*a*b*", "ab\x00ba\x00xaxbx\x00aaa"},
		{"[abc]", "a\x00d\x00]"},
		{"[a-c]x", "bx\x00dx\x00-x"},
		{"[z-a]", "m\x00A\x00z\x00a"},
		{"[^a-c]", "b\x00d\x00^"},
		{"[^]", "^\x00]\x00a"},
		{"[]", "]\x00a"},
		{"[]a]", "]\x00a\x00b"},
		{"[a-]", "a\x00]\x00-\x00b"},
		{"[a-]x", "]\x00x\x00a"},
		{"[", "[\x00a"},
		{"a[", "a\x00a["},
		{"a[b-", "a\x00ab\x00a-"},
		{`[\]]`, "]\x00\\"},
		{`[\`, `\` + "\x00a"},
		{`[a\`, `\` + "\x00a"},
		{`\*`, "*\x00a\x00\\*"},
		{`\`, `\` + "\x00a"},
		{`a\`, `a\` + "\x00a"},
		{`\\`, `\` + "\x00\\\\"},
		{`\?\[`, "?[\x00a["},
		{"[\x80-\xff]", "\x80\x00\xff\x00\x90\x00a\x00\x7f"},
		{"[a-\xff]", "b\x00\x80\x00\xfe\x00A\x00`"},
		{"[\x01-\x80]", "a\x00\x7f\x00\x80\x00\x81\x00\x00"},
		{"[\xff-a]", "b\x00\x80\x00A"},
		{"[^\x80-\xff]", "a\x00\x90"},
		{"\xe2\x82\xac*", "\xe2\x82\xac1\x00\xe2\x82"},
		{"?\xff", "a\xff\x00\xff"},
		{"a*", "a\x00ab\x00b"},
		{"*?", "\x00a"},
		{"a\x00b", "a"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	g := newGlobRedis(f)
	f.Fuzz(func(t *testing.T, pattern, keyList string) {
		keys := strings.Split(keyList, keySep)
		if len(pattern) > 64 || len(keys) > 32 || len(keyList) > 1024 {
			t.Skip("input too large")
		}
		g.load(t, keys)
		g.agree(t, pattern, keys)
	})
}

// TestMatchAgreesWithRedisRandom is the differential test without -fuzz:
// a fixed seed draws random keys and patterns over a small alphabet dense
// in metacharacters (and a byte over 0x7f) and checks every pair against
// SCAN MATCH.
func TestMatchAgreesWithRedisRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("needs redis-server")
	}
	const (
		alphabet = "ab*?[]^-\\:z\x80\xff"
		rounds   = 20
		nKeys    = 60
		nPattern = 40
	)
	rng := rand.New(rand.NewPCG(8, 9))
	draw := func(maxLen int, from string) string {
		b := make([]byte, rng.IntN(maxLen+1))
		for i := range b {
			b[i] = from[rng.IntN(len(from))]
		}
		return string(b)
	}
	g := newGlobRedis(t)
	for range rounds {
		keys := make([]string, nKeys)
		for i := range keys {
			keys[i] = draw(6, "ab:z]-\\^\x80\xff")
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
		g.load(t, keys)
		for range nPattern {
			g.agree(t, draw(8, alphabet), keys)
		}
		if t.Failed() {
			return
		}
	}
}
