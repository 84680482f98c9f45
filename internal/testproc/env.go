package testproc

// WorkerEnv is the environment of `invalidator run` (or `dev`) in a test:
// Redis at redisURL, NATS at natsURL, the rules file rules, no HTTP server,
// JSON logs; then extra ("NAME=value"), which overrides any of these
// (os/exec keeps the last value of a name). Nothing else is inherited.
func WorkerEnv(redisURL, natsURL, rules string, extra ...string) []string {
	return append([]string{
		"REDIS_URL=" + redisURL,
		"NATS_URL=" + natsURL,
		"INVALIDATOR_RULES=" + rules,
		"HTTP_ADDR=",
		"LOG_FORMAT=json",
	}, extra...)
}
