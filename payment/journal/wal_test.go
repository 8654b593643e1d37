package journal

import (
	"context"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// armKeypad arms a keypad order of amount, failing the test if it cannot.
func armKeypad(t *testing.T, j *Journal, amount int64) Order {
	t.Helper()
	o, err := j.ArmOrder(context.Background(), Armed{TerminalID: "L01", Amount: amount, Currency: "CAD", Source: "keypad"}, num)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// currentRawConn is the connection writes run on now.
func currentRawConn(j *Journal) *rawConn {
	j.raw.mu.Lock()
	defer j.raw.mu.Unlock()
	return j.raw.conn
}

func walSyncs(j *Journal) int {
	j.wal.mu.Lock()
	defer j.wal.mu.Unlock()
	return j.wal.syncs
}

// Every synced commit fdatasyncs the WAL, and no unsynced one does: a
// register sale is two of each.
func TestSyncedCommitsFsyncTheWAL(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{Exclusive: true})
	fsyncs, synced := walSyncs(j), j.SyncedCommits()
	o, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 500, Currency: "CAD", Source: "ecr", ECRRef: "INV1"}, num)
	if err != nil {
		t.Fatal(err)
	}
	if walSyncs(j) != fsyncs+1 {
		t.Fatal("the arm was not fsync'd")
	}
	if _, err := j.AttachCode(ctx, o.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****0001", CodeHash: "h1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Settle(ctx, o.MchOrderNo, StateSubmitting, StatePaid, Update{PayOrderID: "AM1", Status: 2}); err != nil {
		t.Fatal(err)
	}
	if walSyncs(j) != fsyncs+1 || !j.Unsynced() {
		t.Fatalf("the code link and outcome made %d fsyncs (unsynced %v), want none", walSyncs(j)-fsyncs-1, j.Unsynced())
	}
	if err := j.MarkTaken(ctx, o.MchOrderNo); err != nil {
		t.Fatal(err)
	}
	if walSyncs(j) != fsyncs+2 || j.SyncedCommits() != synced+2 || j.Unsynced() {
		t.Fatalf("a sale made %d fsyncs for %d synced commits (unsynced %v)", walSyncs(j)-fsyncs, j.SyncedCommits()-synced, j.Unsynced())
	}
}

// When SQLite deletes the WAL (its last connection closed: the pool may
// replace a broken one) and makes a new one, the next synced commit
// fsyncs the new file, not the descriptor of the deleted one.
func TestWALSyncFollowsANewWALFile(t *testing.T) {
	j, path := openTemp(t, Options{Exclusive: true})
	armKeypad(t, j, 500)
	before, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	// Close the pool's only connection: SQLite checkpoints and deletes
	// the WAL.
	j.db.SetMaxIdleConns(0)
	j.db.SetMaxIdleConns(1)
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the WAL outlived its last connection: %v", err)
	}
	armKeypad(t, j, 600)
	now, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, now) {
		t.Skip("the new WAL reused the old one's inode; nothing to tell apart")
	}
	j.wal.mu.Lock()
	synced, err := j.wal.f.Stat()
	j.wal.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(synced, now) {
		t.Fatal("the synced commit fsync'd the deleted WAL, not the new one")
	}
}

// A failed fdatasync is a storage failure (the engine stops on it), never
// retried but on EINTR, and it covers nothing that waited for it.
func TestFailedWALSyncIsAStorageFailure(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{Exclusive: true})
	o := armKeypad(t, j, 500)
	if _, err := j.AttachCode(ctx, o.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****0001", CodeHash: "h1"}); err != nil {
		t.Fatal(err)
	}
	calls := 0
	j.wal.mu.Lock()
	j.wal.fdatasync = func(int) error {
		calls++
		if calls == 1 {
			return unix.EINTR
		}
		return unix.EIO
	}
	j.wal.mu.Unlock()
	err := j.MarkTaken(ctx, o.MchOrderNo)
	if !errors.Is(err, ErrStorage) || !errors.Is(err, unix.EIO) {
		t.Fatalf("a failed fdatasync returned %v", err)
	}
	if calls != 2 {
		t.Fatalf("fdatasync called %d times, want 2 (EINTR once, then EIO and no retry)", calls)
	}
	if !j.Unsynced() {
		t.Fatal("a failed fsync covered the code's unsynced link")
	}

	// A WAL that is not there is a failure too, not a silent success.
	j.wal.mu.Lock()
	j.wal.fdatasync = nil
	j.wal.path += ".gone"
	j.wal.mu.Unlock()
	if err := j.Sync(ctx); !errors.Is(err, ErrStorage) {
		t.Fatalf("a sync without its WAL returned %v", err)
	}
}

// When the pool replaces the journal's connection, writes prepare their
// statements on the new one and go on; the old connection's are never
// used again.
func TestWritesFollowANewConnection(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{Exclusive: true})
	o := armKeypad(t, j, 500)
	before := currentRawConn(j)
	j.db.SetMaxIdleConns(0) // the connection is closed, as a broken one would be
	j.db.SetMaxIdleConns(1)
	if _, err := j.AttachCode(ctx, o.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****0001", CodeHash: "h1"}); err != nil {
		t.Fatal(err)
	}
	after := currentRawConn(j)
	if after == before || after.dc == before.dc {
		t.Fatal("the write ran on the closed connection's statements")
	}
	if before.byStmt != nil {
		t.Fatal("the closed connection's statements were not finalized")
	}
	if got, err := j.Get(ctx, o.MchOrderNo); err != nil || got.State != StateSubmitting || got.CodeHash != "h1" {
		t.Fatalf("after the new connection: %+v %v", got, err)
	}
}
