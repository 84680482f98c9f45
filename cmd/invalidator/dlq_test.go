package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/deadletter"
	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/invalidator/invalidator/worker"
	"github.com/nats-io/nats.go"
)

// TestDLQ is the operator's loop: events are dead-lettered under strict
// rules; `dlq list` and `show` explain them; after the rules are fixed,
// `replay` sends back what the new rules accept (a new Nats-Msg-Id, so the
// stream keeps it inside the original's duplicate window), keeps what they
// still reject, and a worker on the new rules applies it; `purge` deletes
// the rest, asking first.
func TestDLQ(t *testing.T) {
	ns := testserver.NATS(t)
	_, js := testserver.JetStream(t, ns)
	r := testserver.Redis(t)
	rdb := testserver.RedisClient(t, r)
	ctx := context.Background()
	dir := t.TempDir()
	strict := filepath.Join(dir, "strict.yaml")
	if err := os.WriteFile(strict, []byte("rules:\n  - on: events.course.*\n    invalidate: [\"cache:course_analytics:{course_id}\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fixed, _ := filepath.Abs("../../testdata/rules.yaml") // allows user:* in events.cache.invalidate

	runWorker := func(path string) (stop func()) {
		rules, err := cachekeys.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		w, err := worker.New(testserver.WorkerConfig(), worker.Deps{JetStream: js, Redis: rdb, Rules: rules})
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		<-w.Started()
		return func() { cancel(); <-done }
	}
	stop := runWorker(strict)
	pub, err := events.NewPublisher(js)
	if err != nil {
		t.Fatal(err)
	}
	rdb.Set(ctx, "user:1", "v", 0)
	if _, err := pub.Publish(ctx, "events.cache.invalidate", map[string]any{"keys": []any{"user:1"}}); err != nil { // no explicit allow: rejected
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, "events.course.updated", map[string]any{"course_id": "*"}); err != nil { // a glob: rejected by both
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "events.course.updated", []byte(`{"course_id": `)); err != nil { // malformed
		t.Fatal(err)
	}
	store := deadletter.NewStore(js, worker.DefaultDeadLetterStream, worker.DefaultDeadLetterPrefix)
	testserver.Eventually(t, "three dead letters", 10*time.Second, func() bool {
		n, err := store.Count(ctx)
		return err == nil && n == 3
	})
	stop()
	env := map[string]string{"NATS_URL": ns.ClientURL(), "INVALIDATOR_RULES": fixed}

	res := cli(t, given{args: []string{"dlq", "list"}, env: env})
	out := lines(res.stdout)
	if res.code != 0 || len(out) != 4 || out[3] != "3 letters: malformed 1, rejected 2" ||
		!strings.Contains(res.stdout, "events.cache.invalidate") || !strings.Contains(res.stdout, "[malformed]") {
		t.Fatalf("dlq list: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = cli(t, given{args: []string{"dlq", "list", "--json", "--subject", "events.course.updated"}, env: env})
	var seqOf = map[string]uint64{}
	for _, line := range lines(res.stdout) {
		var l deadletter.Letter
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("--json line %q: %v", line, err)
		}
		seqOf[string(l.Kind)] = l.Seq
	}
	if len(seqOf) != 2 || res.code != 0 {
		t.Fatalf("dlq list --json --subject: %v\n%s", seqOf, res.stdout)
	}
	var inval uint64
	_ = store.List(ctx, deadletter.Filter{Subject: "events.cache.invalidate"}, func(l deadletter.Letter) error { inval = l.Seq; return nil })

	res = cli(t, given{args: []string{"dlq", "show", itoa(inval)}, env: env})
	if res.code != 0 || !strings.Contains(res.stdout, "kind: rejected") || !strings.Contains(res.stdout, `"keys": [`) ||
		!strings.Contains(res.stdout, "exact   user:1") {
		t.Errorf("dlq show: %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	res = cli(t, given{args: []string{"dlq", "replay", "--all", "--dry-run"}, env: env})
	if res.code != 0 || !strings.Contains(res.stdout, "would replay 1, kept 2") {
		t.Errorf("dlq replay --dry-run: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if n, _ := store.Count(ctx); n != 3 {
		t.Fatalf("--dry-run deleted letters: %d left", n)
	}
	res = cli(t, given{args: []string{"dlq", "replay", "--all"}, env: env})
	if res.code != 0 || !strings.Contains(res.stdout, "replayed 1, kept 2") || !strings.Contains(res.stdout, "still reject") {
		t.Fatalf("dlq replay: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if _, err := store.Get(ctx, inval); err == nil {
		t.Error("the replayed letter is still there")
	}
	stream, _ := js.Stream(ctx, worker.DefaultStream)
	last, err := stream.GetLastMsgForSubject(ctx, "events.cache.invalidate")
	if err != nil || !strings.HasSuffix(last.Header.Get(nats.MsgIdHdr), ":replay:"+itoa(inval)) {
		t.Fatalf("replayed message: %v, %v", last, err)
	}
	// A second replay of the same letter is deduplicated by the stream.
	dup := nats.NewMsg("events.cache.invalidate")
	dup.Data, dup.Header = last.Data, last.Header
	if ack, err := js.PublishMsg(ctx, dup); err != nil || !ack.Duplicate {
		t.Errorf("second replay: %+v, %v; want a duplicate", ack, err)
	}

	stop = runWorker(fixed)
	testserver.Eventually(t, "the replayed event applied under the fixed rules", 10*time.Second, func() bool {
		return rdb.Exists(ctx, "user:1").Val() == 0
	})
	stop()

	// A letter already replayed is gone: replay says so and fails, as show does.
	res = cli(t, given{args: []string{"dlq", "replay", itoa(inval)}, env: env})
	if res.code != exitFailure || !strings.Contains(res.stderr, "no such letter: "+itoa(inval)) {
		t.Errorf("replay of a letter that is gone: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = cli(t, given{args: []string{"dlq", "purge", "--all"}, env: env})
	if res.code != exitUsage || !strings.Contains(res.stderr, "--yes") {
		t.Errorf("purge without --yes off a terminal: %d %s", res.code, res.stderr)
	}
	// Under cron, systemd or "docker exec -T" standard input is /dev/null, a
	// character device but no terminal: the same refusal, not a prompt.
	res = cli(t, given{args: []string{"dlq", "purge", "--all"}, env: env, stdinFile: devNull(t)})
	if res.code != exitUsage || !strings.Contains(res.stderr, "give --yes") || strings.Contains(res.stderr, "[y/N]") {
		t.Errorf("purge with standard input /dev/null: %d %s%s", res.code, res.stdout, res.stderr)
	}
	if n, _ := store.Count(ctx); n != 2 {
		t.Fatalf("%d letters left after refused purges, want 2", n)
	}
	res = cli(t, given{args: []string{"dlq", "purge", "--reason", "malformed", "--yes"}, env: env})
	if res.code != 0 || !strings.Contains(res.stdout, "deleted 1 letter\n") {
		t.Errorf("purge --reason: %d %s%s", res.code, res.stdout, res.stderr)
	}
	if n, _ := store.Count(ctx); n != 1 {
		t.Errorf("%d letters left, want the one the rules still reject", n)
	}
	res = cli(t, given{args: []string{"dlq", "purge", "--subject", "events.course.updated", "--yes"}, env: env})
	if n, _ := store.Count(ctx); res.code != 0 || !strings.Contains(res.stdout, "deleted 1 letter\n") || n != 0 {
		t.Errorf("purge --subject: %d %s%s, %d letters left", res.code, res.stdout, res.stderr, n)
	}
	res = cli(t, given{args: []string{"dlq", "replay"}, env: env})
	if res.code != exitUsage {
		t.Errorf("replay without a selection: %d", res.code)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
