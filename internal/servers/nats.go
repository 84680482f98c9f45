// Package servers starts the NATS and Redis servers that `invalidator dev`
// and the tests run beside the worker: an in-process JetStream server and a
// redis-server child process. It holds no business logic.
package servers

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configures an embedded JetStream server.
type NATSOptions struct {
	// Host to listen on. Defaults to 127.0.0.1.
	Host string
	// Port to listen on; -1 picks a free port. Defaults to -1.
	Port int
	// StoreDir holds the JetStream files. Required.
	StoreDir string
	// Username and Password, when both set, require clients to log in.
	Username, Password string
	// NoJetStream starts a core NATS server without JetStream, as a user's
	// mistake would.
	NoJetStream bool
	// TLS, when set, makes the server require TLS with a client
	// certificate the CA signed.
	TLS *TLSFiles
}

// StartNATS starts an in-process NATS server with JetStream and waits until it
// accepts connections (at most 10 s). The caller owns it: call Shutdown and
// WaitForShutdown when done.
func StartNATS(o NATSOptions) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("servers: NATS StoreDir is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = -1
	}
	opts := &server.Options{
		Host:      o.Host,
		Port:      o.Port,
		JetStream: !o.NoJetStream,
		StoreDir:  o.StoreDir,
		NoLog:     true,
		NoSigs:    true,
		Username:  o.Username,
		Password:  o.Password,
	}
	if o.TLS != nil {
		cfg, err := o.TLS.serverConfig()
		if err != nil {
			return nil, err
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = cfg, true, true, 2
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("servers: new NATS server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("servers: NATS server not ready after 10s")
	}
	return s, nil
}
