package warm_test

import (
	"errors"
	"testing"
	"time"

	"github.com/invalidator/invalidator/guard"
	"github.com/invalidator/invalidator/warm"
	"github.com/redis/go-redis/v9"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		given   warm.Config
		wantErr bool
	}{
		{name: "zero value takes the defaults", given: warm.Config{}},
		{name: "all set", given: warm.Config{Queue: 10, Workers: 2, PerHost: 1, Timeout: time.Second, MaxBody: 1024, BreakerFailures: 3, BreakerCooldown: time.Minute}},
		{name: "negative queue (used to panic in makechan)", given: warm.Config{Queue: -1}, wantErr: true},
		{name: "negative workers", given: warm.Config{Workers: -2}, wantErr: true},
		{name: "negative per host", given: warm.Config{PerHost: -1}, wantErr: true},
		{name: "negative timeout", given: warm.Config{Timeout: -time.Second}, wantErr: true},
		{name: "negative body limit", given: warm.Config{MaxBody: -1}, wantErr: true},
		{name: "negative breaker failures", given: warm.Config{BreakerFailures: -1}, wantErr: true},
		{name: "negative cooldown", given: warm.Config{BreakerCooldown: -time.Second}, wantErr: true},
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled: New does not touch Redis
	t.Cleanup(func() { _ = rdb.Close() })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.given.Validate()
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, warm.ErrInvalidConfig)) {
				t.Fatalf("Validate() = %v, want error %v wrapping ErrInvalidConfig", err, tt.wantErr)
			}
			w, err := warm.New(rdb, tt.given, nil)
			if tt.wantErr != (err != nil) || (err == nil) == (w == nil) {
				t.Errorf("New() = %v, %v", w, err)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	c := warm.Config{}.WithDefaults()
	if c.Queue != warm.DefaultQueue || c.Workers != warm.DefaultWorkers || c.PerHost != warm.DefaultPerHost ||
		c.Timeout != warm.DefaultTimeout || c.MaxBody != warm.DefaultMaxBody || c.Client == nil {
		t.Errorf("WithDefaults() = %+v", c)
	}
}

// A client whose sharding the worker does not invalidate is refused.
func TestNewRefusesARing(t *testing.T) {
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	t.Cleanup(func() { _ = ring.Close() })
	if w, err := warm.New(ring, warm.Config{}, nil); !errors.Is(err, guard.ErrUnsupportedClient) || w != nil {
		t.Fatalf("New(ring) = %v, %v; want ErrUnsupportedClient", w, err)
	}
}

// Run refuses a second call, as worker.Run does, and Drain ends the first
// once the queue is empty.
func TestRunTwiceIsRefused(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	w, err := warm.New(rdb, warm.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- w.Run(t.Context()) }()
	second := make(chan error, 1)
	go func() { second <- w.Run(t.Context()) }()
	select {
	case err := <-second:
		if !errors.Is(err, warm.ErrAlreadyRunning) {
			t.Fatalf("one Run returned %v first, want ErrAlreadyRunning", err)
		}
	case err := <-first:
		if !errors.Is(err, warm.ErrAlreadyRunning) {
			t.Fatalf("one Run returned %v first, want ErrAlreadyRunning", err)
		}
		first = second
	case <-time.After(10 * time.Second):
		t.Fatal("neither Run returned ErrAlreadyRunning")
	}
	w.Drain()
	select {
	case err := <-first:
		if err != nil {
			t.Fatalf("the running Run returned %v after Drain", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Drain with an empty queue")
	}
}
