package main

import (
	"context"
	"fmt"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/engine"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/redis/go-redis/v9"
)

const purgeSummary = `Removes keys now, through the worker's SCAN/UNLINK engine. Each argument is an
exact key or a glob pattern, checked like a rule template: it must start with
a literal prefix and ':' before any glob ("user:*" is fine, "*" is refused).
REDIS_URL (or --redis-url) says where; the pool and timeout settings and
SCAN_COUNT are those of run. --dry-run lists what would go.`

// maxListed bounds the keys --dry-run prints.
const maxListed = 1000

func purgeCmd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "purge", "PATTERN... [--dry-run]", purgeSummary)
	build := config.PurgeFlags(fs, e.getenv)
	dry := fs.Bool("dry-run", false, "print what would be removed, remove nothing")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	gens := fs.Bool("generations", false, "advance the generation guard of each key and pattern first, as the worker does when cache warming is on, so a warm fetch in flight cannot write an older value back")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("purge needs at least one PATTERN, see --help")
	}
	job, err := purgeJob(pos)
	if err != nil {
		return err
	}
	cfg, err := build()
	if err != nil {
		return usageError{err}
	}
	rdb := redis.NewClient(cfg.Redis)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	eng, err := engine.NewRedis(rdb, engine.Config{ScanCount: cfg.ScanCount, Generations: *gens})
	if err != nil {
		return usageError{err}
	}
	if *dry {
		return preview(ctx, e, eng, job)
	}
	res, err := eng.Invalidate(ctx, job)
	if err != nil {
		return fmt.Errorf("purge: %w (removed %d keys before the error)", err, res.Removed)
	}
	fmt.Fprintf(e.stdout, "scanned %d keys, removed %d in %s\n", res.Scanned, res.Removed, res.Duration.Round(time.Millisecond))
	return nil
}

func preview(ctx context.Context, e env, eng *engine.Redis, job engine.Job) error {
	seen := map[string]bool{}
	res, err := eng.Preview(ctx, job, func(k string) {
		if !seen[k] && len(seen) < maxListed {
			fmt.Fprintln(e.stdout, k)
		}
		seen[k] = true
	})
	if err != nil {
		return fmt.Errorf("purge --dry-run: %w", err)
	}
	if len(seen) > maxListed {
		fmt.Fprintf(e.stdout, "... and %d more\n", len(seen)-maxListed)
	}
	fmt.Fprintf(e.stdout, "dry run: scanned %d keys, would remove %d\n", res.Scanned, len(seen))
	return nil
}

// purgeJob checks each argument like a template without placeholders.
func purgeJob(args []string) (engine.Job, error) {
	var job engine.Job
	for _, a := range args {
		t, err := cachekeys.ParseTemplate(a)
		if err != nil {
			return job, usagef("purge %q: %w", a, err)
		}
		if len(t.Fields()) > 0 {
			return job, usagef("purge %q: placeholders like {%s} have no value here", a, t.Fields()[0])
		}
		if t.IsPattern() {
			job.Patterns = append(job.Patterns, a)
		} else {
			job.Exact = append(job.Exact, a)
		}
	}
	return job, nil
}
