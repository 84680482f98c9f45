// Package cache is the service side of the invalidator: reading and
// filling JSON values in Redis through the read/fill protocol, so that the
// worker's invalidations take effect for readers as soon as the worker has
// handled an event, whether they name exact keys or patterns, long before a
// SCAN sweep reaches the keys.
//
// A value is stored with a stamp, the generation tokens that guard its key
// when it was filled (its own, and those of each segment prefix). The
// worker, with generations on, moves a token before it removes anything: a
// pattern's scope gets a fresh token, an exact key's own is removed with
// the key. A read compares the stamp with the current tokens and treats a
// difference as a miss: O(1) in the keyspace, no SCAN. A fill claims the
// tokens before it loads, and writes only if none moved meanwhile, so a
// value loaded before an invalidation is never served after it.
//
// The protocol runs on one server, on a Sentinel master, and on a Redis
// Cluster (the checks that span slots move to the client); it is package
// guard's, the one implementation the worker's warmer uses too. Its Lua
// scripts are files of that package's directory, exported as strings
// (guard.ReadScript …), for services in other languages; the README
// describes the keys, the ordering and the costs.
//
// A Cache keeps the protocol's marker (guard.ProtocolMarkerKey, value
// MarkerName) alive while it reads and fills, one SET at most every
// guard.ProtocolMarkerRefresh: a worker with the default GENERATIONS=auto
// sees it and turns generations on within seconds.
package cache
