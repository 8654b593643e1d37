// Package pgtest starts a real PostgreSQL for a test: Debian's server
// binaries (initdb, pg_ctl) make a throwaway cluster in a temporary
// directory that listens only on a Unix socket there. When the tests run as
// root the cluster runs as the postgres user, as PostgreSQL requires.
//
// Outside CI a machine without PostgreSQL skips these tests with a message
// saying what to install; in CI (the CI environment variable is set, as
// .ci/run does) a missing PostgreSQL fails them.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running throwaway PostgreSQL cluster.
type Server struct {
	dir    string
	socket string
	bin    string
	cred   *syscall.Credential
	dbs    atomic.Int64
}

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") != "" }

// bindir finds the newest Debian PostgreSQL server binaries, or initdb on
// PATH.
func bindir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(a, b int) bool {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[a])))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[b])))
		return va > vb
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

// Options tune a server.
type Options struct {
	// Durable keeps fsync on (benchmarks measure real commits); tests turn
	// it off to spare a shared machine's disk.
	Durable bool
}

// Start starts a cluster for the test and stops it at the end, or skips the
// test (fails it in CI) when PostgreSQL is not installed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := bindir()
	if bin == "" {
		const msg = "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql package (apt-get install postgresql) to run this test"
		if InCI() {
			t.Fatal(msg + "; .ci/run installs it, and CI must run these tests")
		}
		t.Skip(msg + " (skipped outside CI only)")
	}
	s := &Server{bin: bin}
	var err error
	s.dir, err = os.MkdirTemp("", "scanpay-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.dir) })
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("tests run as root and there is no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(s.dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(s.dir, "data")
	s.socket = s.dir
	if out, err := s.run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	settings := fmt.Sprintf("-c listen_addresses='' -k %s -c max_connections=100 -c shared_buffers=64MB", s.socket)
	if !opts.Durable {
		settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	}
	if out, err := s.run("pg_ctl", "-D", data, "-o", settings, "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	t.Cleanup(func() { s.run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop") })
	return s
}

func (s *Server) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd.CombinedOutput()
}

// DSN is the connection string of database db.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("host=%s user=postgres dbname=%s sslmode=disable", s.socket, db)
}

// NewDB creates an empty database and returns its connection string.
func (s *Server) NewDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", s.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return s.DSN(name)
}

// Log returns the server's log, for a failing test.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "log"))
	return strings.TrimSpace(string(b))
}
