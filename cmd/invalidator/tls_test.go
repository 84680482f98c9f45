package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/invalidator/invalidator/internal/servers"
	"github.com/invalidator/invalidator/internal/testproc"
	"github.com/invalidator/invalidator/internal/testserver"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// TestTLS runs the real binary against a TLS-only redis-server and a TLS
// NATS server, both requiring client certificates and passwords, with
// certificates made in the test: the worker applies an event; a wrong CA,
// a plaintext port and a wrong password each stop start-up with one line
// and exit 1; no secret shows anywhere.
func TestTLS(t *testing.T) {
	t.Parallel()
	testproc.Binary(t)
	const password = "tls-Pa55w0rd"
	pki, other := testserver.TLSFiles(t), testserver.TLSFiles(t) // other: a CA that signed nothing here
	r := testserver.Redis(t, testserver.WithTLS(pki), testserver.WithPassword(password))
	plain := testserver.Redis(t)
	plainNATS := testserver.NATS(t)
	ns := testserver.NATSWith(t, servers.NATSOptions{Username: "svc", Password: password, TLS: pki})
	natsHost := ns.Addr().String()
	natsURL := fmt.Sprintf("nats://svc:%s@%s", password, natsHost)
	base := map[string]string{
		"REDIS_URL": r.URL(), "REDIS_TLS_CA_FILE": pki.CA, "REDIS_TLS_CERT_FILE": pki.ClientCert, "REDIS_TLS_KEY_FILE": pki.ClientKey,
		"NATS_URL": natsURL, "NATS_TLS_CA_FILE": pki.CA, "NATS_TLS_CERT_FILE": pki.ClientCert, "NATS_TLS_KEY_FILE": pki.ClientKey,
		"INVALIDATOR_RULES": absRules(t), "HTTP_ADDR": "", "LOG_FORMAT": "json",
	}
	environ := func(over map[string]string) []string {
		var out []string
		for k, v := range base {
			if o, ok := over[k]; ok {
				v = o
			}
			out = append(out, k+"="+v)
		}
		return out
	}

	t.Run("works", func(t *testing.T) {
		tlsCfg, err := pki.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: password, TLSConfig: tlsCfg})
		defer rdb.Close()
		ctx := context.Background()
		rdb.Set(ctx, "cache:course_analytics:42", "v", 0)
		rdb.Set(ctx, "cache:course_analytics:420", "v", 0)
		p := testproc.Start(t, environ(nil), "run")
		p.WaitLog(t, "worker started", 20*time.Second)
		nc, err := nats.Connect(natsURL, nats.RootCAs(pki.CA), nats.ClientCert(pki.ClientCert, pki.ClientKey))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if err := nc.Publish("events.course.updated", []byte(`{"course_id": "42"}`)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "course 42's key gone over TLS", 15*time.Second, func() bool { return rdb.Exists(ctx, "cache:course_analytics:42").Val() == 0 })
		if rdb.Exists(ctx, "cache:course_analytics:420").Val() != 1 {
			t.Error("course 420's key was removed")
		}
		p.Signal(t, syscall.SIGTERM)
		if code := p.Wait(t, 20*time.Second); code != 0 {
			t.Errorf("exit %d after SIGTERM", code)
		}
		if out := p.Stdout.String() + p.Stderr.String(); strings.Contains(out, password) {
			t.Errorf("output shows the password:\n%s", out)
		}
	})

	for _, tt := range []struct {
		name string
		over map[string]string
		want []string
	}{
		{"wrong Redis CA", map[string]string{"REDIS_TLS_CA_FILE": other.CA}, []string{"TLS", "Redis", "REDIS_TLS"}},
		{"Redis plaintext port", map[string]string{"REDIS_URL": strings.Replace(plain.URL(), "redis://", "rediss://", 1)}, []string{"TLS", "Redis", "plaintext"}},
		{"wrong Redis password", map[string]string{"REDIS_URL": strings.Replace(r.URL(), password, "wr0ng-Pa55", 1)}, []string{"Redis", "password", "REDIS_URL"}},
		{"wrong NATS CA", map[string]string{"NATS_TLS_CA_FILE": other.CA}, []string{"TLS", "NATS", "NATS_TLS"}},
		{"NATS plaintext port", map[string]string{"NATS_URL": plainNATS.ClientURL()}, []string{"TLS", "NATS"}},
		{"wrong NATS password", map[string]string{"NATS_URL": "nats://svc:wr0ng-Pa55@" + natsHost}, []string{"NATS", "authorization"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testproc.Start(t, environ(tt.over), "run")
			failsWithOneErrorLine(t, p, tt.want)
			if out := p.Stdout.String() + p.Stderr.String(); strings.Contains(out, password) || strings.Contains(out, "wr0ng-Pa55") {
				t.Errorf("output shows a password:\n%s", out)
			}
		})
	}
}
