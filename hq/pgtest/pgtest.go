// Package pgtest starts a real PostgreSQL for a test (hq/pglocal: Debian's
// initdb and pg_ctl, a throwaway cluster on a Unix socket, run as the
// postgres user when the tests run as root).
//
// Outside CI a machine without PostgreSQL skips these tests with a message
// saying what to install; in CI (the CI environment variable is set, as
// .ci/run does and CI runners do) a missing PostgreSQL fails them.
package pgtest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/scanpay/scanpay/hq/pglocal"
)

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") != "" }

// Options tune a server.
type Options = pglocal.Options

// Server is a running throwaway cluster.
type Server struct{ *pglocal.Server }

// Start starts a cluster for the test and stops it at the end, or skips the
// test (fails it in CI) when PostgreSQL is not installed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := pglocal.Start(opts)
	if errors.Is(err, pglocal.ErrNotInstalled) {
		if InCI() {
			t.Fatal(err.Error() + "; .ci/run installs it, and CI must run these tests")
		}
		t.Skip(err.Error() + " to run this test (skipped outside CI only)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return &Server{s}
}

// NewDB creates an empty database and returns its connection string.
func (s *Server) NewDB(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, err := s.Server.NewDB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}
