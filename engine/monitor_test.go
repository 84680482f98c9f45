package engine_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// monitor runs MONITOR on a connection of its own (go-redis' Monitor shares
// its connection with the pool) and sends each line it prints on the
// returned channel, until the test ends.
func monitor(t *testing.T, rdb *redis.Client) <-chan string {
	t.Helper()
	conn, err := net.Dial("tcp", rdb.Options().Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	if ok, err := r.ReadString('\n'); err != nil || ok != "+OK\r\n" {
		t.Fatalf("MONITOR: %q %v", ok, err)
	}
	lines := make(chan string, 1<<16)
	go func() {
		defer close(lines)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- strings.TrimSpace(line)
		}
	}()
	return lines
}

// fields splits a MONITOR line (`+123.4 [0 lua] "INCR" "k"`) into its
// quoted arguments, unquoted.
func fields(line string) []string {
	var out []string
	for part := range strings.SplitSeq(line, `" "`) {
		if i := strings.Index(part, `] "`); i >= 0 {
			part = part[i+2:]
		}
		out = append(out, strings.Trim(part, `"`))
	}
	return out
}
