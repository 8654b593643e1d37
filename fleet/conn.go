package fleet

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Link is how a lane or head office reaches NATS.
type Link struct {
	Servers     []string // nats:// or tls:// URLs
	Credentials string   // a .creds file (user JWT + nkey seed) or an nkey seed file; "" = none
	CAFile      string   // the server's CA; "" = system roots
	CertFile    string   // client certificate, when the server asks for one
	KeyFile     string
	Name        string // connection name the server shows
	InboxPrefix string // replies come back below this prefix (per-lane permissions)
	// ReconnectMin and ReconnectMax bound the jittered, doubling delay
	// between reconnect attempts (defaults 250 ms and 30 s).
	ReconnectMin, ReconnectMax time.Duration
}

// Options turns a Link into nats.go options: TLS (1.2 or newer) when a
// server URL is tls:// or a CA or certificate is given, the credentials,
// endless reconnects with capped, jittered backoff, and no reconnect
// buffer (the outbox is the buffer: a publish while disconnected fails at
// once instead of piling up in memory).
func (l Link) Options() ([]nats.Option, error) {
	if len(l.Servers) == 0 {
		return nil, errors.New("no NATS server given")
	}
	lo, hi := l.ReconnectMin, l.ReconnectMax
	if lo <= 0 {
		lo = 250 * time.Millisecond
	}
	if hi < lo {
		hi = max(lo, 30*time.Second)
	}
	opts := []nats.Option{
		nats.Name(l.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := lo << min(attempts, 16)
			if d > hi || d <= 0 {
				d = hi
			}
			return d - d/5 + time.Duration(rand.Int64N(int64(d)/5+1))
		}),
	}
	if l.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(l.InboxPrefix))
	}
	secure := l.CAFile != "" || l.CertFile != ""
	for _, s := range l.Servers {
		secure = secure || strings.HasPrefix(s, "tls://")
	}
	if secure {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if l.CAFile != "" {
			pem, err := os.ReadFile(l.CAFile)
			if err != nil {
				return nil, fmt.Errorf("NATS CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("NATS CA %s: no PEM certificate in it", l.CAFile)
			}
			tc.RootCAs = pool
		}
		if l.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("NATS client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(tc))
	}
	if l.Credentials != "" {
		o, err := credentials(l.Credentials)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	}
	return opts, nil
}

// credentials reads a credentials file: a .creds file with a user JWT (NATS
// decentralised auth, as nsc writes it) or a bare nkey seed (nkey users in
// the server config). The file must not be readable by others.
func credentials(path string) (nats.Option, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("NATS credentials: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("NATS credentials %s are readable by others (mode %04o): run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("NATS credentials: %w", err)
	}
	if bytes.Contains(data, []byte("BEGIN NATS USER JWT")) {
		return nats.UserCredentials(path), nil
	}
	o, err := nats.NkeyOptionFromSeed(path)
	if err != nil {
		// The seed itself never goes into the error.
		return nil, fmt.Errorf("NATS credentials %s: neither a .creds file nor an nkey seed", path)
	}
	return o, nil
}
