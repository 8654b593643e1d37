package journal

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scanpay/scanpay/fleet/event"
)

func pending(t *testing.T, ob *Outbox) []event.Event {
	t.Helper()
	ps, err := ob.Pending(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Event
	for _, p := range ps {
		e, err := event.Parse(p.Event, "L01")
		if err != nil {
			t.Fatalf("outbox event %d does not parse: %v\n%s", p.Seq, err, p.Event)
		}
		if e.Seq != p.Seq {
			t.Fatalf("row %d holds event %d", p.Seq, e.Seq)
		}
		out = append(out, e)
	}
	return out
}

// With the fleet off nothing is written; with it on, every order and refund
// transaction writes its event in the same commit (no extra fsync), in
// sequence, carrying the masked code and never the code's hash.
func TestOutboxEventsInTheSameTransaction(t *testing.T) {
	ctx := context.Background()
	j, path := openTemp(t, Options{})
	if _, err := j.AddOrder(ctx, newOrder("h0", 100), num); err != nil {
		t.Fatal(err)
	}
	ob, err := OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	if evs := pending(t, ob); len(evs) != 0 {
		t.Fatalf("fleet off, yet %d events", len(evs))
	}
	if err := j.SetFleet(ctx, "L01", 1000); err != nil {
		t.Fatal(err)
	}
	// Switching on sends a snapshot of the order written while off.
	evs := pending(t, ob)
	if len(evs) != 1 || evs[0].Kind != event.KindSnapshot || evs[0].Order.MchOrderNo != "L01-00000001-TEST" {
		t.Fatalf("snapshot %+v", evs)
	}

	before := j.Commits()
	o, err := j.AddOrder(ctx, newOrder("secret-hash-1", 2865), num)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Transition(ctx, o.MchOrderNo, StateSubmitting, StatePolling, Update{Status: 1, Message: "waiting"}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Transition(ctx, o.MchOrderNo, StatePolling, StatePaid, Update{PayOrderID: "AM1", Status: 2}); err != nil {
		t.Fatal(err)
	}
	r, err := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 1000, Source: RefundByOperator}, func(n uint64) string { return fmt.Sprintf("L01R%d", n) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.FinishRefund(ctx, r.MchRefundNo, RefundDone, ""); err != nil {
		t.Fatal(err)
	}
	if got := j.Commits() - before; got != 5 {
		t.Fatalf("%d commits for 5 changes: the events must ride in the same transactions", got)
	}
	evs = pending(t, ob)[1:]
	want := []struct {
		kind, state, refund string
		refunded            int64
	}{{"order", "SUBMITTING", "", 0}, {"order", "POLLING", "", 0}, {"order", "PAID", "", 0}, {"refund", "PAID", "SENT", 0}, {"refund", "PAID", "DONE", 1000}}
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d", len(evs), len(want))
	}
	for i, w := range want {
		e := evs[i]
		rs := ""
		if e.Refund != nil {
			rs = e.Refund.State
		}
		if e.Seq != uint64(i+2) || e.Kind != w.kind || e.Order.State != w.state || rs != w.refund || e.Order.Refunded != w.refunded ||
			e.Lane != "L01" || e.Order.Amount != 2865 || e.Order.CodeMasked != "13****6789" {
			t.Fatalf("event %d: %+v (refund %+v)", i, e, e.Refund)
		}
	}
	raw, _ := ob.Pending(ctx, 0, 100)
	for _, p := range raw {
		if strings.Contains(string(p.Event), "secret-hash") || strings.Contains(string(p.Event), "codeHash") {
			t.Fatalf("an event carries the code hash: %s", p.Event)
		}
	}

	// Acknowledged events leave; the sequence never restarts.
	if err := ob.Ack(ctx, 4); err != nil {
		t.Fatal(err)
	}
	st, err := ob.Stats(ctx)
	if err != nil || st.Backlog != 2 || st.LastSeq != 6 || st.Lane != "L01" || st.Oldest.IsZero() {
		t.Fatalf("stats %+v, %v", st, err)
	}
	if err := ob.Ack(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Transition(ctx, o.MchOrderNo, StatePaid, StatePaid, Update{Status: 2, Message: "again"}); err != nil {
		t.Fatal(err)
	}
	if evs := pending(t, ob); len(evs) != 1 || evs[0].Seq != 7 {
		t.Fatalf("after acks: %+v", evs)
	}

	// Off again: nothing more is written.
	if err := j.SetFleet(ctx, "", 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := j.AddOrder(ctx, newOrder("h9", 100), num); err != nil {
		t.Fatal(err)
	}
	if st, _ := ob.Stats(ctx); st.LastSeq != 7 {
		t.Fatalf("fleet off still emits: %+v", st)
	}
}

// Past the bound the oldest unsent events go, counted, and sales go on.
func TestOutboxBounded(t *testing.T) {
	ctx := context.Background()
	j, path := openTemp(t, Options{})
	if err := j.SetFleet(ctx, "L01", 3); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := j.AddOrder(ctx, newOrder(fmt.Sprint("h", i), 100), num); err != nil {
			t.Fatal(err)
		}
	}
	ob, err := OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	st, err := ob.Stats(ctx)
	if err != nil || st.Backlog != 3 || st.Dropped != 2 || st.LastSeq != 5 {
		t.Fatalf("stats %+v, %v", st, err)
	}
	if evs := pending(t, ob); evs[0].Seq != 3 {
		t.Fatalf("oldest kept %d", evs[0].Seq)
	}
	if err := j.SetFleet(ctx, "bad lane!", 10); err == nil {
		t.Fatal("bad lane accepted")
	}
}

// A journal written by the previous scanpay (schema 3) gains the outbox.
func TestMigrateToOutbox(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schema + `INSERT INTO meta(key, value) VALUES ('schema_version', '3'),
		('code_secret', '00112233445566778899aabbccddeeff'), ('clean_stop', '1');`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if ro, err := Open(path, Options{ReadOnly: true}); err == nil {
		ro.Close()
		t.Fatal("a read-only open cannot migrate, yet it accepted schema 3")
	}
	if _, err := OpenOutbox(path); err == nil {
		t.Fatal("outbox opened before the migration")
	}
	j, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var v int
	if err := j.db.QueryRow(`SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("schema %d, %v", v, err)
	}
	ctx := context.Background()
	if err := j.SetFleet(ctx, "L01", 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := j.AddOrder(ctx, newOrder("h1", 100), num); err != nil {
		t.Fatal(err)
	}
	ob, err := OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	if evs := pending(t, ob); len(evs) != 1 {
		t.Fatalf("%d events after migration", len(evs))
	}
}

// A register sale's journal work, as the daemon does it: armed (synced),
// code attached and outcome settled (unsynced), taken by the register
// (synced); with and without the outbox. Count the fsyncs themselves with
// strace -f -c -e trace=fsync,fdatasync on the test binary.
//
//	GOMAXPROCS=1 go test -run '^$' -bench BenchmarkSaleJournal ./payment/journal
func BenchmarkSaleJournal(b *testing.B) {
	for _, fleet := range []bool{false, true} {
		b.Run(fmt.Sprintf("fleet=%v", fleet), func(b *testing.B) {
			// The daemon's context can be cancelled (its stop), and that
			// costs database/sql and the driver goroutines of their own.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			j, err := Open(filepath.Join(b.TempDir(), "j.db"), Options{Exclusive: true}) // as the daemon opens it
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			lane := ""
			if fleet {
				lane = "L01"
			}
			if err := j.SetFleet(ctx, lane, 10000000); err != nil {
				b.Fatal(err)
			}
			before, synced := j.Commits(), j.SyncedCommits()
			var ru0 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				// Register references and code hashes spread over their
				// indexes as real ones do.
				o, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 2865, Currency: "CAD", Source: "ecr", ECRRef: fmt.Sprintf("INV%06d", i*7919%1000003)},
					func(n uint64) string { return fmt.Sprintf("L01-%08d", n) })
				if err != nil {
					b.Fatal(err)
				}
				hash := fmt.Sprintf("%016x", uint64(i)*0x9E3779B97F4A7C15)
				if _, err := j.AttachCode(ctx, o.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****6789", CodeHash: hash}); err != nil {
					b.Fatal(err)
				}
				if _, err := j.Settle(ctx, o.MchOrderNo, StateSubmitting, StatePaid, Update{PayOrderID: fmt.Sprint("AM", i), Status: 2}); err != nil {
					b.Fatal(err)
				}
				if err := j.MarkTaken(ctx, o.MchOrderNo); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			var ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/sale")
			b.ReportMetric(float64(j.Commits()-before)/float64(b.N), "commits/sale")
			b.ReportMetric(float64(j.SyncedCommits()-synced)/float64(b.N), "synced/sale")
		})
	}
}

// The publisher never takes an event that a power cut could still undo,
// even when the commit that wrote it lands while the publisher reads: the
// hold is set before such a commit becomes visible, and read after the
// rows.
func TestOutboxHoldRacesACommit(t *testing.T) {
	ctx := context.Background()
	j, path := openTemp(t, Options{Exclusive: true})
	if err := j.SetFleet(ctx, "L01", 1000); err != nil {
		t.Fatal(err)
	}
	o, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 500, Currency: "CAD", Source: "keypad"}, num)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := OpenOutbox(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	raced := false
	ob.HoldUndurable(func() uint64 {
		h := j.UndurableFrom()
		if !raced {
			// An unsynced commit in the middle of the publisher's read.
			raced = true
			if _, err := j.AttachCode(ctx, o.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****0001", CodeHash: "h1"}); err != nil {
				t.Error(err)
			}
		}
		return h
	})
	for round := 0; round < 2; round++ {
		for _, e := range pending(t, ob) {
			if e.Order.State != "ARMED" {
				t.Fatalf("round %d: the publisher took event %d (%s), written without fsync", round, e.Seq, e.Order.State)
			}
		}
	}
	if err := j.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if evs := pending(t, ob); len(evs) == 0 || evs[len(evs)-1].Order.State != "SUBMITTING" {
		t.Fatalf("after the sync the code's event should go: %+v", evs)
	}
}
