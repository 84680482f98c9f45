package cdc_test

import (
	"context"
	"errors"
	"log"
	"os/signal"
	"syscall"

	"github.com/invalidator/invalidator/cachekeys"
	"github.com/invalidator/invalidator/cdc"
	"github.com/nats-io/nats.go"
)

// A Runner follows the tables of a rules file's cdc section and publishes
// their row changes until SIGTERM. Prepare reports what must be fixed in
// the database before NATS is dialled.
func ExampleRunner() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	rules, err := cachekeys.Load("testdata/rules-cdc.yaml")
	if err != nil {
		log.Fatal(err)
	}
	run, err := cdc.New(cdc.Config{
		DatabaseURL: "postgres://invalidator_cdc:secret@127.0.0.1:5432/app",
		Tables:      rules.CDC(),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := run.Prepare(ctx); errors.Is(err, cdc.ErrSetup) {
		log.Fatal(err) // for example: wal_level is replica, and logical replication needs logical: ...
	}
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	if err := run.Run(ctx, nc); err != nil {
		log.Fatal(err)
	}
}
