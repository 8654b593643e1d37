package journal

import (
	"context"
	"testing"
)

// A sale's code link and outcome are committed without their own fsync;
// the journal knows they wait for one, Sync (or any synced commit) covers
// them, and the outbox holds their events back until then: head office
// must never take an event a power cut can undo.
func TestUnsyncedCommitsAndTheOutbox(t *testing.T) {
	ctx := context.Background()
	j, ob := daemonWithFleet(t)
	seqs := func() []uint64 {
		t.Helper()
		var out []uint64
		for _, e := range pending(t, ob) {
			out = append(out, e.Seq)
		}
		return out
	}

	if j.Unsynced() || j.UndurableFrom() != 0 {
		t.Fatal("a new journal waits for an fsync")
	}
	synced, commits := j.SyncedCommits(), j.Commits()
	if err := j.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if j.Commits() != commits {
		t.Fatal("Sync with nothing waiting committed")
	}

	o, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 500, Currency: "CAD", Source: "keypad"}, num)
	if err != nil {
		t.Fatal(err)
	}
	armSeqs := seqs()
	if j.Unsynced() || len(armSeqs) == 0 {
		t.Fatalf("after the arm: unsynced %v, events %v", j.Unsynced(), armSeqs)
	}
	o, err = j.AttachCode(ctx, o.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****0001", CodeHash: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	attachFrom := j.UndurableFrom()
	if !j.Unsynced() || attachFrom == 0 {
		t.Fatalf("after the code's link: unsynced %v, held from %d", j.Unsynced(), attachFrom)
	}
	if _, err := j.Settle(ctx, o.MchOrderNo, StateSubmitting, StatePaid, Update{PayOrderID: "AM1", Status: 2}); err != nil {
		t.Fatal(err)
	}
	if got := j.UndurableFrom(); got != attachFrom {
		t.Fatalf("held from %d after the outcome, want the code link's %d", got, attachFrom)
	}
	if got, _ := j.Get(ctx, o.MchOrderNo); got.State != StatePaid {
		t.Fatalf("settled order reads %s", got.State)
	}
	if got := seqs(); len(got) != len(armSeqs) {
		t.Fatalf("events %v went out before an fsync covered them (durable: %v)", got, armSeqs)
	}
	if j.SyncedCommits() != synced+1 {
		t.Fatalf("%d synced commits, want only the arm's", j.SyncedCommits()-synced)
	}

	if err := j.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if j.Unsynced() || j.UndurableFrom() != 0 || j.SyncedCommits() != synced+2 {
		t.Fatalf("after Sync: unsynced %v, held from %d, %d synced commits", j.Unsynced(), j.UndurableFrom(), j.SyncedCommits()-synced)
	}
	if got := seqs(); len(got) != len(armSeqs)+2 {
		t.Fatalf("after Sync the outbox holds %v, want the arm's %v and two more", got, armSeqs)
	}
	if err := j.Sync(ctx); err != nil || j.SyncedCommits() != synced+2 {
		t.Fatalf("a second Sync wrote again: %v", err)
	}

	// Any synced commit covers what came before it, as Sync does.
	o2, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 600, Currency: "CAD", Source: "keypad"}, num)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.AttachCode(ctx, o2.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****0002", CodeHash: "h2"}); err != nil {
		t.Fatal(err)
	}
	if !j.Unsynced() {
		t.Fatal("the code's link was synced")
	}
	if err := j.MarkTaken(ctx, o.MchOrderNo); err != nil {
		t.Fatal(err)
	}
	if j.Unsynced() || j.UndurableFrom() != 0 {
		t.Fatalf("a synced commit left unsynced %v, held from %d", j.Unsynced(), j.UndurableFrom())
	}

	// A logical failure commits nothing and covers nothing.
	if _, err := j.AttachCode(ctx, o2.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "x", CodeHash: "h3"}); err == nil {
		t.Fatal("attached a code twice")
	}
	if _, err := j.Settle(ctx, o2.MchOrderNo, StateSubmitting, StateDeclined, Update{Status: 3}); err != nil {
		t.Fatal(err)
	}
	held := j.UndurableFrom()
	if _, err := j.Transition(ctx, o2.MchOrderNo, StateSubmitting, StatePaid, Update{Status: 2}); err == nil {
		t.Fatal("moved from a state the order left")
	}
	if !j.Unsynced() || j.UndurableFrom() != held {
		t.Fatalf("a rolled-back synced write covered the outcome: unsynced %v, held from %d (was %d)", j.Unsynced(), j.UndurableFrom(), held)
	}
}

// daemonWithFleet is a journal opened as the daemon opens it, with the
// fleet link on and the publisher's outbox holding back what a power cut
// could undo.
func daemonWithFleet(t *testing.T) (*Journal, *Outbox) {
	t.Helper()
	j, path := openTemp(t, Options{Exclusive: true})
	if err := j.SetFleet(context.Background(), "L01", 1000); err != nil {
		t.Fatal(err)
	}
	ob, err := OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	ob.HoldUndurable(j.UndurableFrom)
	return j, ob
}
