package console

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/invalidator/invalidator/consistency"
	"net/http"
	"sync"
	"time"

	"github.com/invalidator/invalidator/engine/sweep"
	"github.com/invalidator/invalidator/internal/ops"
	"github.com/invalidator/invalidator/worker"
)

// window is how many one-second points the charts keep: 15 minutes.
const window = 15 * 60

// keepAlive is how often an idle stream sends a comment, so that proxies
// keep it open.
const keepAlive = 15 * time.Second

// Snapshot is what a page's stream (or its polling) receives each second.
type Snapshot struct {
	At       time.Time     `json:"at"`
	Health   *ops.Health   `json:"health,omitempty"`
	Worker   *workerView   `json:"worker,omitempty"`
	Consumer *consumerView `json:"consumer,omitempty"`
	// DeadLetters is the number of letters in the dead-letter stream.
	DeadLetters *uint64        `json:"dead_letters,omitempty"`
	Sweeps      []sweep.Status `json:"sweeps"`
	ScanBudget  int            `json:"scan_budget"`
	Warming     *Warming       `json:"warming,omitempty"`
	// Consistency is the checker's nines per timescale over the last
	// hour, nil when the checker is off.
	Consistency []ninesView `json:"consistency,omitempty"`
	Purge       purgeStatus `json:"purge"`
	// Point is the newest chart point: unix seconds, events/s, keys
	// removed/s, dead letters in the last minute.
	Point [4]float64 `json:"point"`
	// Series holds the last 15 minutes of points as columns (time, events,
	// keys, dead letters), in the first message of a stream and in every
	// poll.
	Series *[4][]float64 `json:"series,omitempty"`
}

type workerView struct {
	Applied      int64  `json:"applied"`
	DeadLettered int64  `json:"dead_lettered"`
	Retried      int64  `json:"retried"`
	KeysRemoved  int64  `json:"keys_removed"`
	Busy         int64  `json:"busy"`
	Concurrency  int    `json:"concurrency"`
	Paused       string `json:"paused,omitempty"`
}

type consumerView struct {
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
}

// live holds the newest snapshot and the chart points; a change closes
// the channel streams wait on.
type live struct {
	mu      sync.Mutex
	snap    Snapshot
	points  [][4]float64
	dls     []int64 // dead letters per point, for the rolling minute
	prev    *worker.Stats
	changed chan struct{}
}

func newLive() *live { return &live{changed: make(chan struct{})} }

// get returns the snapshot (with the series when full) and the channel
// closed at the next change.
func (l *live) get(full bool) (Snapshot, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.snap
	if full {
		var cols [4][]float64
		for i := range cols {
			cols[i] = make([]float64, len(l.points))
		}
		for j, p := range l.points {
			for i := range cols {
				cols[i][j] = p[i]
			}
		}
		s.Series = &cols
	}
	return s, l.changed
}

// add records a sample: the snapshot, and a chart point from the
// difference of the worker's totals since the last one.
func (l *live) add(s Snapshot, st *worker.Stats, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st != nil {
		var events, keys, dl int64
		if l.prev != nil {
			events = settled(*st) - settled(*l.prev)
			keys = st.KeysRemoved - l.prev.KeysRemoved
			dl = st.DeadLettered - l.prev.DeadLettered
		}
		l.prev = st
		l.dls = append(l.dls, dl)
		if len(l.dls) > 60 {
			l.dls = l.dls[len(l.dls)-60:]
		}
		var perMin int64
		for _, n := range l.dls {
			perMin += n
		}
		p := [4]float64{float64(now.Unix()), float64(events), float64(keys), float64(perMin)}
		l.points = append(l.points, p)
		if len(l.points) > window {
			l.points = l.points[len(l.points)-window:]
		}
		s.Point = p
	}
	l.snap = s
	close(l.changed)
	l.changed = make(chan struct{})
}

// settled counts the deliveries the worker has settled.
func settled(s worker.Stats) int64 { return s.Applied + s.DeadLettered + s.Retried + s.Unrouted }

// sample builds a snapshot from every source.
func (c *Console) sample(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s := Snapshot{At: time.Now().UTC(), ScanBudget: c.cfg.ScanBudget, Sweeps: []sweep.Status{}, Purge: c.purge.status()}
	if c.d.Health != nil {
		h := c.d.Health(ctx)
		s.Health = &h
	}
	var st *worker.Stats
	if c.d.Stats != nil {
		w := c.d.Stats()
		st = &w
		s.Worker = &workerView{Applied: w.Applied, DeadLettered: w.DeadLettered, Retried: w.Retried, KeysRemoved: w.KeysRemoved,
			Busy: w.Busy, Concurrency: w.Concurrency, Paused: w.Paused}
	}
	if c.d.Consumer != nil {
		if cons := c.d.Consumer(); cons != nil {
			if info, err := cons.Info(ctx); err == nil {
				s.Consumer = &consumerView{Pending: info.NumPending, AckPending: info.NumAckPending, Redelivered: info.NumRedelivered}
			}
		}
	}
	if c.d.Letters != nil {
		if n, err := c.d.Letters.Count(ctx); err == nil {
			s.DeadLetters = &n
		}
	}
	if c.d.Engine != nil {
		s.Sweeps = append(s.Sweeps, c.d.Engine.Sweeps()...)
	}
	if c.d.Warming != nil {
		w := c.d.Warming()
		s.Warming = &w
	}
	if c.d.Consistency != nil {
		s.Consistency = nines(c.d.Consistency())
	}
	c.live.add(s, st, time.Now())
}

// events is the page's Server-Sent Events stream: a "snapshot" event with
// the whole series at once, then one with the newest point each second,
// until the client goes or the console stops.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // the server's WriteTimeout would cut the stream
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	snap, changed := c.live.get(true)
	if !c.send(w, rc, snap) {
		return
	}
	ping := time.NewTicker(keepAlive)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.stopped:
			return
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-changed:
			snap, changed = c.live.get(false)
			if !c.send(w, rc, snap) {
				return
			}
		}
	}
}

func (c *Console) send(w http.ResponseWriter, rc *http.ResponseController, s Snapshot) bool {
	b, err := json.Marshal(s)
	if err != nil {
		return false
	}
	if _, err := fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", b); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// poll is the stream's fallback: the snapshot with the whole series, as JSON.
func (c *Console) poll(w http.ResponseWriter, _ *http.Request) {
	snap, _ := c.live.get(true)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(snap)
}

// ninesView is one timescale of the consistency checker over the last
// hour, as the overview shows it.
type ninesView struct {
	Timescale string `json:"timescale"`
	Text      string `json:"text"`
	Stale     int64  `json:"stale"`
}

// nines words the checker's report for the overview: the nines of each
// timescale over the last hour, or the bound its checks support when none
// was stale.
func nines(r consistency.Report) []ninesView {
	out := make([]ninesView, 0, len(r.Timescales))
	for _, ts := range r.Timescales {
		w := ts.LastHour
		v := ninesView{Timescale: ts.Timescale, Stale: w.Stale}
		switch {
		case w.Nines != nil:
			v.Text = fmt.Sprintf("%.1f nines (%d stale of %d)", *w.Nines, w.Stale, w.Checked)
		case w.NinesAtLeast != nil:
			v.Text = fmt.Sprintf("≥ %.1f nines (%d checked, 0 stale)", *w.NinesAtLeast, w.Checked)
		default:
			v.Text = "no checks yet"
		}
		out = append(out, v)
	}
	return out
}
