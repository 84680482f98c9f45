package engine

import (
	"fmt"

	"github.com/invalidator/invalidator/cachekeys"
)

// ParseJob turns an operator's keys and patterns into a job, each checked
// like a rule template without placeholders: it must start with a literal
// prefix and ':' before any glob ("user:*" is fine, "*" is refused). This
// is the check of `invalidator purge` and of the console's purge.
func ParseJob(args []string) (Job, error) {
	var job Job
	for _, a := range args {
		t, err := cachekeys.ParseTemplate(a)
		if err != nil {
			return job, fmt.Errorf("purge %q: %w", a, err)
		}
		if len(t.Fields()) > 0 {
			return job, fmt.Errorf("purge %q: placeholders like {%s} have no value here", a, t.Fields()[0])
		}
		if t.IsPattern() {
			job.Patterns = append(job.Patterns, a)
		} else {
			job.Exact = append(job.Exact, a)
		}
	}
	return job, nil
}
