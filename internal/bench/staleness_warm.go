package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// warmRules are stalenessRules with a warm target on the item events: the
// worker warms cache:item:<id> from the benchmark's source endpoint once
// the event's keys are gone.
func warmRules(sourceURL string) string {
	warm := fmt.Sprintf(`
    warm: &warm
      - key: "cache:item:{item_id}"
        from: "%s/items/{item_id}"
        ttl: 10m`, sourceURL)
	rules := strings.Replace(stalenessRules, "invalidate: &item [\"cache:item:{item_id}\", \"cache:item:{item_id}:*\"]",
		"invalidate: &item [\"cache:item:{item_id}\", \"cache:item:{item_id}:*\"]"+warm, 1)
	return strings.Replace(rules, "on: events.item.updated\n    invalidate: *item", "on: events.item.updated\n    invalidate: *item\n    warm: *warm", 1)
}

// warmSource is the warm target: GET /items/<id> answers the item's
// version as JSON, read from the source when the request comes, so that a
// warm made after a commit stores the committed version.
type warmSource struct {
	url    string
	srv    *http.Server
	done   chan struct{}
	served atomic.Int64 // requests answered with a version
}

func startWarmSource(pool *pgxpool.Pool) (*warmSource, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &warmSource{url: "http://" + ln.Addr().String(), done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		var v int64
		err = pool.QueryRow(r.Context(), "SELECT version FROM items WHERE id = $1", id).Scan(&v)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			http.NotFound(w, r)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(strconv.AppendInt(nil, v, 10))
			s.served.Add(1)
		}
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { defer close(s.done); _ = s.srv.Serve(ln) }()
	return s, nil
}

// stop shuts the server down, waiting at most 5 s for requests in flight,
// and logs how many warm requests it answered.
func (s *warmSource) stop() {
	defer func() { log.Printf("staleness: the warm source answered %d requests", s.served.Load()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}
