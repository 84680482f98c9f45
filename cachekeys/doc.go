// Package cachekeys turns domain events into Redis cache keys to delete.
//
// It holds the key grammar, the rules file (which event subjects invalidate
// which key templates), NATS subject matching, Redis glob matching and the
// rendering of a [Plan] from an event's data. Everything here is pure: the
// only I/O is [Load] reading the rules file.
//
// Safety is the main concern. A template is checked when the rules file is
// loaded so that no rendered key can reach outside its own namespace: every
// template starts with a literal prefix and the separator, and a key segment
// holding a placeholder never holds a glob metacharacter. Event values are
// checked when rendered: a value never carries the separator, whitespace or a
// glob metacharacter, so a value can narrow a pattern but never widen it.
package cachekeys
