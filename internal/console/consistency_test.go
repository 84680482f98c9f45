package console_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/consistency"
	"github.com/invalidator/invalidator/internal/console"
)

// The overview shows the consistency checker's nines per timescale over
// the last hour, a stale timescale marked; "off" without a checker.
func TestOverviewShowsConsistency(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	report := consistency.Report{Sample: 0.01, Timescales: []consistency.TimescaleReport{
		{Timescale: "1s", LastHour: consistency.Window{Checked: 1000, Stale: 1, Nines: f(3)}},
		{Timescale: "10s", LastHour: consistency.Window{Checked: 3000, NinesAtLeast: f(3)}},
		{Timescale: "60s"},
	}}
	tests := []struct {
		name string
		mod  func(*console.Deps)
		want []string
	}{
		{name: "on", mod: func(d *console.Deps) { d.Consistency = func() consistency.Report { return report } },
			want: []string{`id="consistency"`, `<li class="bad">1s: 3.0 nines (1 stale of 1000)</li>`, `<li>10s: ≥ 3.0 nines (3000 checked, 0 stale)</li>`, `<li>60s: no checks yet</li>`}},
		{name: "off", want: []string{`id="consistency-off">off<`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRigWith(t, console.Config{Token: token}, tt.mod)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.c.Run(ctx) }()
			defer func() { cancel(); <-done }()
			var body string
			for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				w := r.do(t, route{"GET", "", nil, ""}, withToken)
				if body = w.Body.String(); w.Code == 200 && strings.Contains(body, "Consistency, last hour") && strings.Contains(body, tt.want[0]) {
					break
				}
			}
			for _, want := range tt.want {
				if !strings.Contains(body, want) {
					t.Errorf("the overview lacks %q", want)
				}
			}
			if tt.mod != nil {
				poll := r.do(t, route{"GET", "poll", nil, ""}, withToken).Body.String()
				if !strings.Contains(poll, `"consistency":[{"timescale":"1s","text":"3.0 nines (1 stale of 1000)","stale":1}`) {
					t.Errorf("poll lacks the consistency: %s", poll)
				}
			}
		})
	}
}
