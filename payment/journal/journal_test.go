package journal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"modernc.org/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openTemp(t *testing.T, opts Options) (*Journal, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j, path
}

func num(c uint64) string { return fmt.Sprintf("L01-%08d-TEST", c) }

func newOrder(hash string, amount int64) NewOrder {
	return NewOrder{TerminalID: "L01", Amount: amount, Currency: "CAD", Channel: "WX_MICROPAY",
		CodeMasked: "13****6789", CodeHash: hash, Source: "keypad", ECRRef: "REF1"}
}

func TestOrderLifecycle(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{})
	o, err := j.AddOrder(ctx, newOrder("h1", 2865), num)
	if err != nil {
		t.Fatal(err)
	}
	if o.MchOrderNo != "L01-00000001-TEST" || o.State != StateSubmitting || j.Commits() != 1 {
		t.Fatalf("added %+v after %d commits", o, j.Commits())
	}
	if _, err := j.AddOrder(ctx, newOrder("h1", 100), num); !errors.Is(err, ErrCodeUsed) {
		t.Fatalf("reused code: %v", err)
	}
	if used, err := j.CodeUsed(ctx, "h1"); err != nil || !used {
		t.Fatalf("CodeUsed = %v, %v", used, err)
	}
	o2, _ := j.AddOrder(ctx, newOrder("h2", 100), num)
	if o2.MchOrderNo != "L01-00000002-TEST" {
		t.Fatalf("counter did not advance: %s", o2.MchOrderNo)
	}
	if _, err := j.Transition(ctx, o.MchOrderNo, StateSubmitting, StateLatePaid, Update{Status: -1}); !errors.Is(err, ErrInvalidTransition) {
		t.Fatalf("SUBMITTING → LATE_PAID allowed: %v", err)
	}
	if _, err := j.Transition(ctx, o.MchOrderNo, StatePolling, StatePaid, Update{Status: 2}); !errors.Is(err, ErrStateChanged) {
		t.Fatalf("wrong from-state accepted: %v", err)
	}
	if _, err := j.Transition(ctx, "nope", StateSubmitting, StatePaid, Update{Status: 2}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown order: %v", err)
	}
	p, err := j.Transition(ctx, o.MchOrderNo, StateSubmitting, StatePolling, Update{PayOrderID: "AM1", Status: 1, Message: "customer paying"})
	if err != nil || p.State != StatePolling || p.PayOrderID != "AM1" || p.Status != 1 {
		t.Fatalf("to polling: %+v %v", p, err)
	}
	p, err = j.Transition(ctx, o.MchOrderNo, StatePolling, StatePaid, Update{Status: 2})
	if err != nil || p.PayOrderID != "AM1" || p.Status != 2 {
		t.Fatalf("to paid: %+v %v", p, err)
	}
	hist, _ := j.History(ctx, o.MchOrderNo)
	var moves []string
	for _, h := range hist {
		moves = append(moves, h.From+">"+h.To)
	}
	if got := strings.Join(moves, " "); got != ">SUBMITTING SUBMITTING>POLLING POLLING>PAID" {
		t.Fatalf("history %s", got)
	}
	open, _ := j.OpenOrders(ctx)
	if len(open) != 1 || open[0].MchOrderNo != o2.MchOrderNo {
		t.Fatalf("open orders %+v", open)
	}
	if last, err := j.LastByRef(ctx, "REF1"); err != nil || last.MchOrderNo != o2.MchOrderNo {
		t.Fatalf("LastByRef %+v %v", last, err)
	}
	if last, err := j.LastPaid(ctx); err != nil || last.MchOrderNo != o.MchOrderNo {
		t.Fatalf("LastPaid %+v %v", last, err)
	}
	if f, err := j.Find(ctx, "AM1"); err != nil || f.MchOrderNo != o.MchOrderNo {
		t.Fatalf("Find by payOrderId %+v %v", f, err)
	}
	paid, _ := j.Orders(ctx, Filter{States: []State{StatePaid}})
	if len(paid) != 1 {
		t.Fatalf("paid filter %+v", paid)
	}
}

func TestRefunds(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{})
	rnum := func(c uint64) string { return fmt.Sprintf("R-%d", c) }
	o, _ := j.AddOrder(ctx, newOrder("h", 1000), num)
	if _, err := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 100}, rnum); !errors.Is(err, ErrNotRefundable) {
		t.Fatalf("refund of unpaid order: %v", err)
	}
	j.Transition(ctx, o.MchOrderNo, StateSubmitting, StatePaid, Update{PayOrderID: "AM1", Status: 2})
	r1, err := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 600}, rnum)
	if err != nil || r1.State != RefundSent {
		t.Fatal(r1, err)
	}
	// An uncertain refund still counts: no second refund may exceed the rest.
	if _, err := j.FinishRefund(ctx, r1.MchRefundNo, RefundUnknown, "reply lost"); err != nil {
		t.Fatal(err)
	}
	if _, err := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 500}, rnum); !errors.Is(err, ErrRefundTooLarge) {
		t.Fatalf("over-refund: %v", err)
	}
	if _, err := j.FinishRefund(ctx, r1.MchRefundNo, RefundDone, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := j.FinishRefund(ctx, r1.MchRefundNo, RefundDone, ""); !errors.Is(err, ErrStateChanged) {
		t.Fatalf("refund finished twice: %v", err)
	}
	got, _ := j.Get(ctx, o.MchOrderNo)
	if got.Refunded != 600 {
		t.Fatalf("refunded %d", got.Refunded)
	}
	r2, _ := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 400}, rnum)
	j.FinishRefund(ctx, r2.MchRefundNo, RefundFailed, "refused")
	if _, err := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 400}, rnum); err != nil {
		t.Fatalf("a failed refund must free its amount: %v", err)
	}
	all, _ := j.Refunds(ctx, o.MchOrderNo)
	if len(all) != 3 {
		t.Fatalf("refunds %+v", all)
	}
}

func TestDailyTotals(t *testing.T) {
	ctx := context.Background()
	clock := time.Date(2026, 11, 26, 23, 30, 0, 0, time.UTC)
	j, _ := openTemp(t, Options{Now: func() time.Time { return clock }})
	add := func(hash string, amount int64, to State) {
		o, err := j.AddOrder(ctx, newOrder(hash, amount), func(c uint64) string { return fmt.Sprintf("N%d", c) })
		if err != nil {
			t.Fatal(err)
		}
		if to != StateSubmitting {
			j.Transition(ctx, o.MchOrderNo, StateSubmitting, to, Update{Status: -1})
		}
	}
	add("a", 100, StatePaid)
	clock = clock.Add(time.Hour) // next UTC day
	add("b", 200, StatePaid)
	add("c", 300, StatePaid)
	add("d", 51, StateDeclined)
	totals, err := j.DailyTotals(ctx, time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"2026-11-26 PAID 1 100", "2026-11-27 PAID 2 500", "2026-11-27 DECLINED 1 51"}
	if len(totals) != len(want) {
		t.Fatalf("totals %+v", totals)
	}
	for i, w := range want {
		got := fmt.Sprintf("%s %s %d %d", totals[i].Day, totals[i].State, totals[i].Count, totals[i].Amount)
		if got != w {
			t.Errorf("line %d: %s, want %s", i, got, w)
		}
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	j, path := openTemp(t, Options{})
	o, _ := j.AddOrder(ctx, newOrder("h", 1000), num)
	secret := j.Secret()
	j.Close()
	j2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if !bytes.Equal(secret, j2.Secret()) {
		t.Fatal("code secret changed across reopen")
	}
	if got, err := j2.Get(ctx, o.MchOrderNo); err != nil || got.State != StateSubmitting {
		t.Fatalf("%+v %v", got, err)
	}
	if o2, _ := j2.AddOrder(ctx, newOrder("h2", 1), num); o2.MchOrderNo != "L01-00000002-TEST" {
		t.Fatalf("counter not persisted: %s", o2.MchOrderNo)
	}
}

// fill writes enough orders that the tables span many pages.
func fill(t *testing.T, path string) {
	t.Helper()
	j, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if _, err := j.AddOrder(context.Background(), newOrder(fmt.Sprintf("hash-%04d-%s", i, strings.Repeat("x", 40)), 100), num); err != nil {
			t.Fatal(err)
		}
	}
	// Checkpoint so the damage below hits the main file, then close.
	if _, err := j.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	j.Close()
}

func TestDamagedJournalRefused(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"truncated", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"bit flips in table pages", func(t *testing.T, path string) {
			b, _ := os.ReadFile(path)
			for off := 4096 * 3; off < len(b); off += 4096 {
				for k := 0; k < 64; k++ {
					b[off+100+k*7] ^= 0x5a
				}
			}
			os.WriteFile(path, b, 0o600)
		}},
		{"header destroyed", func(t *testing.T, path string) {
			b, _ := os.ReadFile(path)
			copy(b, "this is not sqlite")
			os.WriteFile(path, b, 0o600)
		}},
		{"empty file", func(t *testing.T, path string) { os.WriteFile(path, nil, 0o600) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "journal.db")
			fill(t, path)
			tc.damage(t, path)
			before, _ := os.ReadFile(path)
			j, err := Open(path, Options{})
			if err == nil {
				j.Close()
				t.Fatal("damaged journal opened")
			}
			if !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), path) {
				t.Fatalf("unclear error: %v", err)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Fatal("the damaged file was modified (silent reset?)")
			}
		})
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	j, path := openTemp(t, Options{})
	j.db.Exec(`UPDATE meta SET value = '99' WHERE key = 'schema_version'`)
	j.Close()
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("newer schema: %v", err)
	}
}

func TestDiskFullIsStorageError(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{MaxPages: 12})
	var err error
	for i := 0; i < 500 && err == nil; i++ {
		_, err = j.AddOrder(ctx, newOrder(fmt.Sprintf("%d-%s", i, strings.Repeat("y", 200)), 100), num)
	}
	if !errors.Is(err, ErrStorage) {
		t.Fatalf("a full disk must surface as ErrStorage, got %v", err)
	}
	// The cause survives the wrapping: SQLITE_FULL (13) from the driver.
	var se *sqlite.Error
	if !errors.As(err, &se) || se.Code()&0xff != 13 {
		t.Fatalf("a full disk lost its cause: %v", err)
	}
}

func TestReadOnlyMissing(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "none.db"), Options{ReadOnly: true}); err == nil {
		t.Fatal("read-only open created a journal")
	}
}

func TestStateNames(t *testing.T) {
	for s := StateSubmitting; s <= StateLatePaid; s++ {
		back, err := ParseState(s.String())
		if err != nil || back != s {
			t.Errorf("%d: %s → %v %v", s, s, back, err)
		}
	}
	if _, err := ParseState("BOGUS"); err == nil {
		t.Error("bogus state parsed")
	}
}

// Interrupted tells a write its caller's stop cut short (nothing on disk,
// not fatal) from one the disk refused (fatal).
func TestInterruptedTellsStopFromDisk(t *testing.T) {
	j, _ := openTemp(t, Options{})
	armed := Armed{TerminalID: "L01", Amount: 100, Currency: "CAD", Source: "keypad"}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := j.ArmOrder(ctx, armed, num)
	if err == nil || !Interrupted(err) {
		t.Fatalf("arm under an ended context: %v, want an interruption", err)
	}
	if open, err := j.OpenOrders(context.Background()); err != nil || len(open) != 0 {
		t.Fatalf("an interrupted arm left %d open orders (%v)", len(open), err)
	}

	full, _ := openTemp(t, Options{MaxPages: 1})
	var diskErr error
	for i := 0; i < 100 && diskErr == nil; i++ {
		_, diskErr = full.ArmOrder(context.Background(), armed, num)
	}
	if diskErr == nil || !errors.Is(diskErr, ErrStorage) || Interrupted(diskErr) {
		t.Fatalf("a full disk: %v, want a storage failure that is no interruption", diskErr)
	}
}
