package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
)

// A write without fsync that its caller stops midway (the daemon's stop)
// is an interrupted write, not a storage failure, and never leaves the
// journal's connection committing without fsync.
func TestUnsyncedWriteCutShort(t *testing.T) {
	j, _ := openTemp(t, Options{})
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		err := j.writeUnsynced(ctx, "cut short", func(_ context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO meta(key, value) VALUES ('cut', 'x')`); err != nil {
				return err
			}
			// The stop lands mid-transaction: database/sql rolls it back
			// from a goroutine of its own, racing the writer's return.
			cancel()
			return ctx.Err()
		})
		if err == nil || !Interrupted(err) {
			t.Fatalf("round %d: a write cut short returned %v", i, err)
		}
		var level int
		if err := j.db.QueryRow(`PRAGMA synchronous`).Scan(&level); err != nil || level != 2 {
			t.Fatalf("round %d: the connection is left at synchronous=%d (%v), want FULL (2)", i, level, err)
		}
		synced := j.SyncedCommits()
		if _, err := j.ArmOrder(context.Background(), Armed{TerminalID: "L01", Amount: 100, Currency: "CAD", Source: "keypad"}, num); err != nil {
			t.Fatalf("round %d: the next write failed: %v", i, err)
		}
		if j.SyncedCommits() != synced+1 {
			t.Fatalf("round %d: the next write was not synced", i)
		}
	}
}

// The statements of a write run on a context that is never cancelled (the
// driver would watch it with a goroutine each), yet a stop still ends the
// write: the commit after it fails as interrupted, nothing of it is on
// disk, and a refusal met as the stop lands (an order that moved on) is
// returned as a refusal, never as a storage failure, with the connection
// never left committing without fsync.
func TestStopEndsAWriteBetweenStatements(t *testing.T) {
	j, _ := openTemp(t, Options{})
	for i := 0; i < 1500; i++ {
		synced, refuse := i%3 == 0, i%2 == 1
		ctx, cancel := context.WithCancel(context.Background())
		fn := func(sctx context.Context, tx *sql.Tx) error {
			if sctx.Done() != nil {
				t.Error("the statements' context can be cancelled")
			}
			if _, err := tx.ExecContext(sctx, `INSERT OR REPLACE INTO meta(key, value) VALUES ('stopped', 'x')`); err != nil {
				return err
			}
			cancel()
			if refuse {
				return fmt.Errorf("%w: refused as the stop came", ErrStateChanged)
			}
			// A statement after the stop: it may meet the rollback.
			_, err := tx.ExecContext(sctx, `INSERT OR REPLACE INTO meta(key, value) VALUES ('stopped2', 'x')`)
			return err
		}
		var err error
		if synced {
			err = j.write(ctx, "stopped", fn)
		} else {
			err = j.writeUnsynced(ctx, "stopped", fn)
		}
		switch {
		case refuse && !errors.Is(err, ErrStateChanged):
			t.Fatalf("round %d (synced=%v): a refusal met as the stop came returned %v", i, synced, err)
		case !refuse && !Interrupted(err):
			t.Fatalf("round %d (synced=%v): a write stopped before its commit returned %v", i, synced, err)
		case errors.Is(err, ErrStorage) && !Interrupted(err):
			t.Fatalf("round %d (synced=%v): a stop reported as a storage failure: %v", i, synced, err)
		}
		var n, level int
		if err := j.db.QueryRow(`SELECT COUNT(*) FROM meta WHERE key IN ('stopped', 'stopped2')`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("round %d: the stopped write left %d rows (%v)", i, n, err)
		}
		if err := j.db.QueryRow(`PRAGMA synchronous`).Scan(&level); err != nil || level != 2 {
			t.Fatalf("round %d: the connection is left at synchronous=%d (%v), want FULL (2)", i, level, err)
		}
	}
}
