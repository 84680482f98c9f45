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
//
// A rule may also list warm targets ([WarmTarget]) and the file a schedule
// ([Schedule]): URLs to GET after invalidation or periodically, rendered
// into [WarmRequest] values for a warmer. Their URL templates
// ([URLTemplate]) fix scheme, host and port at load time and percent-encode
// every value, so an event can choose which resource is fetched but never
// where it is fetched from. Credentials never appear in the file:
// headers_from_env names the environment variables that hold them, and the
// caller reads them. [SegmentPrefixes] and [PatternScope] let a warmer tell
// which invalidations may have covered a key it is about to store.
package cachekeys
