package guard

import (
	"strings"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/nats-io/nuid"
)

const (
	// KeyPrefix starts every generation key.
	KeyPrefix = "invalidator:gen:"
	// TTL is how long a generation key lives after its last write; it
	// bounds the fetch time the guard covers, and the TTL of a value.
	TTL = 24 * time.Hour
	// ProtocolMarkerKey is the key a reader or filler of the read/fill
	// protocol keeps alive, so that a worker with GENERATIONS=auto sees it
	// and turns generations on: SET it to a short name of the client
	// ("go", "python", "node") with PX ProtocolMarkerTTL, at least every
	// ProtocolMarkerRefresh while the client reads or fills.
	ProtocolMarkerKey = "invalidator:protocol"
	// ProtocolMarkerTTL is the marker's time to live.
	ProtocolMarkerTTL = time.Minute
	// ProtocolMarkerRefresh is how often a client renews the marker.
	ProtocolMarkerRefresh = 20 * time.Second
)

// Key returns the generation key of scope: an exact cache key, or the
// scope of a pattern (cachekeys.PatternScope).
func Key(scope string) string { return KeyPrefix + scope }

// ClusterKey returns the generation key of cache key key on a Redis
// Cluster: hash-tagged into key's own slot, so that one script can check it
// and write key.
func ClusterKey(key string) string {
	return KeyPrefix + "{" + cachekeys.SlotTag(cachekeys.Slot(key)) + "}" + key
}

// Keys returns the generation keys that guard key, in the order the
// scripts take them: the key's own, Key(key), then that of each segment
// prefix, shortest first (cachekeys.SegmentPrefixes). An invalidation of
// key removes the first; one of a pattern over key sets a fresh token on
// the one of the pattern's scope.
func Keys(key string) []string {
	prefixes := cachekeys.SegmentPrefixes(key)
	keys := make([]string, 0, 1+len(prefixes))
	keys = append(keys, Key(key))
	for _, p := range prefixes {
		keys = append(keys, Key(p))
	}
	return keys
}

// ClusterKeys returns the generation keys that guard key on a Redis
// Cluster, in the order of Keys: the key's own, ClusterKey(key), then that
// of each segment prefix, shortest first.
func ClusterKeys(key string) []string {
	keys := Keys(key)
	keys[0] = ClusterKey(key)
	return keys
}

// RegistryKey returns the set where fills of unstamped values of keys under
// scope (a segment prefix) register themselves on a Redis Cluster.
func RegistryKey(scope string) string { return KeyPrefix + "fills:" + scope }

// Member is the member a fill with token adds to the registries of key's
// scopes; MemberKey reads the key back.
func Member(token, key string) string { return token + "|" + key }

// MemberKey returns the cache key of a registry member.
func MemberKey(member string) string {
	_, key, _ := strings.Cut(member, "|")
	return key
}

// NewToken returns a value no generation key ever held, for a batch of
// invalidations or a fill's claim: a NUID (22 characters, a crypto-random
// prefix and a sequence, unique across processes, never "0").
func NewToken() string { return nuid.Next() }

// Stamp returns the head a value stamped with tokens starts with:
// "@gen <token> <token> ...\n".
func Stamp(tokens []string) string {
	return stampHead + strings.Join(tokens, " ") + "\n"
}
