package cdc

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseSnapshot(t *testing.T) {
	tests := []struct {
		name    string
		given   string
		want    snapshot
		wantErr bool
	}{
		{name: "no transaction in progress", given: "750:750:", want: snapshot{xmin: 750, xmax: 750}},
		{name: "two in progress", given: "748:752:748,750", want: snapshot{xmin: 748, xmax: 752, xip: []uint64{748, 750}}},
		{name: "past the first epoch", given: "4294967400:4294967410:4294967405",
			want: snapshot{xmin: 4294967400, xmax: 4294967410, xip: []uint64{4294967405}}},
		{name: "two fields", given: "1:2", wantErr: true},
		{name: "not a number", given: "1:x:", wantErr: true},
		{name: "bad xip", given: "1:5:2,", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSnapshot(tt.given)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseSnapshot(%q) error = %v, want error %v", tt.given, err, tt.wantErr)
			}
			if !tt.wantErr && (got.xmin != tt.want.xmin || got.xmax != tt.want.xmax || !slices.Equal(got.xip, tt.want.xip)) {
				t.Errorf("parseSnapshot(%q) = %+v, want %+v", tt.given, got, tt.want)
			}
		})
	}
}

func TestSnapshotVisible(t *testing.T) {
	const epoch = uint64(1) << 32
	tests := []struct {
		name  string
		snap  snapshot
		given uint32
		want  bool
	}{
		{name: "below xmin", snap: snapshot{xmin: 100, xmax: 110}, given: 99, want: true},
		{name: "between, not in progress", snap: snapshot{xmin: 100, xmax: 110, xip: []uint64{100, 105}}, given: 104, want: true},
		{name: "in progress", snap: snapshot{xmin: 100, xmax: 110, xip: []uint64{100, 105}}, given: 105, want: false},
		{name: "xmax", snap: snapshot{xmin: 100, xmax: 110}, given: 110, want: false},
		{name: "after xmax", snap: snapshot{xmin: 100, xmax: 110}, given: 111, want: false},
		{name: "no snapshot yet", snap: snapshot{}, given: 3, want: false},
		{name: "later epoch, in progress", snap: snapshot{xmin: 2*epoch + 5, xmax: 2*epoch + 9, xip: []uint64{2*epoch + 7}},
			given: 7, want: false},
		{name: "later epoch, finished", snap: snapshot{xmin: 2*epoch + 5, xmax: 2*epoch + 9, xip: []uint64{2*epoch + 7}},
			given: 8, want: true},
		{name: "previous epoch, in progress across the wrap", snap: snapshot{xmin: epoch - 2, xmax: epoch + 3, xip: []uint64{epoch - 2}},
			given: ^uint32(0) - 1, want: false},
		{name: "previous epoch, finished across the wrap", snap: snapshot{xmin: epoch - 2, xmax: epoch + 3, xip: []uint64{epoch - 2}},
			given: ^uint32(0), want: true},
		{name: "new epoch, in progress across the wrap", snap: snapshot{xmin: epoch - 2, xmax: epoch + 3, xip: []uint64{epoch + 1}},
			given: 1, want: false},
		{name: "new epoch, at xmax", snap: snapshot{xmin: epoch - 2, xmax: epoch + 3}, given: 3, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.snap.visible(tt.given); got != tt.want {
				t.Errorf("%+v visible(%d) = %v, want %v", tt.snap, tt.given, got, tt.want)
			}
		})
	}
}

// The gate releases in commit order, takes no snapshot for what the last
// one already shows visible, takes at most one per look, and backs off
// while the oldest is not visible.
func TestGateOrderAndBackoff(t *testing.T) {
	ctx := context.Background()
	snaps := []string{"100:110:105", "100:110:105", "107:112:107,111"}
	queries := 0
	g := &gate{current: func(context.Context) (string, error) {
		queries++
		return snaps[min(queries, len(snaps))-1], nil
	}}
	g.push(&pendingTx{xid: 104, check: true, changes: make([]change, 2)})
	g.push(&pendingTx{xid: 105, check: true, changes: make([]change, 1)})
	g.push(&pendingTx{xid: 106, check: true})
	g.push(&pendingTx{check: false}) // no events: nothing to see
	now := time.Now()
	got, err := g.ready(ctx, now)
	if err != nil || xids(got) != "104" || queries != 1 {
		t.Fatalf("ready = %s, %v after %d queries; want 104 alone, after 1", xids(got), err, queries)
	}
	if len(g.pending) != 3 || g.events != 1 || !g.waitUntil().Equal(now.Add(visibilityPoll)) {
		t.Fatalf("held %d (%d events), next %v; want 3 (1 event) behind 105, next after one poll", len(g.pending), g.events, g.waitUntil())
	}
	if got, _ := g.ready(ctx, now.Add(visibilityPoll/2)); len(got) != 0 || queries != 1 {
		t.Fatalf("before the next poll: %s released, %d queries; want nothing and no query", xids(got), queries)
	}
	if got, _ := g.ready(ctx, now.Add(visibilityPoll)); len(got) != 0 || queries != 2 || g.delay != 2*visibilityPoll {
		t.Fatalf("second look: %s released, %d queries, delay %v; want nothing, 2 queries, a doubled delay", xids(got), queries, g.delay)
	}
	for range 10 {
		g.miss(g.pending[0], now)
	}
	if g.delay != visibilityPollMax {
		t.Errorf("delay after many misses %v, want the cap %v", g.delay, visibilityPollMax)
	}
	got, err = g.ready(ctx, now.Add(time.Second))
	if err != nil || xids(got) != "105,106,0" || queries != 3 {
		t.Fatalf("ready = %s, %v after %d queries; want 105,106,0 after 3", xids(got), err, queries)
	}
	if !g.empty() || !g.waitUntil().IsZero() || g.delay != 0 || g.events != 0 {
		t.Errorf("after the release: empty %v, next %v, delay %v, events %d; want empty, no wait", g.empty(), g.waitUntil(), g.delay, g.events)
	}
	// The last snapshot answers for 108 without a query; 111 is in
	// progress in it, so one query is made, and 111 waits.
	g.push(&pendingTx{xid: 108, check: true})
	g.push(&pendingTx{xid: 111, check: true})
	if got, _ := g.ready(ctx, now.Add(time.Second)); xids(got) != "108" || queries != 4 || g.empty() {
		t.Errorf("ready = %s after %d queries; want 108 alone after 4, 111 held", xids(got), queries)
	}
}

func xids(ps []*pendingTx) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.FormatUint(uint64(p.xid), 10)
	}
	return strings.Join(s, ",")
}
