package cache

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Cache's counters; without a Registerer they count
// unregistered.
type metrics struct {
	hits, misses, fills, refused prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, log *slog.Logger) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "invalidator", Subsystem: "cache", Name: name, Help: help})
	}
	m := &metrics{
		hits:    counter("hits_total", "Reads through the cache package that found a current value."),
		misses:  counter("misses_total", "Reads through the cache package that found no value, or one older than an invalidation."),
		fills:   counter("fills_total", "Values a Fetch stored through the generation guard."),
		refused: counter("stale_fills_refused_total", "Fetch fills refused because the key was invalidated while loading."),
	}
	if reg == nil {
		return m
	}
	for _, p := range []*prometheus.Counter{&m.hits, &m.misses, &m.fills, &m.refused} {
		err := reg.Register(*p)
		var are prometheus.AlreadyRegisteredError
		switch {
		case errors.As(err, &are):
			*p = are.ExistingCollector.(prometheus.Counter) // a second Cache on one registry shares the counters
		case err != nil:
			log.Warn("⚠️ cache: metric not registered", slog.Any("err", err))
		}
	}
	return m
}
