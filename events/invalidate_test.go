package events_test

import (
	"encoding/json"
	"testing"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/events"
)

func TestInvalidate(t *testing.T) {
	t.Parallel()
	p, stream := setup(t)
	ctx := t.Context()
	if err := p.Invalidate(ctx, []string{"user:123"}, []string{"user:123:*"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Invalidate(ctx, nil, []string{"cache:system_stats:*"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Invalidate(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := msgCount(t, stream); n != 2 {
		t.Fatalf("stream holds %d messages, want 2 (nothing sent for empty lists)", n)
	}
	for seq, want := range map[uint64]string{
		1: `{"keys":["user:123"],"patterns":["user:123:*"]}`,
		2: `{"keys":[],"patterns":["cache:system_stats:*"]}`,
	} {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := events.Decode(msg.Subject, msg.Header.Get(events.HeaderMsgID), msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(ev.Data)
		if msg.Subject != cachekeys.InvalidateSubject || ev.Type != cachekeys.InvalidateSubject || string(got) != want {
			t.Errorf("message %d: subject %q, type %q, data %s; want %q, %s", seq, msg.Subject, ev.Type, got, cachekeys.InvalidateSubject, want)
		}
	}
}
