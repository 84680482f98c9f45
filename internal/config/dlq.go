package config

import (
	"flag"

	"github.com/invalidator/invalidator/worker"
)

// DLQ is the configuration of `invalidator dlq`: NATS, the streams, and
// the rules file that replay and show check letters against.
type DLQ struct {
	NATSURL          string
	NATSCreds        string
	NATSTLS          NATSTLS
	Stream           string
	DeadLetterStream string
	// DeadLetterPrefix is the subject prefix of letters ("dlq").
	DeadLetterPrefix string
	// RulesPath is INVALIDATOR_RULES; empty when unset (show then skips its
	// explanation, and replay refuses without --force).
	RulesPath string
}

// DLQFlags registers the NATS settings, the stream names and
// INVALIDATOR_RULES on fs, like [Flags], and returns the function that
// builds the validated DLQ configuration.
func DLQFlags(fs *flag.FlagSet, getenv func(string) string) func() (*DLQ, error) {
	r := register(fs, getenv, append([]string{"NATS_URL", "NATS_CREDS", "NATS_STREAM", "NATS_DLQ_STREAM", "INVALIDATOR_RULES"}, natsTLSEnvs...), nil)
	return func() (*DLQ, error) {
		d := &DLQ{
			NATSURL: r.str("NATS_URL"), NATSCreds: r.str("NATS_CREDS"),
			Stream: r.str("NATS_STREAM"), DeadLetterStream: r.str("NATS_DLQ_STREAM"),
			DeadLetterPrefix: worker.DefaultDeadLetterPrefix, RulesPath: r.str("INVALIDATOR_RULES"),
		}
		r.natsURL(d.NATSURL)
		d.NATSTLS = r.natsTLS()
		return d, r.err
	}
}
