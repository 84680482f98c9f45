package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/invalidator/invalidator/events"
	"github.com/invalidator/invalidator/internal/config"
	"github.com/invalidator/invalidator/internal/logging"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const publishSummary = `Publishes a domain event as a CloudEvent to JetStream and prints its stream
sequence. The event data is the JSON object given as the second argument, or
read from standard input. NATS_URL (or --nats-url) says where, and NATS_CREDS
(or --nats-creds) gives a credentials file, as for run.`

func publishCmd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "publish", "SUBJECT [JSON]", publishSummary)
	build := config.PublishFlags(fs, e.getenv)
	source := fs.String("source", "", "CloudEvents `source` attribute (default urn:invalidator:<hostname>)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the stream's acknowledgement")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usagef("publish takes SUBJECT and an optional JSON object, see --help")
	}
	cfg, err := build()
	if err != nil {
		return usageError{err}
	}
	if err := events.ValidateSubject(pos[0]); err != nil {
		return usageError{err}
	}
	data, err := readData(e, pos[1:])
	if err != nil {
		return err
	}
	nopts := []nats.Option{nats.Name("invalidator publish"), nats.Timeout(*timeout)}
	nopts = append(nopts, config.NATSOptions(cfg.NATSCreds, cfg.NATSTLS)...)
	nc, err := nats.Connect(cfg.NATSURL, nopts...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", logging.RedactURL(cfg.NATSURL), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var opts []events.PublisherOption
	if *source != "" {
		opts = append(opts, events.WithSource(*source))
	}
	pub, err := events.NewPublisher(js, opts...)
	if err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	seq, err := pub.Publish(ctx, pos[0], data)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		return fmt.Errorf("publish %s: no stream listens on it (start the worker once to create the stream): %w", pos[0], err)
	}
	if err != nil {
		return fmt.Errorf("publish %s: %w", pos[0], err)
	}
	fmt.Fprintln(e.stdout, seq)
	return nil
}

// readData takes the JSON object from the argument, or else standard input.
func readData(e env, arg []string) (map[string]any, error) {
	var raw []byte
	if len(arg) == 1 {
		raw = []byte(arg[0])
	} else {
		b, err := io.ReadAll(io.LimitReader(e.stdin, 1<<20+1))
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		raw = b
	}
	data, err := jsonObject(raw)
	if err != nil {
		return nil, usagef("event data must be a JSON object: %w", err)
	}
	return data, nil
}

// jsonObject decodes one JSON object, keeping numbers as written.
func jsonObject(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("got %s", jsonKind(v))
	}
	if dec.More() {
		return nil, errors.New("trailing data after the object")
	}
	return obj, nil
}

// jsonKind names the kind of a decoded JSON value, as a user wrote it.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	default:
		return "an object"
	}
}
