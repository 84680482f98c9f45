package engine

// The generation guard on a Redis Cluster.
//
// A script may touch the keys of one slot only, so the single-node form
// (one script that checks every generation of a key and SETs it) does not
// exist there. The cluster form keeps what must be atomic in the key's own
// slot and orders the rest by round trips.
//
// Keys. The own generation of cache key K is guard.ClusterKey(K),
// hash-tagged into K's slot. Scope generations are replaced by fill
// registries: guard.RegistryKey(P), a set per segment prefix P, in any slot.
//
// A fill F of K (package warm, or any service following the README):
//
//  1. SADD guard.RegistryKey(P) guard.Member(t, K) (and PEXPIRE it) for every P
//     in cachekeys.SegmentPrefixes(K), t a fresh token; wait for the replies.
//  2. SET guard.ClusterKey(K) t NX GET PX ttl, and remember r: the reply,
//     or t on a nil reply.
//  3. Fetch.
//  4. One script on {K, guard.ClusterKey(K)} (one slot): SET K only if
//     the generation still holds r (a missing one reads "0").
//  5. SREM its members (best effort; the registry's TTL is the fallback).
//
// An invalidation I, in [Cluster.Apply] with Config.Generations:
//
//   - Exact key K: one script in K's slot UNLINKs guard.ClusterKey(K)
//     and then K, atomically.
//   - Pattern with scope P: first a script takes every member of
//     guard.RegistryKey(P) and deletes the set (atomically, at time tm), and
//     in the same round trip guard.Key(P) is SET to a fresh token, as on
//     one node, for readers of stamped values (package cache: they compare
//     a value's stamp with the current generations, see package guard);
//     then
//     the own generation of each member's key is UNLINKed, and only once
//     that returned does the sweep start (at ts). A pattern without glob
//     characters names one key and is handled as an exact key.
//
// Why no value fetched before I is written after it (I starts after the
// application committed the newer data; tokens are unique and each is
// written to a generation once, so a token that left a key never comes
// back, as on one node):
//
//   - Exact K: as on one node (engine/generation.go, points 1 to 3), with
//     the generation and K in one slot, removed by one script.
//   - Pattern with scope P, a segment prefix of K. If F's SADD (step 1) came
//     after tm, F's claim and fetch came after tm, after the commit: its
//     value is not older than I. Otherwise I took F's member at tm and
//     removes the own generation of K at tu, tm < tu < ts. If F claimed
//     (step 2) after tu, its fetch started after the commit: fine. If F
//     claimed before tu: either its script ran before tu, so K was written
//     before ts and exists when the sweep starts, and the sweep removes it;
//     or it ran after tu and finds the generation gone: refused.
//
// So the cluster form costs a fill one more round trip (the registry SADDs
// must return before the claim), and a pattern invalidation one script per
// scope plus one UNLINK per slot of the fills in flight. Fills of a key
// under a scope that an invalidation has just drained lose their claim,
// which skips a warm, never writes a stale one.

// drainRegistry takes every member of KEYS[1] and deletes the set.
const drainRegistry = `
local m = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return m
`

// unlinkWithGenerations UNLINKs KEYS[1..ARGV[1]] (generation keys), then
// the rest (cache keys), and returns the count of the cache keys removed.
// Every key is in one slot.
const unlinkWithGenerations = `
local n = tonumber(ARGV[1])
if n > 0 then redis.call('UNLINK', unpack(KEYS, 1, n)) end
if #KEYS > n then return redis.call('UNLINK', unpack(KEYS, n + 1, #KEYS)) end
return 0
`
