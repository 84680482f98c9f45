// Package guard is the generation guard's protocol, kept once: the
// generation keys and tokens, the stamp, the Lua scripts (files of this
// directory, for services in other languages too), and the read, claim and
// fill that package cache (services) and package warm (the worker's
// warmer) run. Package engine runs the invalidation side with the same
// keys: before it removes anything, it removes the own generation of each
// exact key and sets a fresh token on the generation of each pattern's
// scope (cachekeys.PatternScope), so that a read compares a value's stamp
// with the current tokens (O(1) in the keyspace, no SCAN), and a fill that
// claimed before an invalidation writes nothing after it.
//
// Protocol.Inspect is Read that says why: the value's stamp beside the
// current generations, for the consistency checker (package
// consistency), which must tell a stale value from a missing, masked or
// refilled one. Read and Inspect share one comparison (read.lua's).
//
// # The fill side: claim, fetch, guarded write
//
// A fill F of cache key K has a guard set G(K): Key(K) and
// Key(P) for each P in cachekeys.SegmentPrefixes(K). For each g in
// G(K), before the fetch, F runs SET g <fresh token> NX GET PX ttl (one
// round trip for all of them) and remembers the token g then holds: the one
// returned, or its own on a nil reply. After the fetch one script SETs K
// only if every g still holds the token F remembered (a missing g reads
// "0", which no token is).
//
// # Why no value fetched before an invalidation is written after it
//
// Let I be an invalidation covering K (an exact job naming K, or a pattern
// matching K, whose scope is then one of K's segment prefixes), and g the
// generation key of G(K) that I invalidates: w(I) is the command that SETs g
// to I's batch token (for a pattern scope) or removes g (the
// form package engine uses for exact keys). w(I) runs no later than the command
// that removes K (an earlier command of the same pipeline on one
// connection, or the same UNLINK), and I starts after the application
// committed the newer data (it published the event after its write).
//
//  1. Written once: every token written to a generation key is written
//     there once. A fill's claim writes its fresh token only where the key
//     is missing (NX); a batch writes its fresh token to each key once
//     (advance deduplicates, and a retried batch takes a new token). So
//     once g stops holding a token r (SET to another, removed, or expired),
//     g never holds r again: no ABA.
//  2. If F claimed g before w(I), it remembered the token r that g held at
//     its claim. Either its script ran before w(I): its value was written
//     before K's removal, which removes it. Or the script ran after w(I):
//     w(I) moved g away from r (or g had already moved), and by 1 it never
//     holds r again, while a missing g reads "0" and r is never "0". The
//     script refuses.
//  3. If F claimed g after w(I), its fetch started after the newer data was
//     committed, so its value is not older than I: writing it is correct,
//     even after K's removal. (This assumes the source reads its own
//     committed writes, not a lagging replica.)
//
// Consequences: two fills sharing one token (the second found the first's)
// both claimed after every invalidation before that token's claim, and are
// judged by 2 and 3 on their own. A generation that expires during a fetch
// reads "0", or a newer fill's token: the write is refused, a skipped warm,
// never a stale one. A fill that remembered "0" for a missing generation
// (the protocol before claiming) is safe against w(I) = SET, but not
// against w(I) = remove: missing, then SET, then removed reads "0" again.
// Claiming every key of G(K), prefixes included, rules that out, also for
// a key that ends with the separator, whose own generation key is a
// scope's too.
//
// # Redis Cluster
//
// A script may only touch the keys of one slot there, and the generations
// that guard a key K are in several: K's own, ClusterKey(K), is hash-tagged
// into K's slot; the generation of each segment prefix P, Key(P), is
// wherever P hashes. So the cluster form keeps the values and the stamps
// of one node and moves the comparisons that span slots to the client:
//
//   - read: GET K and every guard generation in one pipeline (one round
//     trip; go-redis sends each node its part in parallel), then compare
//     K's stamp with the generations read, a missing one reading "0", as
//     read.lua does.
//   - claim: SET g <fresh token> NX GET PX <ttl> for every guard g, one
//     pipeline, as claim.lua does.
//   - fill: cluster_fill.lua in K's slot checks K's own generation and
//     writes the stamped value; then the scope generations are read again,
//     and if one moved since the claim, cluster_unfill.lua takes the value
//     back (only if it still carries this stamp).
//   - set: claim, then SET K to the stamped value.
//
// The invalidation side is engine.Cluster with Config.Generations: an exact
// key and its own generation are UNLINKed by one script; a pattern's scope
// generation is SET to a fresh token before its sweep starts.
//
// Why a reader R never sees a value older than an invalidation I that
// completed before R began (tokens are unique, and each is written to a
// generation key once, so a token that left a key never comes back):
//
//   - I removes exact key K (or a literal pattern naming it): K and its own
//     generation go at once, at w. A value R reads was written after w. By
//     Set: an unconditional write, newer than I. By a fill F: its script
//     found the own generation holding F's token, so F claimed it after w
//     (a token claimed before w left the key at w), and its load started
//     after the application's commit, which came before I.
//   - I's pattern has scope P, a segment prefix of K: Key(P) was
//     SET to I's token t at w, before I completed. R reads that generation
//     after I completed: t, or a token written after w. A value stamped by
//     a fill that claimed before w carries a token that left the key at w,
//     so the stamps differ and R misses. A fill that claimed after w loaded
//     after the commit: its value is not older than I.
//
// And no value older than I stays in Redis once I completed: a fill that
// claimed P's generation before w and wrote K before I's sweep started is
// removed by the sweep (K existed when it began); one that wrote later
// reads P's generation after its write, finds it moved, and takes its
// value back. Between the two, no reader sees it (the first point).
//
// A raw fill (Protocol.ClaimRaw: no stamp, for services that GET the key
// directly) cannot be taken back by its stamp, so on a cluster it registers
// itself in the fill registry of each segment prefix (RegistryKey) before
// it claims the key's own generation; a pattern invalidation drains the
// registries and removes the own generation of each fill it finds (proof in
// package engine, cluster_generation.go).
package guard
