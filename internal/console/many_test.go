package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/internal/console"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// With 100,000 letters the list shows the right counts and page, read in
// one pass over the letters' headers (deadletter.Store.Page keeps one page
// in memory).
func TestDeadLettersPageWith100k(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100,000 letters")
	}
	nc, js := testserver.JetStream(t, testserver.NATS(t))
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS_DLQ", Subjects: []string{"dlq.>"}}); err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	for i := range n {
		kind, subject := deadletter.Failed, "events.user.updated"
		if i%4 == 0 {
			kind, subject = deadletter.Rejected, "events.course.updated"
		}
		ev := deadletter.Event{Subject: subject, Body: fmt.Appendf(nil, `{"id":"%d"}`, i), Header: nats.Header{},
			StreamSeq: uint64(i + 1), Deliveries: 1, Stream: "EVENTS"}
		// core NATS publishes: the stream stores them without an ack each
		if err := nc.PublishMsg(deadletter.Encode("dlq", ev, kind, fmt.Errorf("reason %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, err := deadletter.NewStore(js, "EVENTS_DLQ", "dlq").Count(ctx)
		if err != nil || n == 100_000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream holds %d letters, want 100,000", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := console.New(console.Config{Token: token}, console.Deps{Letters: deadletter.NewStore(js, "EVENTS_DLQ", "dlq")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		query                 string
		matched, from, to     string
		all, rejected, failed string
		firstSeq, firstReason string
	}{
		{"", "100000", "1", "50", "100000", "25000", "75000", "1", "reason 0"},
		{"?kind=rejected&offset=24990", "25000", "24991", "25000", "100000", "25000", "75000", "99961", "reason 99960"},
		{"?subject=events.user.updated&offset=50", "75000", "51", "100", "75000", "0", "75000", "68", "reason 67"},
		{"?q=reason+9999", "11", "1", "11", "11", "2", "9", "10000", "reason 9999"},
	}
	row := regexp.MustCompile(`<tr id="letter-(\d+)"[\s\S]*?<td class="reason">([^<]*)</td>`)
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			req := httptest.NewRequest("GET", "http://127.0.0.1/ui/dlq"+tt.query, nil)
			req.SetBasicAuth("", token)
			w := httptest.NewRecorder()
			c.Handler().ServeHTTP(w, req)
			body := w.Body.String()
			if w.Code != http.StatusOK {
				t.Fatalf("%d: %s", w.Code, body)
			}
			want := fmt.Sprintf(`<strong id="dlq-matched">%s</strong>`, tt.matched)
			if !regexp.MustCompile(regexp.QuoteMeta(want) + `[^;]*; showing ` + tt.from + `–` + tt.to + ` `).MatchString(body) {
				t.Errorf("want %s letters, showing %s–%s", tt.matched, tt.from, tt.to)
			}
			for label, count := range map[string]string{"All": tt.all, "rejected": tt.rejected, "failed": tt.failed} {
				if !regexp.MustCompile(`>` + label + ` <span class="count">` + count + `</span>`).MatchString(body) {
					t.Errorf("tab %s: want %s", label, count)
				}
			}
			m := row.FindStringSubmatch(body)
			if m == nil || m[1] != tt.firstSeq || m[2] != tt.firstReason {
				t.Errorf("first row %q, want letter %s with %q", m, tt.firstSeq, tt.firstReason)
			}
		})
	}
}
