package journal

import (
	"context"
	"database/sql/driver"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// After a failed fdatasync nothing more is written, and nothing is called
// durable: Linux reports a writeback error once per file, so the next
// fdatasync could succeed over frames the kernel dropped, and head office
// would be handed the failed commit's events.
func TestFailedFsyncEndsWrites(t *testing.T) {
	ctx := context.Background()
	j, ob := daemonWithFleet(t)
	before, err := ob.Pending(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	j.wal.mu.Lock()
	j.wal.fdatasync = func(int) error {
		calls++
		if calls == 1 {
			return unix.EIO
		}
		return nil // what the kernel says next: the error was reported
	}
	j.wal.mu.Unlock()
	if _, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 100, Currency: "CAD", Source: "keypad"}, num); !errors.Is(err, ErrStorage) {
		t.Fatalf("the arm whose fsync failed: %v", err)
	}
	// Another goroutine writes before the engine has stopped the daemon.
	if _, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 200, Currency: "CAD", Source: "keypad"}, num); !errors.Is(err, ErrStorage) || !errors.Is(err, unix.EIO) {
		t.Fatalf("a write after the failed fsync: %v", err)
	}
	if err := j.Sync(ctx); !errors.Is(err, ErrStorage) {
		t.Fatalf("a sync after the failed fsync: %v", err)
	}
	if calls != 1 {
		t.Fatalf("fdatasync called %d times after it failed", calls-1)
	}
	after, err := ob.Pending(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || j.UndurableFrom() == 0 {
		t.Fatalf("the publisher may take %d events (had %d), held from %d", len(after), len(before), j.UndurableFrom())
	}
}

// Only the daemon's journal commits without SQLite's own fsync; an
// operator command's (another process, not Exclusive) commits with FULL,
// durable before anyone reads them: the daemon's publisher holds back
// only its own undurable events.
func TestOnlyTheDaemonFsyncsItself(t *testing.T) {
	daemon, path := openTemp(t, Options{Exclusive: true})
	operator, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer operator.Close()
	for _, c := range []struct {
		j    *Journal
		name string
		want int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{{daemon, "daemon", 1}, {operator, "operator", 2}} {
		var level int
		if err := c.j.db.QueryRow(`PRAGMA synchronous`).Scan(&level); err != nil || level != c.want {
			t.Fatalf("%s's connection: synchronous=%d (%v), want %d", c.name, level, err, c.want)
		}
	}
	armKeypad(t, operator, 100)
	if walSyncs(operator) != 0 {
		t.Fatal("the operator's journal fsyncs after its commits, which were visible before")
	}
	armKeypad(t, daemon, 100)
	if walSyncs(daemon) == 0 {
		t.Fatal("the daemon's synced commit was not fsync'd")
	}
}

// A journal reached through a symbolic link (a data partition, say):
// SQLite keeps the WAL beside the file the link points to, and that is
// the file the daemon fsyncs.
func TestSymlinkedJournal(t *testing.T) {
	real := filepath.Join(t.TempDir(), "journal.db")
	j, err := Open(real, Options{})
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	link := filepath.Join(t.TempDir(), "journal.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(SecretPath(real)); err == nil {
		if err := os.WriteFile(SecretPath(link), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	j, err = Open(link, Options{Exclusive: true, TrackCleanStop: true})
	if err != nil {
		t.Fatalf("open through a symlink: %v", err)
	}
	defer j.Close()
	if _, err := j.ArmOrder(context.Background(), Armed{TerminalID: "L01", Amount: 100, Currency: "CAD", Source: "keypad"}, num); err != nil {
		t.Fatalf("arm through a symlink: %v", err)
	}
	j.wal.mu.Lock()
	synced, err := j.wal.f.Stat()
	j.wal.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	wal, err := os.Stat(real + "-wal")
	if err != nil || !os.SameFile(synced, wal) {
		t.Fatalf("fsync'd %s, not the WAL beside the real file (%v)", synced.Name(), err)
	}
}

func journalFDs(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, path) {
			n++
		}
	}
	return n
}

// The pool replaces the journal's connection when it breaks, and after a
// read its caller cancelled mid-statement: the old connection's
// driver-level statements are finalized, so it really closes (SQLite
// keeps one with live statements as a zombie, descriptors and all).
func TestReplacedConnectionsDoNotLeak(t *testing.T) {
	ctx := context.Background()
	j, path := openTemp(t, Options{Exclusive: true})
	armKeypad(t, j, 100)
	before := journalFDs(t, path)
	for i := 0; i < 20; i++ {
		if i%2 == 0 {
			j.db.SetMaxIdleConns(0) // closed, as a broken connection is
			j.db.SetMaxIdleConns(1)
		} else {
			cctx, cancel := context.WithCancel(ctx)
			go cancel()
			rows, err := j.db.QueryContext(cctx, `WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r WHERE x < 50000000) SELECT count(*) FROM r`)
			if err == nil {
				for rows.Next() {
				}
				rows.Close()
			}
			cancel()
		}
		armKeypad(t, j, 100)
	}
	if after := journalFDs(t, path); after > before {
		t.Fatalf("journal descriptors: %d before, %d after 20 replacements", before, after)
	}
	j.Close()
	if n := journalFDs(t, path); n > 0 {
		t.Fatalf("%d descriptors of the journal open after Close", n)
	}
}

// A journal that fails to open (here its migration refuses a dangling
// refund, and says so) leaves none of its files open.
func TestFailedOpenReleasesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	db := schemaV1Journal(t, path)
	if _, err := db.Exec(`PRAGMA foreign_keys = OFF; INSERT INTO refunds VALUES ('R1','NOPE',10,'DONE','',1,1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := Open(path, Options{Exclusive: true})
	if err == nil || !strings.Contains(err.Error(), "foreign key check failed in refunds") {
		t.Fatalf("migrating a journal with a dangling refund: %v", err)
	}
	if n := journalFDs(t, path); n > 0 {
		t.Fatalf("%d descriptors of the journal stay open after a failed Open", n)
	}
}

// A synced write that emitted an event and then rolled back (a stop
// between its statements and its commit) leaves a hold with nothing
// unsynced; Sync clears it, so the publisher is not held up until some
// other synced commit.
func TestSyncClearsAHoldLeftByARollback(t *testing.T) {
	bg := context.Background()
	j, _ := openTemp(t, Options{Exclusive: true})
	if err := j.SetFleet(bg, "L01", 1000); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	err := j.write(ctx, "arm order", func(w *wtx) error {
		_, err := j.insertOrder(w, NewOrder{TerminalID: "L01", Amount: 100, Currency: "CAD", Source: "keypad"}, StateArmed, num)
		cancel()
		return err
	})
	if !Interrupted(err) {
		t.Fatal(err)
	}
	if err := j.Sync(bg); err != nil {
		t.Fatal(err)
	}
	if h := j.UndurableFrom(); h != 0 {
		t.Fatalf("after Sync: held from %d, unsynced %v", h, j.Unsynced())
	}
}

func failFsync(j *Journal) {
	j.wal.mu.Lock()
	j.wal.fdatasync = func(int) error { return unix.EIO }
	j.wal.mu.Unlock()
}

// Sync after a failed fsync never answers "all durable", even when no
// unsynced write or held event came before (the fleet link off).
func TestSyncAfterAFailedFsync(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{Exclusive: true})
	failFsync(j)
	if _, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 100, Currency: "CAD", Source: "keypad"}, num); !errors.Is(err, ErrStorage) {
		t.Fatalf("an arm whose fsync failed: %v", err)
	}
	if err := j.Sync(ctx); !errors.Is(err, ErrStorage) || !j.Unsynced() {
		t.Fatalf("Sync after a failed fsync: %v (unsynced %v)", err, j.Unsynced())
	}
}

// A write already waiting for the connection when another's fsync fails
// writes nothing either, and says so (an unsynced one would otherwise
// report success).
func TestWriteWaitingThroughAFailedFsync(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{Exclusive: true})
	o := armKeypad(t, j, 100)
	failFsync(j)
	in, release := make(chan struct{}), make(chan struct{})
	errA := make(chan error, 1)
	go func() {
		errA <- j.write(ctx, "A", func(w *wtx) error {
			close(in)
			<-release
			_, err := w.execText(`INSERT OR REPLACE INTO meta(key, value) VALUES ('a', '1')`)
			return err
		})
	}()
	<-in
	errB := make(chan error, 1)
	go func() {
		_, err := j.AttachCode(ctx, o.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****0001", CodeHash: "h1"})
		errB <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); j.db.Stats().WaitCount == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second write never waited for the connection")
		}
	}
	close(release)
	if err := <-errA; !errors.Is(err, ErrStorage) {
		t.Fatalf("the write whose fsync failed: %v", err)
	}
	b := <-errB
	got, err := j.Get(ctx, o.MchOrderNo)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(b, ErrStorage) || got.State != StateArmed {
		t.Fatalf("a write after the failed fsync: order %s, AttachCode returned %v", got.State, b)
	}
}

// A journal closed after a failed fsync is not marked clean: the next
// start reads the whole file.
func TestCloseAfterAFailedFsyncLeavesItUnclean(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal.db")
	opts := Options{Exclusive: true, TrackCleanStop: true}
	j, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	failFsync(j)
	if _, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 100, Currency: "CAD", Source: "keypad"}, num); !errors.Is(err, ErrStorage) {
		t.Fatalf("an arm whose fsync failed: %v", err)
	}
	j.Close()
	j, err = Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if !j.CheckedAtOpen {
		t.Fatal("the next start skipped the full check")
	}
}

// failingRollback is a ROLLBACK the disk refuses.
type failingRollback struct{ driver.Stmt }

func (failingRollback) ExecContext(context.Context, []driver.NamedValue) (driver.Result, error) {
	return nil, errors.New("rollback failed (injected)")
}

// When the ROLLBACK after a refusal fails, the write is a storage failure,
// not the refusal (callers carry on from a conflict), and the connection,
// still inside its transaction, is not handed back: the next write works.
func TestFailedRollbackIsAStorageFailure(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{Exclusive: true})
	o := armKeypad(t, j, 100)
	j.raw.mu.Lock()
	rc := j.raw.conn
	rc.rollback = failingRollback{rc.rollback}
	j.raw.mu.Unlock()
	_, err := j.Transition(ctx, o.MchOrderNo, StateSubmitting, StatePolling, Update{Status: -1})
	if !errors.Is(err, ErrStorage) || errors.Is(err, ErrStateChanged) {
		t.Fatalf("a refusal whose rollback failed returned %v", err)
	}
	if _, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 200, Currency: "CAD", Source: "keypad"}, num); err != nil {
		t.Fatalf("the next write: %v", err)
	}
	if currentRawConn(j) == rc {
		t.Fatal("the connection whose rollback failed was used again")
	}
}
