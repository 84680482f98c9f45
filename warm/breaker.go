package warm

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// hostLimits bounds the requests in flight per host.
type hostLimits struct {
	per int
	mu  sync.Mutex
	m   map[string]chan struct{}
}

func (h *hostLimits) acquire(ctx context.Context, host string) (func(), error) {
	h.mu.Lock()
	sem, ok := h.m[host]
	if !ok {
		sem = make(chan struct{}, h.per)
		h.m[host] = sem
	}
	h.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// breakers holds one circuit breaker per host.
type breakers struct {
	failures int
	cooldown time.Duration
	mu       sync.Mutex
	m        map[string]*breaker
}

func (bs *breakers) get(host string) *breaker {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b, ok := bs.m[host]
	if !ok {
		b = &breaker{threshold: bs.failures, cooldown: bs.cooldown}
		bs.m[host] = b
	}
	return b
}

// breaker opens after threshold consecutive failures; after cooldown it
// lets one trial request through (half-open), which closes or reopens it.
type breaker struct {
	threshold int
	cooldown  time.Duration
	mu        sync.Mutex
	fails     int
	openUntil time.Time
	trial     bool
}

func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fails < b.threshold {
		return true
	}
	if now.Before(b.openUntil) || b.trial {
		return false
	}
	b.trial = true
	return true
}

func (b *breaker) record(ok bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
	if ok {
		b.fails = 0
		return
	}
	b.fails++
	if b.fails >= b.threshold {
		b.openUntil = now.Add(b.cooldown)
	}
}

// Open reports whether host's breaker is open now.
func (w *Warmer) Open(host string) bool {
	b := w.breakers.get(host)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fails >= b.threshold && time.Now().Before(b.openUntil)
}

// OpenHosts lists the hosts whose breaker is open now, sorted.
func (w *Warmer) OpenHosts() []string {
	w.breakers.mu.Lock()
	hosts := slices.Sorted(maps.Keys(w.breakers.m))
	w.breakers.mu.Unlock()
	open := hosts[:0]
	for _, h := range hosts {
		if w.Open(h) {
			open = append(open, h)
		}
	}
	return open
}
