package ops

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/invalidator/invalidator/internal/testserver"
)

func TestParseClusterNodes(t *testing.T) {
	raw := `07c3 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922
67ed 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-07c3]
292f 127.0.0.1:30003@40003 master,fail - 0 2 3 connected 10923-16383
e7d1 127.0.0.1:30004@40004 slave 67ed 0 3 1 connected
`
	got := parseClusterNodes(raw)
	want := []string{"127.0.0.1:30001 master [0-5460] connected", "127.0.0.1:30004 replica [] connected",
		"127.0.0.1:30002 master [5461-10922] connected", "127.0.0.1:30003 master [10923-16383] fail"}
	if len(got) != len(want) {
		t.Fatalf("%d nodes, want %d: %+v", len(got), len(want), got)
	}
	for i, n := range got {
		if s := n.Addr + " " + n.Role + " [" + strings.Join(n.Slots, " ") + "] " + n.State; s != want[i] {
			t.Errorf("node %d = %q, want %q", i, s, want[i])
		}
	}
	if got[1].Master != "67ed" {
		t.Errorf("replica's master = %q", got[1].Master)
	}
}

// TestRedisStatsPerClusterNode serves the endpoints over a real 3-master
// cluster: every master is listed with its slot ranges, which cover all
// 16384 slots, and answers a PING.
func TestRedisStatsPerClusterNode(t *testing.T) {
	c := testserver.RedisCluster(t, 3)
	cc := testserver.ClusterClient(t, c)
	srv := httptest.NewServer(New("", Deps{Redis: cc}).Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/api/v3/system/redis/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Version string      `json:"version"`
		Nodes   []redisNode `json:"nodes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%d, %v", resp.StatusCode, err)
	}
	covered, masters := 0, 0
	for _, n := range body.Nodes {
		if n.Role != "master" {
			continue
		}
		masters++
		if n.Ping != "ok" || n.State != "connected" {
			t.Errorf("master %+v not ok", n)
		}
		for _, r := range n.Slots {
			lo, hi, _ := strings.Cut(r, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if hi != "" {
				b, _ = strconv.Atoi(hi)
			}
			covered += b - a + 1
		}
	}
	if masters != 3 || covered != 16384 || body.Version == "" {
		t.Errorf("%d masters covering %d slots (version %q), want 3 covering 16384: %+v", masters, covered, body.Version, body.Nodes)
	}
	_ = context.Background()
}
