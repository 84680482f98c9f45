package events_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/invalidator/invalidator/events"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func ExamplePublisher_Publish() {
	dir, err := os.MkdirTemp("", "events-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		panic(err)
	}
	go s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		panic("nats-server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}

	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}})
	if err != nil {
		panic(err)
	}
	p, err := events.NewPublisher(js, events.WithSource("urn:lms:courses"))
	if err != nil {
		panic(err)
	}
	seq, err := p.Publish(ctx, "events.course.updated", map[string]any{"course_id": 42})
	if err != nil {
		panic(err)
	}
	fmt.Println(seq)
	// Output: 1
}
