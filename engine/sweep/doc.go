// Package sweep runs one shared SCAN walk per Redis node that serves every
// pending pattern: a Walker matches each page on the client against the
// compiled set of active patterns (duplicates matched once, a pattern
// covered by a wider "prefix*" pattern not matched separately), sends MATCH
// when one pattern or one shared literal prefix is active, and unlinks the
// matched keys in the same pipelined round trip as the next SCAN.
//
// A pattern joins the walk at the next cursor to be sent and is complete
// once the walk has covered the whole keyspace from there: the rest of the
// pass, then the next pass up to its join point, compared in SCAN's
// reverse-binary order (tracker.go explains why no key that exists
// throughout can be missed, while Redis grows or shrinks its table). COUNT
// adapts to the measured round-trip time, and Config.Budget paces the keys
// examined per second. Generation keys and exact keys are the engine's
// business, not this package's.
package sweep
