package journal

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// A write without fsync that its caller stops midway (the daemon's stop)
// is an interrupted write, not a storage failure, and the next synced
// write still fsyncs.
func TestUnsyncedWriteCutShort(t *testing.T) {
	j, _ := openTemp(t, Options{Exclusive: true})
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		err := j.writeUnsynced(ctx, "cut short", func(t *wtx) error {
			if _, err := t.execText(`INSERT OR REPLACE INTO meta(key, value) VALUES ('cut', 'x')`); err != nil {
				return err
			}
			// The stop lands mid-transaction, and the writer returns it.
			cancel()
			return ctx.Err()
		})
		if err == nil || !Interrupted(err) {
			t.Fatalf("round %d: a write cut short returned %v", i, err)
		}
		synced, fsyncs := j.SyncedCommits(), walSyncs(j)
		if _, err := j.ArmOrder(context.Background(), Armed{TerminalID: "L01", Amount: 100, Currency: "CAD", Source: "keypad"}, num); err != nil {
			t.Fatalf("round %d: the next write failed: %v", i, err)
		}
		if j.SyncedCommits() != synced+1 || walSyncs(j) != fsyncs+1 {
			t.Fatalf("round %d: the next write was not synced", i)
		}
	}
}

// The statements of a write are not watched for a stop (they take
// microseconds; watching costs goroutines), yet a stop still ends the
// write: the commit after it is refused as interrupted, nothing of it is
// on disk, and a refusal met as the stop lands (an order that moved on) is
// returned as a refusal, never as a storage failure, and fsyncs nothing.
func TestStopEndsAWriteBetweenStatements(t *testing.T) {
	j, _ := openTemp(t, Options{Exclusive: true})
	for i := 0; i < 1500; i++ {
		synced, refuse := i%3 == 0, i%2 == 1
		ctx, cancel := context.WithCancel(context.Background())
		fn := func(w *wtx) error {
			if _, err := w.execText(`INSERT OR REPLACE INTO meta(key, value) VALUES ('stopped', 'x')`); err != nil {
				return err
			}
			cancel()
			if refuse {
				return fmt.Errorf("%w: refused as the stop came", ErrStateChanged)
			}
			// A statement after the stop still runs; the commit does not.
			_, err := w.execText(`INSERT OR REPLACE INTO meta(key, value) VALUES ('stopped2', 'x')`)
			return err
		}
		fsyncs := walSyncs(j)
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
		var n int
		if err := j.db.QueryRow(`SELECT COUNT(*) FROM meta WHERE key IN ('stopped', 'stopped2')`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("round %d: the stopped write left %d rows (%v)", i, n, err)
		}
		if walSyncs(j) != fsyncs {
			t.Fatalf("round %d (synced=%v): a write that did not commit fsync'd", i, synced)
		}
	}
}
