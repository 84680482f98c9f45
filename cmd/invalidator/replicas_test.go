package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"
)

// Three `invalidator run` processes share the durable consumer of a backlog
// of 3,000 exact-key events and 5 pattern events. One is killed with
// SIGKILL while it holds events: the server redelivers them ACK_WAIT (2s)
// after their last progress signal, the two others apply them, every key is
// gone, every event is acked and the dead-letter stream is empty.
//
// To kill the process at a moment when it certainly holds events, Redis
// refuses writes (CLIENT PAUSE WRITE) while the replicas start on the
// backlog: each takes its share and waits in UNLINK. The pause ends right
// after the kill. The killed process has removed nothing by then, so the
// events it held can only have been applied by the others.
func TestReplicasShareTheConsumerAndSurviveSIGKILL(t *testing.T) {
	t.Parallel()
	testproc.Binary(t) // build before the servers start
	r := testserver.Redis(t)
	rdb := testserver.RedisClient(t, r)
	ns := testserver.NATS(t)
	_, js := testserver.JetStream(t, ns)
	ctx := context.Background()

	const exact, courses, perCourse = 3000, 5, 1000
	loadKeys(t, rdb, "user:", exact)
	for c := range courses {
		loadKeys(t, rdb, "cache:course_analytics:"+strconv.Itoa(c)+":", perCourse)
	}
	loadKeys(t, rdb, "other:", 10)

	// The backlog: in the stream (as the worker creates it) before any replica runs.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, events.WithSource("test"))
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	publish := func(subject string, data map[string]any) {
		t.Helper()
		if last, err = pub.Publish(ctx, subject, data); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
	}
	for i := range exact {
		if i%(exact/courses) == 0 { // the pattern events, spread through the backlog
			publish("events.course.updated", map[string]any{"course_id": strconv.Itoa(i / (exact / courses))})
		}
		publish("events.cache.invalidate", map[string]any{"keys": []string{"user:" + strconv.Itoa(i)}})
	}

	if err := rdb.Do(ctx, "CLIENT", "PAUSE", "30000", "WRITE").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE WRITE: %v", err)
	}
	t.Cleanup(func() { _ = rdb.Do(context.Background(), "CLIENT", "UNPAUSE").Err() })
	replicas := make([]*testproc.Proc, 3)
	addrs := make([]string, len(replicas))
	for i := range replicas {
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		replicas[i] = testproc.Start(t, testproc.WorkerEnv(r.URL(), ns.ClientURL(), absRules(t),
			"HTTP_ADDR="+addrs[i],
			"ACK_WAIT=2s",
			"WORKER_CONCURRENCY=4",
			"REDIS_SOCKET_TIMEOUT=30s", // longer than the pause: UNLINK waits instead of failing
		), "run")
	}
	held := make([]float64, len(replicas))
	eventually(t, "every replica holds events", 30*time.Second, func() bool {
		for i := range replicas {
			held[i] = metric(t, addrs[i], "invalidator_events_in_flight")
		}
		return held[0] > 0 && held[1] > 0 && held[2] > 0
	})
	replicas[0].Signal(t, syscall.SIGKILL)
	killedAt := time.Now()
	replicas[0].Wait(t, 10*time.Second)
	if err := rdb.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatalf("CLIENT UNPAUSE: %v", err)
	}
	t.Logf("events in flight per replica when the first was killed: %v", held)

	waitAcked(t, js, last, 60*time.Second)
	t.Logf("every event acked %s after the kill (ACK_WAIT 2s)", time.Since(killedAt).Round(time.Millisecond))

	if n := countKeys(t, rdb, "user:*"); n != 0 {
		t.Errorf("%d of %d user:* keys left", n, exact)
	}
	if n := countKeys(t, rdb, "cache:course_analytics:*"); n != 0 {
		t.Errorf("%d of %d cache:course_analytics:* keys left", n, courses*perCourse)
	}
	if n := countKeys(t, rdb, "other:*"); n != 10 {
		t.Errorf("%d other:* keys left, want 10", n)
	}
	dlq, err := js.Stream(ctx, "EVENTS_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := dlq.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Errorf("dead-letter stream: %+v, %v; want it empty", info.State, err)
	}
	var applied, dead float64
	for i := 1; i < len(replicas); i++ {
		applied += metric(t, addrs[i], `invalidator_events_total{outcome="applied"}`)
		dead += metric(t, addrs[i], `invalidator_events_total{outcome="dead_lettered"}`)
	}
	t.Logf("the two survivors applied %v deliveries for %d events (%v applied more than once); %v dead-lettered",
		applied, exact+courses, applied-float64(exact+courses), dead)
	if applied < exact+courses || dead != 0 {
		t.Errorf("the survivors applied %v deliveries and dead-lettered %v; want at least %d and 0", applied, dead, exact+courses)
	}
}

// metric reads one sample of the Prometheus text exposition at addr; a
// sample not exposed (yet) reads 0.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0 // not listening yet
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	return 0
}

// docker-compose.cluster.yml (there is no Docker here to run it) brings up
// what the README says: 3 Redis Cluster masters and the one-shot service
// that joins them, 3 JetStream servers routed to each other, and 2 worker
// replicas whose settings reach every node, with R3 streams. Every variable
// it sets is a setting of run.
func TestClusterComposeFile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docker-compose.cluster.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string
			Command     []string
			Environment map[string]string
			Deploy      struct{ Replicas int }
			DependsOn   map[string]struct{ Condition string } `yaml:"depends_on"`
		}
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("docker-compose.cluster.yml: %v", err)
	}
	svc := compose.Services
	command := func(name string) string {
		t.Helper()
		s, ok := svc[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		return strings.Join(s.Command, " ")
	}
	redisNodes, natsNodes := []string{"redis-1", "redis-2", "redis-3"}, []string{"nats-1", "nats-2", "nats-3"}
	for _, n := range redisNodes {
		if c := command(n); !strings.Contains(c, "--cluster-enabled yes") {
			t.Errorf("%s: %q is not in cluster mode", n, c)
		}
	}
	if c := command("redis-cluster-init"); !strings.Contains(c, "redis-cli --cluster create") || !strings.Contains(c, "--cluster-replicas 0") {
		t.Errorf("redis-cluster-init does not create a cluster of masters: %q", c)
	}
	for _, n := range natsNodes {
		c := command(n)
		for _, want := range []string{"-js", "--name " + n, "--cluster_name invalidator", "--cluster nats://0.0.0.0:6222",
			"--routes nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222"} {
			if !strings.Contains(c, want) {
				t.Errorf("%s: %q lacks %q", n, c, want)
			}
		}
	}

	w, ok := svc["invalidator"]
	if !ok {
		t.Fatal("no service invalidator")
	}
	if w.Deploy.Replicas != 2 {
		t.Errorf("invalidator: %d replicas, want 2", w.Deploy.Replicas)
	}
	known := map[string]bool{}
	for _, s := range config.Settings {
		known[s.Env] = true
	}
	for name := range w.Environment {
		if !known[name] {
			t.Errorf("invalidator sets %s, which is not a setting", name)
		}
	}
	env := w.Environment
	want := map[string]string{
		"REDIS_CLUSTER_ADDRS":  "redis-1:6379,redis-2:6379,redis-3:6379",
		"NATS_URL":             "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222",
		"NATS_STREAM_REPLICAS": "3",
		"INVALIDATOR_RULES":    "/etc/invalidator/rules.example.yaml", // the file the image ships (TestDeploymentFiles)
	}
	for name, v := range want {
		if env[name] != v {
			t.Errorf("invalidator: %s=%q, want %q", name, env[name], v)
		}
	}
	if u := env["REDIS_URL"]; !strings.HasSuffix(u, "/0") {
		t.Errorf("invalidator: REDIS_URL=%q; cluster mode needs DB 0", u)
	}
	for _, dep := range append([]string{"redis-cluster-init"}, natsNodes...) {
		if _, ok := w.DependsOn[dep]; !ok {
			t.Errorf("invalidator does not wait for %s", dep)
		}
	}
	if c := w.DependsOn["redis-cluster-init"].Condition; c != "service_completed_successfully" {
		t.Errorf("invalidator waits for redis-cluster-init with %q, want service_completed_successfully", c)
	}
}

// dev --nats-cluster starts 3 JetStream servers (the first on NATS_URL's
// port), creates R3 streams on them, invalidates through them, and stops
// all three when interrupted.
func TestDevNATSCluster(t *testing.T) {
	t.Parallel()
	r := testserver.Redis(t)
	rdb := testserver.RedisClient(t, r)
	natsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	p := testproc.Start(t, testproc.WorkerEnv(r.URL(), "nats://"+natsAddr, absRules(t)), "dev", "--nats-cluster")
	p.WaitLog(t, "worker started", 60*time.Second)
	m := regexp.MustCompile(`NATS cluster of 3 embedded JetStream servers on (\S+), streams with 3 replicas`).FindStringSubmatch(p.Stderr.String())
	if m == nil {
		t.Fatalf("dev did not say it started a NATS cluster:\n%s", p.Stderr)
	}
	urls := strings.Split(m[1], ",")
	if len(urls) != 3 || urls[0] != "nats://"+natsAddr {
		t.Fatalf("cluster URLs %q, want 3 starting with nats://%s", urls, natsAddr)
	}
	if !strings.Contains(p.Stderr.String(), "NATS_URL="+shellQuote(m[1])) {
		t.Errorf("dev's example does not export NATS_URL=%s", m[1])
	}
	_, js := testserver.JetStreamCluster(t, m[1])
	ctx := context.Background()
	for _, name := range []string{"EVENTS", "EVENTS_DLQ"} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: %d replicas, cluster %+v; want R3 with 2 followers", name, info.Config.Replicas, info.Cluster)
		}
	}

	if err := rdb.Set(ctx, "cache:course_analytics:42", "cached", 0).Err(); err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(js, events.WithSource("test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, "events.course.updated", map[string]any{"course_id": "42"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cache:course_analytics:42 removed", 30*time.Second, func() bool {
		n, err := rdb.Exists(ctx, "cache:course_analytics:42").Result()
		return err == nil && n == 0
	})

	p.Signal(t, os.Interrupt)
	if code := p.Wait(t, 60*time.Second); code != exitOK {
		t.Fatalf("dev exit code %d, want 0", code)
	}
	for _, u := range urls {
		addr := strings.TrimPrefix(u, "nats://")
		eventually(t, addr+" no longer answers", 10*time.Second, func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err != nil
		})
	}
}
