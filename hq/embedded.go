package hq

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig is a NATS server with JetStream run inside head office,
// for a shop whose lanes talk to one PC.
type EmbeddedConfig struct {
	// ConfigFile is a nats-server configuration file (TLS, authorization
	// with per-lane nkeys or accounts, as a standalone server takes); its
	// listen address and store directory are kept unless set below.
	ConfigFile string
	Listen     string // host:port (default 127.0.0.1:4222)
	StoreDir   string // JetStream's files
}

// Embedded is a running embedded server.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts the server and waits until it takes connections.
func StartEmbedded(c EmbeddedConfig) (*Embedded, error) {
	opts := &server.Options{}
	if c.ConfigFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(c.ConfigFile); err != nil {
			return nil, fmt.Errorf("embedded NATS: %w", err)
		}
	}
	if c.Listen != "" || opts.Port == 0 {
		listen := c.Listen
		if listen == "" {
			listen = "127.0.0.1:4222"
		}
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS listen %q: %w", listen, err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("embedded NATS listen %q: %w", listen, err)
		}
	}
	if c.StoreDir != "" {
		opts.StoreDir = c.StoreDir
	}
	opts.JetStream = true
	opts.NoSigs = true
	if opts.ServerName == "" {
		opts.ServerName = "scanpay-hq"
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS: not ready on %s:%d", opts.Host, opts.Port)
	}
	return &Embedded{srv: srv}, nil
}

// Server is the running server (for in-process connections).
func (e *Embedded) Server() *server.Server { return e.srv }

// ClientURL is where lanes connect.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Close stops the server.
func (e *Embedded) Close() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
