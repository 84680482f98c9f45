// Package consistency is the worker's built-in consistency checker: it
// measures, from the outside and in production, that readers stop seeing
// a value once its invalidation is done (Meta's Polaris, "Cache made
// consistent", 2022, does the same for TAO).
//
// The worker samples a fraction of the events it applies (Config.Sample),
// has the engine capture the generation tokens each sampled invalidation
// displaced (engine.Job.Capture), and hands the applied event to the
// Checker once it is acked. At each of Config.Delays after the event was
// applied, the Checker reads again, on the primary and through the read
// protocol of package guard (GET and the guard's generations, one
// pipeline per batch, rate-limited), every exact key the event removed and
// a sample of up to engine.MaxCapturedKeys of the keys each pattern's sweep
// removed, and classifies each read without a clock (tokens are unique and
// never reused, so "written before the invalidation" is a token
// comparison):
//
//	| the key                                              | result     |
//	|------------------------------------------------------|------------|
//	| absent                                               | consistent |
//	| stamped, stamp no longer the current generations     | masked     |
//	| stamped, current, no displaced token in the stamp    | refilled   |
//	| stamped, current, a displaced token in the stamp     | stale      |
//	| unstamped (written outside the protocol)             | unknown    |
//
// Every key is read at every delay, so a key stale at 1s is checked again
// at 10s, and counts stale at a timescale only if it is still stale when
// that timescale has passed (Polaris's rule). Results go to the Observer
// (Prometheus metrics), into minute buckets kept for a day (Report: the
// nines per timescale over the last hour and day), and each stale finding
// is logged once, as a ⚠️ line, and kept among the last MaxRecent.
package consistency
